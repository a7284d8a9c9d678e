"""Selection on the validation split: which grid point of each variant `matcher compare` compares.

A grid sweep (`matcher plan --grid train.lr=...`) trains every variant at several settings, each a run
group of its own; the seeds of a group are its replicates. Per family (the groups of one role and one
model config: a variant's grid points) the point with the best (lowest) mean FINAL validation metric
over its seeds is selected, and only the selected points are compared. Benchmark scores and the
in-training accuracy are never read here: what is reported is never what was tuned on.

Rules (pure functions of plain values, tested on hand-written metrics)
- A run's final value is its last eval line that carries the metric (val_loss or val_bpb, whatever
  wrote them); a run still going or stopped counts with the value it has, as compare treats it
  everywhere, and the table shows the tokens each point was read at.
- A point's score is the mean over the seeds that have a value, with min, max and std; a seed
  without one is counted as missing (n of seeds).
- A point with a failed seed (a diverged learning rate, typically) ranks after every point without one.
  A point with no value is never selected.
- Ties (equal means) go to the first point in grid order (each setting ascending, the first setting
  varying slowest); the tie is named.
- A selected value that is the smallest or the largest its grid dimension tried is an edge: the best
  may lie outside the grid ("train.lr 1e-2 is the largest tried: widen the grid"). Dimensions with one
  value are not flagged (nothing was scanned there).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matcher.config import TrainConfig
from matcher.errors import ResultsError
from matcher.fmt import si
from matcher.names import resolve
from matcher.plan.grid import short_number
from matcher.report.comparison import Column, Table
from matcher.run.contract import EXECUTION_FIELDS

if TYPE_CHECKING:
    from matcher.report.results import Results

SELECT_METRICS = ("val_loss", "val_bpb")
SELECT_CHOICES = (*SELECT_METRICS, "none")
FAILED = "failed"


@dataclass(frozen=True)
class SeedValue:
    """One run (a seed of a grid point) and its final validation value."""

    run: str
    seed: int
    value: float | None  # None: the run has logged no value of the metric yet
    tokens: float | None  # where that value was logged
    state: str  # the run's state (finished, running, failed, ...)


@dataclass(frozen=True)
class GridPointRuns:
    """One grid point of a family: its run group, its settings and its seeds."""

    group: str
    settings: dict[str, Any]  # gridded train field -> value
    seeds: tuple[SeedValue, ...]


@dataclass(frozen=True)
class PointScore:
    group: str
    settings: dict[str, Any]
    mean: float | None  # over the seeds that have a value
    std: float | None  # sample std (n - 1); None below two values
    low: float | None  # the smallest seed value
    high: float | None  # the largest
    n: int  # seeds with a value
    seeds: int  # seeds of the point
    failed: int  # seeds in state failed
    tokens_low: float | None  # the tokens the values were read at, smallest and largest
    tokens_high: float | None


@dataclass(frozen=True)
class GridEdge:
    field: str  # the train field, e.g. lr
    value: Any
    side: str  # smallest | largest

    def __str__(self) -> str:
        return f"train.{self.field} {_short(self.value)} is the {self.side} tried: widen the grid"


@dataclass(frozen=True)
class Selection:
    """The selection of one family."""

    family: str  # the label the family's groups share, e.g. dr
    role: str
    variant: str
    metric: str
    points: tuple[PointScore, ...]  # in grid order
    selected: PointScore | None  # None: no point has a value
    grid_edge: tuple[GridEdge, ...]
    tied: tuple[str, ...]  # other groups with exactly the selected mean

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "role": self.role, "variant": self.variant, "metric": self.metric,
                "selected": dataclasses.asdict(self.selected) if self.selected else None,
                "grid_edge": [{**dataclasses.asdict(edge), "message": str(edge)} for edge in self.grid_edge],
                "tied": list(self.tied), "points": [dataclasses.asdict(point) for point in self.points]}


def score_point(point: GridPointRuns) -> PointScore:
    values = [s.value for s in point.seeds if s.value is not None]
    tokens = [s.tokens for s in point.seeds if s.value is not None and s.tokens is not None]
    return PointScore(
        group=point.group, settings=dict(point.settings),
        mean=statistics.fmean(values) if values else None,
        std=statistics.stdev(values) if len(values) >= 2 else None,
        low=min(values) if values else None, high=max(values) if values else None,
        n=len(values), seeds=len(point.seeds), failed=sum(s.state == FAILED for s in point.seeds),
        tokens_low=min(tokens) if tokens else None, tokens_high=max(tokens) if tokens else None)


def grid_order(points: list[GridPointRuns]) -> list[GridPointRuns]:
    """Each setting ascending, the first setting varying slowest (as `matcher plan` expands a grid)."""
    return sorted(points, key=lambda p: tuple(_sort_key(p.settings[f]) for f in p.settings))


def select_point(family: str, role: str, variant: str, metric: str, points: list[GridPointRuns]) -> Selection:
    """The family's best point (lowest mean final `metric`), its edges and ties."""
    scores = [score_point(point) for point in grid_order(points)]
    ranked = sorted((s for s in scores if s.mean is not None and math.isfinite(s.mean)),
                    key=lambda s: (s.failed > 0, s.mean))  # sorted is stable: ties keep grid order
    if not ranked:
        ranked = [s for s in scores if s.mean is not None]  # every mean non-finite: nothing better to offer
    selected = ranked[0] if ranked else None
    tied = tuple(s.group for s in ranked[1:] if selected and s.mean == selected.mean
                 and (s.failed > 0) == (selected.failed > 0))
    edges = grid_edges([s.settings for s in scores if s.mean is not None], selected.settings) if selected else ()
    return Selection(family, role, variant, metric, tuple(scores), selected, tuple(edges), tied)


def grid_edges(tried: list[dict[str, Any]], chosen: dict[str, Any]) -> list[GridEdge]:
    """Per numeric dimension with two or more values tried: the chosen value if it is the smallest or
    the largest of them."""
    edges = []
    for field, value in chosen.items():
        values = {settings[field] for settings in tried if field in settings}
        if len(values) < 2 or not all(_is_number(v) for v in values):
            continue
        if value == min(values):
            edges.append(GridEdge(field, value, "smallest"))
        elif value == max(values):
            edges.append(GridEdge(field, value, "largest"))
    return edges


# -------------------------------------------------------------------------- from a results folder
def families(results: Results, metric: str) -> list[tuple[str, str, str, list[GridPointRuns]]]:
    """(family label, role, variant, grid points) of a loaded results folder: the groups of one role
    and one model config, each with the train settings that differ between them (seed and execution
    settings aside) and each seed's final `metric`."""
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)]

    infos = results.infos or {}
    members: dict[tuple, list[str]] = {}
    for run in results.runs.to_dict("records"):
        info = infos.get(run["run"])
        model = repr(info.model) if info is not None else run["group"]  # unreadable config: its own family
        members.setdefault((run["role"], run["variant"], model), []).append(run["run"])
    by_run = results.runs.set_index("run")
    found = []
    for (role, variant, _), runs in members.items():
        groups = list(dict.fromkeys(by_run.loc[runs, "group"]))
        train = {g: infos[r].train.to_dict() if r in infos else {}
                 for g, r in ((g, next(r for r in runs if by_run.loc[r, "group"] == g)) for g in groups)}
        fields = [f for f in train_fields if f != "seed" and f not in EXECUTION_FIELDS
                  and len({repr(t.get(f)) for t in train.values()}) > 1]
        points = [GridPointRuns(group, {f: train[group].get(f) for f in fields},
                                tuple(_seed_value(results, run, metric) for run in runs
                                      if by_run.loc[run, "group"] == group))
                  for group in groups]
        found.append((family_label(groups), role, variant, points))
    return found


def family_label(groups: list[str]) -> str:
    """The name parts the groups share from the start: dr-lr1e-3 and dr-lr3e-3 -> dr."""
    parts = [group.split("-") for group in groups]
    common = []
    for pieces in zip(*parts):
        if len(set(pieces)) > 1:
            break
        common.append(pieces[0])
    return "-".join(common) or groups[0]


def _seed_value(results: Results, run: str, metric: str) -> SeedValue:
    row = results.runs.loc[results.runs["run"] == run].iloc[0]
    evals = results.evals[results.evals["run"] == run]
    logged = evals[~evals[metric].isna()] if metric in evals else evals.iloc[0:0]
    last = logged.iloc[-1] if len(logged) else None
    return SeedValue(run=run, seed=int(row["seed"]), value=None if last is None else float(last[metric]),
                     tokens=None if last is None else float(last["tokens"]), state=str(row["state"]))


def is_grid(results: Results) -> bool:
    """Whether some family of the folder has more than one grid point."""
    return any(len(points) > 1 for _, _, _, points in families(results, SELECT_METRICS[0]))


def select(results: Results, metric: str) -> list[Selection]:
    """Every family's selection on `metric`; a ResultsError when no run logs it, or when the target's
    family has no value yet (there would be no baseline)."""
    found = families(results, metric)
    selections = [select_point(label, role, variant, metric, points) for label, role, variant, points in found]
    if all(s.selected is None for s in selections):
        raise ResultsError(
            f"{results.path}: no run logs {metric}, so no grid point can be chosen on validation data. Training "
            f"logs val_loss and val_bpb when train.data is a corpus encoded with a validation split (`matcher data "
            f"encode ... --val-fraction 0.01` or `--val-docs N`); train on one, or pass --select none to compare "
            f"every grid point as its own group (with --baseline GROUP)")
    for s in selections:
        if s.role == "target" and s.selected is None:
            raise ResultsError(f"{results.path}: no run of the target {s.family} has logged {metric} yet, so its "
                               "grid point cannot be chosen; wait for its first eval, or pass --select none "
                               "--baseline GROUP")
    return selections


def apply_selection(results: Results, choice: str | None,
                    baseline: str | None) -> tuple[Results, list[Selection] | None, str | None]:
    """What `matcher compare --select CHOICE [--baseline NAME]` compares: the results restricted to each
    family's selected point, the selections (None when nothing is selected), and the baseline group.

    `choice` None: val_loss on a grid sweep (an error names how to log it when no run does), no selection
    otherwise. `none`: every grid point is a group of its own, so a target with several points needs
    --baseline; choosing by eye among them is the selection on the test set this module exists to avoid,
    so it is never done for the user."""
    metric = None
    if choice is not None:
        resolved = resolve(choice, SELECT_CHOICES, "--select choice")
        metric = None if resolved.name == "none" else resolved.name
    elif is_grid(results):
        metric = SELECT_METRICS[0]
    if metric is None:
        targets = list(dict.fromkeys(results.runs.loc[results.runs["role"] == "target", "group"]))
        if baseline is None and len(targets) > 1 and is_grid(results):
            raise ResultsError(f"{results.path}: without selection every grid point is its own group, and the "
                               f"target has {len(targets)} ({', '.join(targets)}): name the baseline with "
                               "--baseline GROUP, or select each variant's point on validation with "
                               "--select val_loss")
        return results, None, baseline
    selections = select(results, metric)
    if baseline is not None:
        baseline = selected_baseline(selections, baseline)
    return restrict(results, selections), selections, baseline


def notices(selections: list[Selection]) -> list[str]:
    """What a reader must know about the selection: edges, ties, missing seeds, failed seeds, families
    left out, points read at different tokens."""
    lines = []
    for s in selections:
        if s.selected is None:
            lines.append(f"{s.family}: no run has logged {s.metric} yet; left out of the comparison until one has")
            continue
        chosen = s.selected
        lines += [f"{s.family}: {edge}" for edge in s.grid_edge]
        if s.tied:
            lines.append(f"{s.family}: {chosen.group} ties with {', '.join(s.tied)} on mean {s.metric}; "
                         "the first in grid order is selected")
        if chosen.n < chosen.seeds:
            lines.append(f"{s.family}: the selected {chosen.group} has {s.metric} for {chosen.n} of its "
                         f"{chosen.seeds} seeds")
        if chosen.failed:
            lines.append(f"{s.family}: every point has a failed seed; {chosen.group} is the best of them")
        read_at = {p.tokens_high for p in s.points if p.tokens_high is not None} | {
            p.tokens_low for p in s.points if p.tokens_low is not None}
        if len(read_at) > 1:
            lines.append(f"{s.family}: the grid points' {s.metric} is read at different tokens "
                         f"({si(min(read_at))} to {si(max(read_at))}): some runs have not finished, and "
                         "the selection may change when they do")
    return lines


def restrict(results: Results, selections: list[Selection]) -> Results:
    """`results` with only the selected groups' runs (every table of compare then shows those)."""
    keep_groups = {s.selected.group for s in selections if s.selected is not None}
    keep_runs = set(results.runs.loc[results.runs["group"].isin(keep_groups), "run"])

    def rows(frame):
        return None if frame is None else frame[frame["run"].isin(keep_runs)].reset_index(drop=True)

    return dataclasses.replace(
        results, runs=rows(results.runs), evals=rows(results.evals), train=rows(results.train),
        bench=rows(results.bench),
        expert_load={run: load for run, load in results.expert_load.items() if run in keep_runs},
        eval_outcomes=None if results.eval_outcomes is None else
        {run: o for run, o in results.eval_outcomes.items() if run in keep_runs})


def selected_baseline(selections: list[Selection], name: str) -> str:
    """The group `--baseline NAME` means after selection: a family's label stands for its selected point;
    a grid point that was not selected is refused, naming the one that was."""
    for s in selections:
        if s.selected is None:
            continue
        if name == s.family:
            return s.selected.group
        if name != s.selected.group and any(name == p.group for p in s.points):
            raise ResultsError(f"--baseline {name}: that grid point of {s.family} was not selected "
                               f"({s.selected.group} was, on {s.metric}); give {s.family} or "
                               f"{s.selected.group}, or pass --select none to compare every grid point")
    return name


def selection_summary(selections: list[Selection]) -> str:
    """One line: what was selected, on which metric."""
    chosen = ", ".join(s.selected.group for s in selections if s.selected is not None)
    metric = selections[0].metric if selections else "val_loss"
    return f"Selected on validation (lowest mean final {metric} over seeds; --select): {chosen or 'none'}."


def selection_table(selections: list[Selection]) -> Table:
    rows = []
    for s in selections:
        for p in s.points:
            rows.append({
                "family": s.family, "group": p.group,
                "settings": ", ".join(f"{f} {_short(v)}" for f, v in p.settings.items()) or "-",
                "seeds": f"{p.n}/{p.seeds}" + (f" ({p.failed} failed)" if p.failed else ""),
                "mean": p.mean, "std": p.std, "low": p.low, "high": p.high, "tokens": p.tokens_high,
                "selected": "selected" if s.selected is not None and p.group == s.selected.group else "",
            })
    metric = selections[0].metric if selections else "val_loss"
    columns = [Column("family", "variant", "text"), Column("group", "group", "text"),
               Column("settings", "settings", "text"), Column("seeds", "seeds", "text"),
               Column("mean", f"mean {metric}", "loss"), Column("std", "±", "loss"),
               Column("low", "min", "loss"), Column("high", "max", "loss"), Column("tokens", "at tokens", "tokens"),
               Column("selected", "selected", "text", missing="")]
    notes = [f"Per variant, the grid point with the lowest mean final {metric} over its seeds (each run's last "
             "eval that logged it) is compared; benchmark scores are never used to select. seeds: with a value / "
             "of the point; ± sample std, min and max over seeds. A point with a failed seed ranks after every "
             "point without one; ties go to the first point in grid order."]
    notes += notices(selections)
    return Table(f"Grid points selected on {metric}", columns, rows, notes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if _is_number(value) else (1, 0, repr(value))


def _short(value: Any) -> str:
    return short_number(value) if _is_number(value) else str(value)
