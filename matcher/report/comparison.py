"""What `matcher compare` reports, as tables of raw values (matcher/report/render.py writes them):

- Runs: each run's state, so a run still going or crashed is read as such.
- Tokens to reach each target accuracy, per group (seeds aggregated), and the ratio to the baseline.
- Accuracy and loss at each token checkpoint, per group (mean and spread over seeds).
- The matched costs of each group (predicted when the sweep was planned), with ratios to the
  baseline, so a reader sees that the comparison is fair.

A group is a run's name without its seed suffix (run.yaml `group`); a group with one seed is its run.
The rules for crossings, ratios, seeds and default targets are in matcher/report/efficiency.py.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from matcher.report.efficiency import Spread, default_targets, efficiency_ratio, spread, tokens_to_reach
from matcher.report.results import Results


@dataclass(frozen=True)
class Column:
    key: str  # row key and CSV header
    header: str  # terminal and Markdown header
    kind: str  # how matcher/report/render.py writes it: text, int, target, tokens, flops, count, bytes, ratio,
    # accuracy or loss
    missing: str = "-"  # shown where the value is None


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    summary: list[str]
    tables: list[Table]


def baseline_targets(results: Results) -> list[float]:
    """Default targets from the baseline group's seed-mean accuracy curve (see matcher/report/efficiency.py)."""
    baseline = results.baseline
    curve = [row["eval_accuracy_mean"] for row in checkpoint_rows(results) if row["group"] == baseline]
    return default_targets(curve)


def build_report(results: Results, targets: list[float], targets_given: bool) -> Report:
    baseline = results.baseline
    sweep = ", ".join(sorted(set(results.runs["sweep"]) - {""})) or results.path.name
    summary = [
        f"Baseline: {baseline} ({'chosen with --baseline' if results.chosen_baseline else 'role: target'}). "
        f"{len(results.runs)} runs in {len(results.groups)} groups.",
        "Targets: " + (", ".join(f"{t:g}" for t in targets) if targets else "none")
        + (" (given)." if targets_given else
           " (25%, 50% and 75% of the baseline's best mean accuracy, rounded to 2 decimals)."),
    ]
    tables = [runs_table(results), reach_table(results, targets), checkpoint_table(results),
              costs_table(results)]
    return Report(f"matcher compare: {sweep}", summary, tables)


def runs_table(results: Results) -> Table:
    rows = []
    for run in results.runs.to_dict("records"):
        evals = results.evals[results.evals["run"] == run["run"]]
        rows.append({
            "run": run["run"], "group": run["group"], "seed": run["seed"], "variant": run["variant"],
            "role": run["role"], "state": run["state"], "tokens": run["tokens"], "evals": len(evals),
            "last_eval_accuracy": evals["eval_accuracy"].iloc[-1] if len(evals) else None,
        })
    columns = [
        Column("run", "run", "text"), Column("group", "group", "text"), Column("seed", "seed", "int"),
        Column("variant", "variant", "text"), Column("role", "role", "text"),
        Column("state", "state", "text"), Column("tokens", "tokens", "tokens"),
        Column("evals", "evals", "int"), Column("last_eval_accuracy", "last accuracy", "accuracy"),
    ]
    notes = ["state from status.json (new: none written yet; unknown: unreadable); tokens trained so far. "
             "Runs that failed or still run are compared on the checkpoints they have."]
    notes += [f"{run['run']} {run['state']}: {run['reason']}"
              for run in results.runs.to_dict("records") if _value(run["reason"]) is not None]
    return Table("Runs", columns, rows, notes)


def reach_table(results: Results, targets: list[float]) -> Table:
    curves = {run: (list(curve["tokens"]), list(curve["eval_accuracy"]))
              for run, curve in results.evals.groupby("run", sort=False)}

    def reach(group: str, target: float) -> Spread:
        no_evals = ([], [])
        runs = _runs_of(results, group)
        return spread([tokens_to_reach(*curves.get(run, no_evals), target) for run in runs])

    variants, states = group_variants(results), group_states(results)
    rows = []
    for target in targets:
        baseline = reach(results.baseline, target)
        for group in results.groups:
            stats = reach(group, target)
            rows.append({
                "target": target, "group": group, "variant": variants[group], "state": states[group],
                "seeds": stats.seeds, "reached": stats.n, "tokens_mean": stats.mean,
                "tokens_std": stats.std, "vs_baseline": efficiency_ratio(baseline.mean, stats.mean),
            })
    columns = [
        Column("target", "target", "target"), Column("group", "group", "text"),
        Column("variant", "variant", "text"), Column("state", "state", "text"),
        Column("seeds", "seeds", "int"), Column("reached", "reached", "int"),
        Column("tokens_mean", "tokens", "tokens", missing="not reached"), Column("tokens_std", "±", "tokens"),
        Column("vs_baseline", "vs baseline", "ratio"),
    ]
    notes = [
        "tokens: where accuracy first reaches the target, interpolated linearly in log(tokens) between the "
        "two checkpoints around it; mean over the seeds that reached it, ± sample std.",
        "vs baseline = baseline tokens / group tokens: above 1x the group needs fewer tokens than the "
        "baseline.",
    ]
    if not targets:
        notes.append("No targets: the baseline has no eval with accuracy 0.01 or more yet; give --targets.")
    return Table("Tokens to reach target accuracy", columns, rows, notes)


def checkpoint_rows(results: Results) -> list[dict[str, Any]]:
    """Per group and token checkpoint: accuracy mean and spread over the seeds that have it, mean losses."""
    rows = []
    for group in results.groups:
        evals = results.evals[results.evals["group"] == group]
        for tokens, at in evals.groupby("tokens", sort=True):
            accuracy = spread(list(at["eval_accuracy"]))
            rows.append({
                "group": group, "tokens": tokens, "seeds": accuracy.n, "eval_accuracy_mean": accuracy.mean,
                "eval_accuracy_std": accuracy.std, "eval_loss_mean": _mean(at["eval_loss"]),
                "train_loss_mean": _mean(at["train_loss"]),
            })
    return rows


def checkpoint_table(results: Results) -> Table:
    columns = [
        Column("group", "group", "text"), Column("tokens", "tokens", "tokens"),
        Column("seeds", "seeds", "int"),
        Column("eval_accuracy_mean", "accuracy", "accuracy"), Column("eval_accuracy_std", "±", "accuracy"),
        Column("eval_loss_mean", "eval loss", "loss"), Column("train_loss_mean", "train loss", "loss"),
    ]
    notes = ["Mean over the seeds that have the checkpoint, ± sample std."]
    return Table("Accuracy and loss at each checkpoint", columns, checkpoint_rows(results), notes)


COSTS = (
    ("train_flops_per_token", "FLOP/token", "flops"),
    ("total_params", "params", "count"),
    ("active_params", "active", "count"),
    ("applied_params", "applied", "count"),
    ("training_memory_bytes", "train mem", "bytes"),
    ("inference_cache_bytes", "cache", "bytes"),
)


def costs_table(results: Results) -> Table:
    first_runs = results.runs.drop_duplicates("group").set_index("group")
    baseline = first_runs.loc[results.baseline]
    rows = []
    for group in results.groups:
        run = first_runs.loc[group]
        row = {"group": group, "variant": run["variant"]}
        for key, _, _ in COSTS:
            row[key] = _value(run[key])
            row[f"{key}_vs_baseline"] = _ratio(row[key], _value(baseline[key]))
        rows.append(row)
    columns = [Column("group", "group", "text"), Column("variant", "variant", "text")]
    for key, header, kind in COSTS:
        columns += [Column(key, header, kind), Column(f"{key}_vs_baseline", "×", "ratio")]
    notes = [
        "Predicted when the sweep was planned (run.yaml `predicted`). FLOP/token: training, forward + "
        "backward = 3x forward, 1 FLOP = one add or one multiply. params: total (unique); active: the "
        "unique parameters one token uses; applied: what its forward pass applies over all depths; "
        "train mem: weights, gradients, optimizer state and activations; cache: inference cache per "
        "sequence. × = group / baseline.",
    ]
    return Table("Matched costs", columns, rows, notes)


def _runs_of(results: Results, group: str) -> list[str]:
    return list(results.runs.loc[results.runs["group"] == group, "run"])


def group_variants(results: Results) -> dict[str, str]:
    return dict(zip(results.runs["group"], results.runs["variant"]))


def group_states(results: Results) -> dict[str, str]:
    """One state per group: the runs' common state, or counts such as "1 finished, 1 failed"."""
    states = {}
    for group in results.groups:
        counts = Counter(results.runs.loc[results.runs["group"] == group, "state"])
        mixed = ", ".join(f"{n} {state}" for state, n in counts.items())
        states[group] = next(iter(counts)) if len(counts) == 1 else mixed
    return states


def _mean(values) -> float | None:
    present = [float(v) for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else None


def _value(value: Any) -> Any:
    """None for a missing value, which pandas holds as NaN."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or not baseline else value / baseline
