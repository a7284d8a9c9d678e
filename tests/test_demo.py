"""The README's main command, end to end at its smallest scale: plan, train on CPU, compare."""

import json

from matcher.cli import main


def test_demo_plans_trains_and_compares(tmp_path, capsys):
    args = ["demo", "--scale", "smoke", "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "results")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Tokens to reach target" in printed and "Matched costs" in printed and "95% low" in printed
    sweep_dir = tmp_path / "results" / "demo-smoke"
    runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert runs == ["dr", "dr_da", "la-tiny"]
    for run in runs:
        status = json.loads((sweep_dir / run / "status.json").read_text())
        assert status["state"] == "finished"
        evals = [json.loads(line) for line in (sweep_dir / run / "metrics.jsonl").read_text().splitlines()]
        assert [e for e in evals if e["event"] == "eval"][-1]["tokens"] == status["tokens"] > 0
    assert (sweep_dir / "curves.png").stat().st_size > 10_000

    # a second demo reuses the sweep and skips the finished runs
    before = (sweep_dir / "dr" / "metrics.jsonl").read_text()
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().err
    assert (sweep_dir / "dr" / "metrics.jsonl").read_text() == before
