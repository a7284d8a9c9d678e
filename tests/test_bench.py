"""The prepared GPU check (bench/gpu.py) runs: its CPU smoke mode goes through the same code path
(model, optimizer step, batch fitting, ratios, table, JSON), so the one GPU call a task gets is not
spent on a typo."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_and_resumes_exactly(tmp_path):
    """bench/gpu_check.sh --smoke: the whole GPU check on the CPU (plan, run, SIGKILL and resume, eval,
    status, compare, torchrun FSDP2 with gloo, the cost table), every part ok, at most the 8 files the GPU
    tool brings back."""
    out = tmp_path / "out dir"
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke", str(out)],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr + (out / "gpu_check.log").read_text()[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["ok"] is True and summary["mode"] == "smoke"
    parts = {name: json.loads((out / f"{name}.json").read_text()) for name in ("env", "loop", "distributed", "cost")}
    assert all(part["ok"] for part in parts.values()), parts
    for resume in (parts["loop"]["resume"], parts["distributed"]["resume"]):
        # killed mid-way (after the second of three evals), resumed from a checkpoint before the kill
        assert resume["killed"] and resume["exact"] and resume["max_abs_diff"] == 0.0
        assert resume["resumed_from_step"][0] < resume["killed_at_step"] and resume["state"] == "finished"
    assert parts["loop"]["resume"]["dtype"] == "fp32"
    assert set(parts["loop"]["runs"]) == {"la-tiny", "dr", "dr_da"}
    tasks = {row["task"] for row in parts["loop"]["eval"]}
    assert {"gsm8k", "mc"} <= {task.split("-")[0] for task in tasks}  # generation and multiple choice
    sharded = parts["distributed"]["sharded"]
    assert sharded["dtensor_parameters"] == sharded["parameters"] > 0 and parts["distributed"]["backend"] == "gloo"
    assert parts["env"]["grouped_mm"]["dtypes"]["float32"]["ok"]
    assert parts["cost"]["rows_measured"] == 3
    assert len(list(out.iterdir())) <= 8 and (out / "curves.png").stat().st_size > 0


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _metrics(folder: Path, lines: list[dict], state: str = "finished") -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (folder / "status.json").write_text(json.dumps({"state": state}))
    return folder


def test_gpu_check_resume_comparison_finds_a_difference_and_ignores_timings(tmp_path):
    gpu_check = _gpu_check_module()
    train = {"event": "train", "step": 10, "train_loss": 2.5, "tokens_per_s": 100.0}
    evals = {"event": "eval", "step": 20, "train_loss": 2.0, "eval_loss": 1.5, "expert_load": [[0.5, 0.5]]}
    reference = _metrics(tmp_path / "a", [train, evals])
    resumed = [{**train, "tokens_per_s": 7.0}, {"event": "resume", "step": 10}, evals]
    same = gpu_check.resume_compared(reference, _metrics(tmp_path / "b", resumed))
    assert same["exact"] and same["max_abs_diff"] == 0.0 and same["resumed_from_step"] == [10]
    moved = [train, {"event": "resume", "step": 10}, {**evals, "expert_load": [[0.5, 0.25]]}]
    differs = gpu_check.resume_compared(reference, _metrics(tmp_path / "c", moved))
    assert not differs["exact"] and differs["max_abs_diff"] == 0.25
    never_resumed = gpu_check.resume_compared(reference, _metrics(tmp_path / "d", [train, evals]))
    assert not never_resumed["exact"]
    missing_eval = gpu_check.resume_compared(reference, _metrics(tmp_path / "e", [train]))
    assert not missing_eval["same_events_and_steps"] and not missing_eval["exact"]


def test_gpu_check_refuses_an_unknown_part(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--parts", "loop,nope",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown nope" in result.stderr and not list(tmp_path.iterdir())


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
