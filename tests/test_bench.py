"""The prepared GPU check (bench/gpu.py) runs: its CPU smoke mode goes through the same code path
(model, optimizer step, batch fitting, ratios, table, JSON), so the one GPU call a task gets is not
spent on a typo."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_smoke_mode_writes_every_row(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--compile", "off",
                             "--json", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["preset"] for row in rows] == ["la-tiny", "dr-tiny", "dr_da-tiny"]
    assert rows[0]["time_vs_la"] == 1.0 and all(row["tokens_per_s"] > 0 for row in rows)
    assert all(row["analytic_training_bytes"] > 0 for row in rows)
    for preset in ("la-tiny", "dr-tiny", "dr_da-tiny"):
        assert preset in result.stdout


def test_data_bench_runs_and_reports_both_rows(tmp_path):
    out = tmp_path / "data.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "data.py"), "--throughput-mb", "0.2",
                             "--sizes", "0.1,0.3", "--repeats", "1", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert rows["library_tokens_per_s"] > 0 and rows["matcher_tokens_per_s"] > 0
    assert set(rows["peak_rss_bytes"]) == {"0.1", "0.3"} and all(v > 0 for v in rows["peak_rss_bytes"].values())
    assert "x (goal >= 0.8x)" in result.stdout


def test_dispatch_bench_times_and_splits_every_preset():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "dispatch.py"), "--presets",
                             "la-tiny,dr-tiny,dr_da-tiny", "--repeats", "1", "--threads", "1", "--batch", "2",
                             "--seq-len", "16", "--before", "--breakdown", "--keep-freed-memory"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in ("dr-tiny", "dr_da-tiny", "dr-tiny before", "dr_da-tiny before"):
        assert any(line.startswith(f"{name}/la-tiny: ") for line in lines), name
    split = [line for line in lines if "ratios to la-tiny:" in line]
    assert len(split) == 4 and all(" s + " in line for line in split)
