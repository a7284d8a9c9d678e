"""`matcher plan --grid`: grid expansion with seeds, per-variant grids, xM multipliers, names, meta."""

import pytest

from matcher.cli import main
from matcher.errors import ConfigError
from matcher.plan.grid import short_number
from matcher.plan.planner import build_sweep, make_plan
from matcher.plan.request import PlanRequest
from matcher.plan.sweep import load_sweep


def sweep_of(*grids, seeds="0", variants="dr"):
    plan = make_plan(PlanRequest(target="la-tiny", variants=variants, seeds=seeds, grid=list(grids)))
    return plan, build_sweep(plan, created="2026-01-01T00:00:00+00:00")


def test_the_grid_times_the_seeds_gives_one_group_per_point_and_one_run_per_seed():
    plan, sweep = sweep_of("train.lr=1e-3,3e-3,1e-2", seeds="0,1")
    names = [run.name for run in sweep.runs]
    assert names == [f"{label}-lr{lr}-s{seed}" for label in ("la-tiny", "dr")
                     for lr in ("1e-3", "3e-3", "1e-2") for seed in (0, 1)]
    assert [run.train.lr for run in sweep.runs[:6]] == [1e-3, 1e-3, 3e-3, 3e-3, 1e-2, 1e-2]
    assert [run.train.seed for run in sweep.runs[:2]] == [0, 1]
    assert {run.group for run in sweep.runs if run.name.startswith("dr-lr3e-3")} == {"dr-lr3e-3"}
    assert sweep.meta.grid == {"la-tiny": {"train.lr": [1e-3, 3e-3, 1e-2]}, "dr": {"train.lr": [1e-3, 3e-3, 1e-2]}}
    # every grid point keeps its run's model and predicted costs: only training changes
    assert len({repr(run.model) for run in sweep.runs if run.role == "target"}) == 1


def test_one_seed_keeps_names_without_a_seed_suffix_as_without_a_grid():
    _, sweep = sweep_of("train.lr=1e-3,3e-3")
    assert [run.name for run in sweep.runs] == ["la-tiny-lr1e-3", "la-tiny-lr3e-3", "dr-lr1e-3", "dr-lr3e-3"]


def test_multipliers_scale_the_fitted_value_and_two_grids_multiply():
    plan, sweep = sweep_of("train.lr=x0.33,x1,x3", "train.warmup_fraction=0.02,0.1")
    fit = plan.train.lr
    lrs = [float(f"{fit * m:.3g}") for m in (0.33, 1, 3)]
    assert plan.grid["dr"] == {"lr": lrs, "warmup_fraction": [0.02, 0.1]}
    dr = [run for run in sweep.runs if run.role == "variant"]
    assert [(run.train.lr, run.train.warmup_fraction) for run in dr] == [(lr, wf) for lr in lrs for wf in (0.02, 0.1)]
    assert dr[0].name == f"dr-lr{short_number(lrs[0])}-wf2e-2" and dr[1].name.endswith("-wf0.1")


def test_a_variant_grid_replaces_the_shared_one_for_that_variant_only():
    _, sweep = sweep_of("train.lr=1e-3,3e-3", "dr:train.lr=3e-4,1e-3,3e-3", "la:train.weight_decay=0,0.1",
                        variants="dr,dr_da")
    groups = list(dict.fromkeys(run.group for run in sweep.runs))
    assert groups == ["la-tiny-lr1e-3-wd0", "la-tiny-lr1e-3-wd0.1", "la-tiny-lr3e-3-wd0", "la-tiny-lr3e-3-wd0.1",
                      "dr-lr3e-4", "dr-lr1e-3", "dr-lr3e-3", "dr_da-lr1e-3", "dr_da-lr3e-3"]
    assert sweep.meta.grid["dr"] == {"train.lr": [3e-4, 1e-3, 3e-3]}


def test_a_grid_sweep_is_written_valid_and_loads_with_its_grid(tmp_path, capsys):
    path = tmp_path / "grid sweep.yaml"
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--grid", "train.lr=x0.5,x1",
                 "--seeds", "0,1", "--no-measure", "--out", str(path)]) == 0, capsys.readouterr().err
    assert "(8 runs)" in " ".join(capsys.readouterr().out.split())
    sweep = load_sweep(path)
    assert len(sweep.runs) == 8 and set(sweep.meta.grid) == {"la-tiny", "dr"}
    assert "--grid train.lr=x0.5,x1" in sweep.meta.command
    assert main(["sweep", "validate", str(path)]) == 0


def test_names_are_short_and_stable():
    assert [short_number(v) for v in (1e-3, 3.3e-3, 0.05, 0.1, 0.25, 1, 20.0, 3e-4, 1.23e-3)] == [
        "1e-3", "3.3e-3", "5e-2", "0.1", "0.25", "1", "20", "3e-4", "1.23e-3"]


@pytest.mark.parametrize("grid, message", [
    (["train.lrr=1e-3"], "--grid train.lrr: not a numeric training setting (did you mean 'train.lr'?)"),
    (["lr=1e-3"], "--grid takes [VARIANT:]train.FIELD=V1,V2,..."),
    (["train.seed=0,1"], "--grid train.seed: cannot be a grid: give seeds with --seeds"),
    (["train.batch_size=8,16"], "cannot be a grid: every run of a sweep takes the same tokens per step"),
    (["train.data=a,b"], "--grid train.data: not a numeric training setting"),
    (["train.lr=1e-3,fast"], "--grid train.lr: 'fast' is neither a number nor a positive multiple xM"),
    (["train.lr=x0,x1"], "'x0' is neither a number nor a positive multiple xM"),
    (["train.lr=1e-3", "train.lr=3e-3"], "--grid train.lr is given twice"),
    (["moe:train.lr=1e-3"], "--grid moe:...: no run group 'moe' in this plan; the groups are la-tiny, dr"),
    (["train.lr=-1e-3,1e-3"], "lr must be positive"),
    (["train.warmup_fraction=0.5,2"], "warmup_fraction must be between 0 and 1"),
    (["train.lr=1e-3,0.001"], "--grid train.lr=1e-3,0.001: two values resolve to the same"),
    (["train.lr=1e-3,1e-3"], "--grid train.lr: a value is given twice"),
])
def test_grid_errors_are_one_clear_message(grid, message):
    with pytest.raises(ConfigError) as caught:
        sweep_of(*grid)
    assert message in " ".join(str(caught.value).split())
