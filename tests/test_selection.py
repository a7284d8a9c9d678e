"""Selection on the validation split (matcher/report/selection.py): the rules on hand-written values,
then `matcher compare` on a hand-written grid sweep folder (run.yaml, status.json, metrics.jsonl)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from matcher.commands.compare import compare_command
from matcher.config import TrainConfig
from matcher.cost.analytic import Conventions
from matcher.errors import MatcherError, ResultsError
from matcher.plan.presets import get_preset
from matcher.plan.sweep import Run, predict
from matcher.report.selection import (
    GridPointRuns,
    SeedValue,
    family_label,
    grid_edges,
    notices,
    select_point,
)
from matcher.run.contract import RunInfo
from matcher.run.rundir import RunDir


def point(group: str, values: list[float | None], *, states: list[str] | None = None, tokens: float = 1000,
          **settings) -> GridPointRuns:
    states = states or ["finished"] * len(values)
    return GridPointRuns(group, settings, tuple(
        SeedValue(f"{group}-s{i}", i, v, None if v is None else tokens, state)
        for i, (v, state) in enumerate(zip(values, states))))


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the rules -------------------------------------------------------------------------------------

def test_the_lowest_mean_over_seeds_is_selected_not_the_lowest_single_seed():
    points = [point("dr-lr1e-3", [2.0, 2.1, 2.2], lr=1e-3),
              point("dr-lr3e-3", [1.5, 1.6, 1.7], lr=3e-3),
              point("dr-lr1e-2", [1.0, 2.5, 2.5], lr=1e-2)]  # best single seed, worse mean (2.0)
    s = select_point("dr", "variant", "dr", "val_loss", points)
    assert s.selected.group == "dr-lr3e-3"
    assert s.selected.mean == pytest.approx(1.6) and s.selected.std == pytest.approx(0.1)
    assert (s.selected.low, s.selected.high, s.selected.n, s.selected.seeds) == (1.5, 1.7, 3, 3)
    assert s.grid_edge == () and s.tied == ()
    assert [p.group for p in s.points] == ["dr-lr1e-3", "dr-lr3e-3", "dr-lr1e-2"]


def test_edges_on_both_ends_and_not_in_the_middle():
    def chosen_at(best: int):
        values = [[3.0], [3.0], [3.0]]
        values[best] = [1.0]
        return select_point("la", "target", "la", "val_loss",
                            [point(f"la-lr{lr}", v, lr=lr) for lr, v in zip((1e-3, 3e-3, 1e-2), values)])

    low, middle, high = chosen_at(0), chosen_at(1), chosen_at(2)
    assert [str(e) for e in low.grid_edge] == ["train.lr 1e-3 is the smallest tried: widen the grid"]
    assert middle.grid_edge == ()
    assert [str(e) for e in high.grid_edge] == ["train.lr 1e-2 is the largest tried: widen the grid"]
    assert (high.grid_edge[0].field, high.grid_edge[0].side) == ("lr", "largest")


def test_a_multi_dimensional_grid_is_flagged_per_dimension():
    losses = {(1e-3, 0.0): 2.0, (1e-3, 0.1): 1.9, (3e-3, 0.0): 1.8, (3e-3, 0.1): 1.2, (1e-2, 0.0): 1.7,
              (1e-2, 0.1): 1.6}
    points = [point(f"dr-lr{lr}-wf{wf}", [loss, loss], lr=lr, warmup_fraction=wf)
              for (lr, wf), loss in reversed(losses.items())]  # the order read does not matter
    s = select_point("dr", "variant", "dr", "val_loss", points)
    assert s.selected.settings == {"lr": 3e-3, "warmup_fraction": 0.1}
    assert [(e.field, e.side) for e in s.grid_edge] == [("warmup_fraction", "largest")]
    # grid order: the first setting slowest, each ascending
    assert [tuple(p.settings.values()) for p in s.points] == list(losses)
    # a dimension with one value scanned nothing: no flag
    assert grid_edges([{"lr": 1e-3, "wd": 0.1}, {"lr": 3e-3, "wd": 0.1}], {"lr": 3e-3, "wd": 0.1})[0].field == "lr"
    assert len(grid_edges([{"lr": 1e-3, "wd": 0.1}, {"lr": 3e-3, "wd": 0.1}], {"lr": 3e-3, "wd": 0.1})) == 1


def test_a_tie_goes_to_the_first_point_in_grid_order_and_is_named():
    s = select_point("dr", "variant", "dr", "val_loss",
                     [point("dr-lr1e-2", [1.5, 1.5], lr=1e-2), point("dr-lr3e-3", [1.5, 1.5], lr=3e-3),
                      point("dr-lr1e-3", [1.9, 1.9], lr=1e-3)])
    assert s.selected.group == "dr-lr3e-3" and s.tied == ("dr-lr1e-2",)
    assert any("ties with dr-lr1e-2" in line for line in notices([s]))


def test_missing_seeds_count_as_missing_and_a_point_without_values_is_never_selected():
    s = select_point("dr", "variant", "dr", "val_loss",
                     [point("dr-lr1e-3", [None, None, None], lr=1e-3),
                      point("dr-lr3e-3", [1.4, None, 1.6], lr=3e-3),
                      point("dr-lr1e-2", [1.7, 1.8, 1.9], lr=1e-2)])
    assert s.selected.group == "dr-lr3e-3"
    assert (s.selected.n, s.selected.seeds, s.selected.mean) == (2, 3, pytest.approx(1.5))
    assert s.points[0].mean is None and s.points[0].n == 0
    # the edge is over the points that have values: 3e-3 is the smallest of those
    assert [str(e) for e in s.grid_edge] == ["train.lr 3e-3 is the smallest tried: widen the grid"]
    assert any("for 2 of its 3 seeds" in line for line in notices([s]))
    nothing = select_point("dr", "variant", "dr", "val_loss", [point("dr-lr1e-3", [None], lr=1e-3)])
    assert nothing.selected is None
    assert notices([nothing]) == ["dr: no run has logged val_loss yet; left out of the comparison until one has"]


def test_a_point_with_a_failed_seed_ranks_after_every_point_without_one():
    s = select_point("dr", "variant", "dr", "val_loss",
                     [point("dr-lr1e-2", [0.9, 1.0], states=["finished", "failed"], lr=1e-2),
                      point("dr-lr3e-3", [1.5, 1.5], lr=3e-3)])
    assert s.selected.group == "dr-lr3e-3" and s.points[1].failed == 1


def test_points_read_at_different_tokens_are_said():
    s = select_point("dr", "variant", "dr", "val_loss",
                     [point("dr-lr1e-3", [1.5], lr=1e-3, tokens=2000), point("dr-lr3e-3", [1.2], lr=3e-3)])
    assert any("read at different tokens (1k to 2k)" in line for line in notices([s]))


def test_family_labels():
    assert family_label(["dr-lr1e-3", "dr-lr3e-3"]) == "dr"
    assert family_label(["la-tiny-lr1e-3-wf0.1", "la-tiny-lr1e-3-wf0.2"]) == "la-tiny-lr1e-3"
    assert family_label(["dr_da"]) == "dr_da"


# --- compare on a grid sweep folder ---------------------------------------------------------------

LRS = (1e-3, 3e-3, 1e-2)


def _write_run(folder: Path, preset: str, label: str, role: str, lr: float, seed: int, val: list[float | None],
               state: str = "finished") -> None:
    train = TrainConfig(total_tokens=4096, batch_size=4, seq_len=64, lr=lr, seed=seed)
    model = dataclasses.replace(get_preset(preset), seq_len=64)
    group = f"{label}-lr{lr:.0e}".replace("e-0", "e-")
    run = Run(name=f"{group}-s{seed}", group=group, role=role, model=model, train=train,
              predicted=predict(model, train, Conventions()))
    run_dir = RunDir(folder / run.name)
    run_dir.path.mkdir(parents=True)
    run_dir.write_run_info(RunInfo.from_run(run, "grid"))
    lines = []
    for i, value in enumerate(val):
        tokens = 1024 * (i + 1)
        line = {"event": "eval", "step": i + 1, "tokens": tokens, "eval_accuracy": 0.1 * (i + 1)}
        if value is not None:
            line |= {"val_loss": value, "val_bpb": value / 2}
        lines.append(json.dumps(line))
    (run_dir.path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    run_dir.write_status(state, step=len(val), tokens=1024 * len(val))


def _grid_folder(tmp_path: Path, *, with_val: bool = True) -> Path:
    """la-tiny (target) best at lr 3e-3; dr-tiny best at 1e-2 (the edge) on val_loss, though its last
    seeds' accuracy says nothing about that; dr-tiny at 1e-3 has one seed only."""
    folder = tmp_path / "results dir" / "grid"
    finals = {("la-tiny", 1e-3): [2.0, 2.2], ("la-tiny", 3e-3): [1.5, 1.7], ("la-tiny", 1e-2): [1.9, 1.9],
              ("dr-tiny", 1e-3): [2.5], ("dr-tiny", 3e-3): [1.8, 1.8], ("dr-tiny", 1e-2): [1.4, 1.6]}
    for (preset, lr), values in finals.items():
        for seed, final in enumerate(values):
            _write_run(folder, preset, preset, "target" if preset == "la-tiny" else "variant", lr, seed,
                       [3.0, final] if with_val else [None, None])
    return folder


def _compare(folder: Path, **options) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    compare_command(folder, console=Console(file=out, width=200), err_console=Console(file=err, width=200),
                    **options)
    return out.getvalue(), err.getvalue()


def test_compare_selects_per_variant_and_compares_only_the_selected(tmp_path):
    folder = _grid_folder(tmp_path)
    text, err = _compare(folder, as_json=True, targets="0.15")
    report = json.loads(text)
    selection = report["selection"]
    assert selection["la-tiny"]["selected"]["group"] == "la-tiny-lr3e-3"
    assert selection["la-tiny"]["grid_edge"] == []
    assert selection["dr-tiny"]["selected"]["group"] == "dr-tiny-lr1e-2"
    assert selection["dr-tiny"]["selected"]["mean"] == pytest.approx(1.5)
    assert [e["message"] for e in selection["dr-tiny"]["grid_edge"]] == [
        "train.lr 1e-2 is the largest tried: widen the grid"]
    assert report["baseline"] == "la-tiny-lr3e-3"
    runs = next(t for t in report["tables"] if t["title"] == "Runs")
    assert sorted({r["group"] for r in runs["rows"]}) == ["dr-tiny-lr1e-2", "la-tiny-lr3e-3"]
    table = next(t for t in report["tables"] if t["title"].startswith("Grid points selected"))
    assert len(table["rows"]) == 6
    one_seed = next(r for r in table["rows"] if r["group"] == "dr-tiny-lr1e-3")
    assert one_seed["seeds"] == "1/1" and one_seed["mean"] == 2.5 and one_seed["selected"] == ""
    assert "dr-tiny: train.lr 1e-2 is the largest tried: widen the grid" in flat(err)
    # val_bpb here is val_loss / 2: the same choice, on the other metric
    bpb = json.loads(_compare(folder, as_json=True, select="val_bpb", targets="0.15")[0])["selection"]
    assert bpb["dr-tiny"]["metric"] == "val_bpb" and bpb["dr-tiny"]["selected"]["mean"] == pytest.approx(0.75)


def test_compare_tables_show_the_selection(tmp_path):
    text, _ = _compare(_grid_folder(tmp_path), fmt="markdown", targets="0.15")
    assert "## Grid points selected on val_loss" in text
    assert "Selected on validation (lowest mean final val_loss over seeds; --select): la-tiny-lr3e-3, " \
           "dr-tiny-lr1e-2." in text
    assert "dr-tiny-lr3e-3" in text.split("## Runs")[0] and "dr-tiny-lr3e-3" not in text.split("## Runs")[1]


def test_without_val_metrics_compare_says_how_to_get_them(tmp_path):
    folder = _grid_folder(tmp_path, with_val=False)
    with pytest.raises(ResultsError) as caught:
        _compare(folder)
    message = flat(str(caught.value))
    assert "no run logs val_loss" in message and "--val-fraction" in message and "--val-docs" in message
    assert "--select none" in message


def test_select_none_compares_every_point_and_needs_a_baseline(tmp_path):
    folder = _grid_folder(tmp_path, with_val=False)
    with pytest.raises(ResultsError) as caught:
        _compare(folder, select="none")
    assert "--baseline GROUP" in flat(str(caught.value))
    report = json.loads(_compare(folder, select="none", baseline="la-tiny-lr3e-3", as_json=True, targets="0.15")[0])
    assert report["selection"] is None
    runs = next(t for t in report["tables"] if t["title"] == "Runs")
    assert len({r["group"] for r in runs["rows"]}) == 6


def test_baseline_after_selection(tmp_path):
    folder = _grid_folder(tmp_path)
    # a family's label stands for its selected point
    report = json.loads(_compare(folder, baseline="dr-tiny", as_json=True, targets="0.15")[0])
    assert report["baseline"] == "dr-tiny-lr1e-2"
    with pytest.raises(ResultsError) as caught:
        _compare(folder, baseline="dr-tiny-lr3e-3")
    assert "that grid point of dr-tiny was not selected (dr-tiny-lr1e-2 was, on val_loss)" in flat(str(caught.value))
    with pytest.raises(MatcherError):
        _compare(folder, select="accuracy")


def test_an_unfinished_point_counts_with_what_it_has_and_is_said(tmp_path):
    folder = _grid_folder(tmp_path)
    _write_run(folder, "dr-tiny", "dr-tiny", "variant", 1e-3, 1, [0.2], state="running")
    report = json.loads(_compare(folder, as_json=True, targets="0.15")[0])
    dr = report["selection"]["dr-tiny"]
    chosen = dr["selected"]
    assert chosen["group"] == "dr-tiny-lr1e-3" and chosen["n"] == 2 and chosen["mean"] == pytest.approx(1.35)
    assert dr["grid_edge"][0]["side"] == "smallest"
    table = next(t for t in report["tables"] if t["title"].startswith("Grid points selected"))
    assert any("read at different tokens" in note for note in table["notes"])
