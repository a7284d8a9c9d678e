"""The command line: output, JSON, errors as one message, and a fast start."""

import json
import subprocess
import sys

import pytest

from matcher.cli import main


def test_presets_lists_every_preset(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"la-1b", "la-2b", "dr-1b", "dr_da-2b", "la-tiny", "dr-tiny", "dr_da-tiny"}
    la2b = next(r for r in rows if r["name"] == "la-2b")
    assert 1.9e9 < la2b["total_params"] < 2.1e9
    la1b = next(r for r in rows if r["name"] == "la-1b")
    assert 0.95e9 < la1b["total_params"] < 1.05e9


def test_cost_json_analytic(capsys):
    assert main(["cost", "llama2-7b", "--no-measure", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["analytic"]["params"]["total"] == 6_738_415_616
    assert "measured" not in result


def test_cost_table_prints_conventions(capsys):
    assert main(["cost", "la-tiny", "--no-measure", "--causal-half"]) == 0
    text = capsys.readouterr().out
    assert "halved for the causal mask" in text and "Forward FLOPs per token" in text


def test_user_errors_are_one_message(capsys, tmp_path):
    assert main(["cost", "la-3b", "--no-measure"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'la-3b'" in err and "Traceback" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("vocab_size: 10\n")
    assert main(["cost", str(bad), "--no-measure"]) == 2
    assert "d_model: missing (required)" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--tokens", "inf"], "--tokens must be a finite positive number, got inf"),
    (["--tokens", "nan"], "--tokens"),
    (["--max-memory-ratio", "nan"], "--max-memory-ratio must be a finite positive number, got nan"),
    (["--batch", "100000000000"], "batch_size must be at most 16,777,216"),
    (["--depth", str(10**12)], "depth must be at most 16,384"),  # once ran for hours
    (["--set", "d_model=100000000000"], "d_model must be at most 16,777,216"),
])
def test_absurd_numbers_are_one_message(capsys, args, message):
    assert main(["plan", "--target", "la-tiny", "--dry-run", "--no-measure", *args]) == 2
    err = capsys.readouterr().err
    err = " ".join(err.split())
    assert message in err and "Traceback" not in err


def test_an_unwritable_path_is_one_message(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["plan", "--target", "la-tiny", "--no-measure", "--out", str(blocker / "sweep.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'sweep.yaml'}: {blocker} is a file, not a folder" in err
    assert "Traceback" not in err
    assert blocker.read_text() == "" and list(tmp_path.iterdir()) == [blocker]  # nothing left behind


def test_lookalike_name_gives_a_notice(capsys):
    assert main(["cost", "LA_tіny", "--no-measure", "--json"]) == 0  # Cyrillic і
    assert "read preset 'LA_tіny' as 'la-tiny'" in capsys.readouterr().err


def test_cli_start_does_not_import_heavy_libraries():
    code = ("import sys; from matcher.cli import app; "
            "print(sorted(m for m in ('torch', 'pandas', 'scipy', 'numpy', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_interrupted_sweep_exits_130_and_says_how_to_resume(capsys, tmp_path, monkeypatch):
    import matcher.run.runner
    from matcher.run.progress import RunSummary

    states = iter([["finished", "interrupted"]] * 2 + [["finished", "failed"], ["finished", "finished"]])
    monkeypatch.setattr(matcher.run.runner, "run_sweep",
                        lambda *a, **k: [RunSummary(f"r{i}", s) for i, s in enumerate(next(states))])
    sweep = tmp_path / "s.yaml"
    assert main(["run", str(sweep)]) == 130
    assert f"matcher run {sweep}` again to resume" in capsys.readouterr().err
    # the hint keeps what decides which runs resume, and where
    assert main(["run", str(sweep), "--results", str(tmp_path / "r"), "--only", "r1", "--nproc", "2"]) == 130
    assert (f"matcher run {sweep} --results {tmp_path / 'r'} --only r1 --nproc 2` again to resume"
            in " ".join(capsys.readouterr().err.split()))
    assert main(["run", str(sweep)]) == 1
    assert main(["run", str(sweep)]) == 0


def test_an_interrupted_demo_prints_what_it_has_and_exits_130(capsys, tmp_path, monkeypatch):
    import matcher.commands.compare
    import matcher.run.runner
    from matcher.run.progress import RunSummary

    compared = []
    monkeypatch.setattr(matcher.run.runner, "run_sweep", lambda *a, **k: [RunSummary("la-tiny", "interrupted")])
    monkeypatch.setattr(matcher.commands.compare, "compare_command", lambda *a, **k: compared.append(a))
    args = ["demo", "--scale", "smoke", "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "r")]
    assert main(args) == 130
    assert compared and "run `matcher demo` again to resume" in capsys.readouterr().err


def test_demo_without_matplotlib_says_so_first_and_still_compares(capsys, tmp_path, monkeypatch):
    import importlib.util

    import matcher.commands.compare
    import matcher.run.runner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    calls = []
    monkeypatch.setattr(matcher.run.runner, "run_sweep", lambda *a, **k: calls.append("train") or [])
    monkeypatch.setattr(matcher.commands.compare, "compare_command", lambda *a, **k: calls.append(k["plot"]))
    args = ["demo", "--scale", "smoke", "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "r")]
    assert main(args) == 0
    assert calls == ["train", "train", None, None]  # both forms trained, both compared without a plot
    assert "no plot: matplotlib is not installed" in capsys.readouterr().err
