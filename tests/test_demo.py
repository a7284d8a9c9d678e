"""The README's main command, end to end at its smallest scale: plan, train on CPU, compare."""

import json

import yaml

from matcher.cli import main


def test_demo_plans_trains_and_compares(tmp_path, capsys):
    args = ["demo", "--scale", "smoke", "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "results")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    # one comparison per form of the task: the written-out chain, then the latent form
    chain_part, latent_part = printed.split("latent form, demo-smoke-latent")
    for part in (chain_part, latent_part):
        assert "Tokens to reach target" in part and "Matched costs" in part and "95% low" in part
    for name, data in (("demo-smoke", "math"), ("demo-smoke-latent", "math-latent")):
        sweep_dir = tmp_path / "results" / name
        runs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
        assert runs == ["dr", "dr_da", "la-tiny"]
        sweep = yaml.safe_load((tmp_path / "sweeps" / f"{name}.yaml").read_text())
        assert {(run["train"]["data"], run["train"]["eval_data"]) for run in sweep["runs"]} == {(data, data)}
        for run in runs:
            status = json.loads((sweep_dir / run / "status.json").read_text())
            assert status["state"] == "finished"
            evals = [json.loads(line) for line in (sweep_dir / run / "metrics.jsonl").read_text().splitlines()]
            assert [e for e in evals if e["event"] == "eval"][-1]["tokens"] == status["tokens"] > 0
        assert (sweep_dir / "curves.png").stat().st_size > 10_000
    sweep_dir = tmp_path / "results" / "demo-smoke"

    # a second demo reuses the sweep and skips the finished runs
    before = (sweep_dir / "dr" / "metrics.jsonl").read_text()
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().err
    assert (sweep_dir / "dr" / "metrics.jsonl").read_text() == before


def test_the_default_demo_trains_the_latent_form_on_fewer_tokens():
    from matcher.commands.demo import SCALES, demo_sweep

    scale = SCALES["default"]
    chain, latent = demo_sweep(scale, "chain"), demo_sweep(scale, "latent")
    assert [r.name for r in latent.runs] == [r.name for r in chain.runs] == ["la-tiny", "dr", "dr_da"]
    row = scale.batch_size * scale.seq_len  # the planner rounds the tokens to whole steps
    for sweep, data, tokens in ((chain, "math", scale.total_tokens), (latent, "math-latent", scale.latent_tokens)):
        assert {(r.train.data, r.train.eval_data) for r in sweep.runs} == {(data, data)}
        assert all(abs(r.train.total_tokens - tokens) < row for r in sweep.runs)
    assert scale.latent_tokens < scale.total_tokens
