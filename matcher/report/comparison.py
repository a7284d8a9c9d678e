"""What `matcher compare` reports, as tables of raw values (matcher/report/render.py writes them):

- Runs: each run's state, so a run still going or crashed is read as such.
- Tokens to reach each target (an accuracy, or a loss / bpb / benchmark score level), per group (seeds
  aggregated), and the ratio to the baseline, each with a 95% bootstrap interval over problems and seeds.
- Accuracy (with its Wilson interval), loss and bpb at each token checkpoint, per group.
- Benchmark scores `matcher eval` stored, with intervals, and scores against test-time depth.
- The matched costs of each group (predicted when the sweep was planned), with ratios to the
  baseline, so a reader sees that the comparison is fair.

A group is a run's name without its seed suffix (run.yaml `group`); a group with one seed is its run.
The rules for crossings, ratios, seeds and default targets are in matcher/report/efficiency.py.
"""

# Function-local imports: numpy, only where curves are compared.

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from matcher.eval.intervals import (
    ACCURACY_METRICS,
    BOOTSTRAP_SAMPLES,
    BOOTSTRAP_SEED,
    binomial_interval,
    bootstrap_draws,
    percentile_interval,
)
from matcher.report.efficiency import (
    LOSS_METRICS,
    Spread,
    Target,
    as_targets,
    default_target_fractions,
    default_targets,
    efficiency_ratio,
    spread,
    tokens_to_reach_target,
)
from matcher.report.results import Results


@dataclass(frozen=True)
class Column:
    key: str  # row key and CSV header
    header: str  # terminal and Markdown header
    kind: str  # how matcher/report/render.py writes it: text, int, target, tokens, flops, count, bytes, ratio,
    # accuracy, loss, or a power law's coefficient, exponent and fit (R²)
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


def _baseline_curve(results: Results) -> list[float]:
    return [row["eval_accuracy_mean"] for row in checkpoint_rows(results) if row["group"] == results.baseline]


def baseline_targets(results: Results) -> list[float]:
    """Default targets from the baseline group's seed-mean accuracy curve (see matcher/report/efficiency.py)."""
    return default_targets(_baseline_curve(results))


def _default_targets_text(results: Results) -> str:
    """How the default targets came about, e.g. "0.1 (25%), 0.2 (50%), 0.3 (75%) of the baseline's best
    mean accuracy 0.4": only the fractions that gave a target, and each target once."""
    curve = _baseline_curve(results)
    chosen = default_target_fractions(curve)
    if not chosen:
        return "none (the baseline has no eval with accuracy 0.01 or more yet)."
    listing = ", ".join(f"{target:g} ({' and '.join(f'{f:.0%}' for f in fractions)})"
                        for target, fractions in sorted(chosen.items()))
    return f"{listing} of the baseline's best mean accuracy {max(curve):.3g}, rounded to 2 decimals."


def build_report(results: Results, targets: list[float | Target], targets_given: bool) -> Report:
    targets = as_targets(targets)
    baseline = results.baseline
    sweep = ", ".join(sorted(set(results.runs["sweep"]) - {""})) or results.path.name
    summary = [
        f"Baseline: {baseline} ({'chosen with --baseline' if results.chosen_baseline else 'role: target'}). "
        f"{len(results.runs)} runs in {len(results.groups)} groups.",
        "Targets: " + ((", ".join(str(t) for t in targets) if targets else "none") + " (given)."
                       if targets_given else _default_targets_text(results)),
    ]
    tables = [runs_table(results), reach_table(results, targets), checkpoint_table(results)]
    if results.bench is not None and len(results.bench):
        tables.append(bench_table(results))
        depth = depth_table(results)
        if depth.rows:
            tables.append(depth)
    tables.append(costs_table(results))
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


Curve = tuple[list[float], list[float], "object | None"]  # tokens, values, per-problem outcomes (checkpoints x n)


def run_curves(results: Results, metric: str) -> dict[str, Curve]:
    """Each run's curve of `metric` (acc, loss, bpb, train_loss, or TASK.METRIC of a benchmark scored at
    the trained depth), with the per-problem outcomes where every point has them (accuracies)."""
    import numpy as np

    curves = {}
    if metric == "acc" or metric in LOSS_METRICS:
        column = "eval_accuracy" if metric == "acc" else LOSS_METRICS[metric]
        for run, curve in results.evals.groupby("run", sort=False):
            curve = curve[~curve[column].isna()]
            tokens, values = list(curve["tokens"]), list(curve[column])
            outcomes = None
            if metric == "acc":
                strings = [(results.eval_outcomes or {}).get(run, {}).get(t) for t in tokens]
                outcomes = _outcome_matrix(strings, np)
            curves[run] = (tokens, values, outcomes)
        return curves
    task, _, name = metric.rpartition(".")
    bench = results.bench
    if bench is None or not task:
        return {}
    rows = bench[(bench["task"] == task) & (bench["metric"] == name) & (bench["depth"] == bench["trained_depth"])]
    for run, curve in rows.groupby("run", sort=False):
        curve = curve.sort_values("tokens")
        curves[run] = (list(curve["tokens"]), list(curve["score"]), _outcome_matrix(list(curve["outcomes"]), np))
    return curves


def _outcome_matrix(strings: list, np) -> object | None:
    if not strings or any(not isinstance(s, str) for s in strings) or len({len(s) for s in strings}) != 1:
        return None
    return np.array([[c == "1" for c in s] for s in strings], dtype=float)


def _group_reach(curves: dict[str, Curve], runs: list[str], target: Target, pick=None) -> float | None:
    """Mean over `runs` (repeats allowed: a bootstrap resample) of the tokens each needs to reach
    `target`, the problems resampled by `pick` where a run has per-problem outcomes of that many."""
    reached = []
    for run in runs:
        tokens, values, outcomes = curves.get(run, ([], [], None))
        if pick is not None and outcomes is not None and outcomes.shape[1] == len(pick):
            values = list(outcomes[:, pick].mean(axis=1))
        value = tokens_to_reach_target(tokens, values, target) if tokens else None
        if value is not None:
            reached.append(value)
    return sum(reached) / len(reached) if reached else None


def reach_intervals(curves: dict[str, Curve], group_runs: list[str], baseline_runs: list[str], target: Target,
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple:
    """95% percentile bootstrap intervals of the group's tokens to reach `target` and of baseline / group:
    seeds resampled within each group, problems resampled once per draw for both groups (they score the
    same problems, so the ratio's interval is paired over problems). None where nothing varies between
    draws (one seed and no per-problem outcomes): a zero-width interval would claim certainty."""
    widths = [c[2].shape[1] for c in curves.values() if c[2] is not None]
    n_problems = max(set(widths), key=widths.count) if widths else 0

    def resamplable(runs: list[str]) -> bool:  # several seeds, or per-problem outcomes to draw from
        return len(set(runs)) > 1 or any(curves.get(run, ([], [], None))[2] is not None
                                         and curves[run][2].shape[1] == n_problems for run in runs)

    group_varies, baseline_varies = resamplable(group_runs), resamplable(baseline_runs)
    if not group_varies and not baseline_varies:  # every draw the same number: a zero-width "interval"
        return None, None
    def draw(rng) -> tuple[float | None, float | None]:  # (group's tokens, baseline / group) of one resample
        pick = rng.integers(n_problems, size=n_problems) if n_problems else None
        group = _group_reach(curves, list(rng.choice(group_runs, len(group_runs))), target, pick)
        base = _group_reach(curves, list(rng.choice(baseline_runs, len(baseline_runs))), target, pick)
        return group, efficiency_ratio(base, group)

    tokens, ratios = zip(*bootstrap_draws(draw, samples, seed))
    return percentile_interval(tokens) if group_varies else None, percentile_interval(ratios)


def reach_table(results: Results, targets: list[float | Target]) -> Table:
    targets = as_targets(targets)
    variants, states = group_variants(results), group_states(results)
    rows = []
    by_metric: dict[str, dict[str, Curve]] = {}  # the default three accuracy targets share one build
    for target in targets:
        if target.metric not in by_metric:
            by_metric[target.metric] = run_curves(results, target.metric)
        curves = by_metric[target.metric]

        def reach(group: str, curves=curves, target=target) -> Spread:
            return spread([_group_reach(curves, [run], target) for run in _runs_of(results, group)])

        baseline = reach(results.baseline)
        baseline_runs = _runs_of(results, results.baseline)
        for group in results.groups:
            stats = reach(group)
            tokens_ci, ratio_ci = (reach_intervals(curves, _runs_of(results, group), baseline_runs, target)
                                   if stats.n else (None, None))
            rows.append({
                "metric": target.metric, "target": target.value, "group": group, "variant": variants[group],
                "state": states[group],
                "seeds": stats.seeds, "reached": stats.n, "tokens_mean": stats.mean,
                "tokens_std": stats.std, "tokens_low": tokens_ci and tokens_ci[0],
                "tokens_high": tokens_ci and tokens_ci[1],
                "vs_baseline": efficiency_ratio(baseline.mean, stats.mean),
                "vs_low": ratio_ci and ratio_ci[0], "vs_high": ratio_ci and ratio_ci[1],
            })
    columns = [
        Column("metric", "metric", "text"), Column("target", "target", "target"), Column("group", "group", "text"),
        Column("variant", "variant", "text"), Column("state", "state", "text"),
        Column("seeds", "seeds", "int"), Column("reached", "reached", "int"),
        Column("tokens_mean", "tokens", "tokens", missing="not reached"), Column("tokens_std", "±", "tokens"),
        Column("tokens_low", "95% low", "tokens"), Column("tokens_high", "95% high", "tokens"),
        Column("vs_baseline", "vs baseline", "ratio"),
        Column("vs_low", "95% low", "ratio"), Column("vs_high", "95% high", "ratio"),
    ]
    notes = [
        "tokens: where the curve first reaches the target (an accuracy: at or above; loss, bpb: at or below), "
        "interpolated linearly in log(tokens) between the two checkpoints around it; mean over the seeds "
        "that reached it, ± sample std.",
        "vs baseline = baseline tokens / group tokens: above 1x the group needs fewer tokens than the "
        "baseline.",
        f"95% low/high: percentile bootstrap ({BOOTSTRAP_SAMPLES} draws) over seeds and, where the per-problem "
        "outcomes were logged, over problems (the same draw for both groups of a ratio); - where most draws "
        "do not reach the target, or where nothing can be resampled (one seed without per-problem outcomes).",
    ]
    if not targets:
        notes.append("No targets: the baseline has no eval with accuracy 0.01 or more yet; give --targets.")
    return Table("Tokens to reach target", columns, rows, notes)


def checkpoint_rows(results: Results) -> list[dict[str, Any]]:
    """Per group and token checkpoint: accuracy mean and spread over the seeds that have it, mean losses."""
    rows = []
    for group in results.groups:
        evals = results.evals[results.evals["group"] == group]
        for tokens, at in evals.groupby("tokens", sort=True):
            accuracy = spread(list(at["eval_accuracy"]))
            interval = _pooled_interval(list(at["eval_accuracy"]), list(at["eval_n"]))
            rows.append({
                "group": group, "tokens": tokens, "seeds": accuracy.n, "eval_accuracy_mean": accuracy.mean,
                "eval_accuracy_std": accuracy.std, "eval_accuracy_low": interval and interval[0],
                "eval_accuracy_high": interval and interval[1], "eval_loss_mean": _mean(at["eval_loss"]),
                "eval_bpb_mean": _mean(at["eval_bpb"]), "train_loss_mean": _mean(at["train_loss"]),
            })
    return rows


def checkpoint_table(results: Results) -> Table:
    columns = [
        Column("group", "group", "text"), Column("tokens", "tokens", "tokens"),
        Column("seeds", "seeds", "int"),
        Column("eval_accuracy_mean", "accuracy", "accuracy"), Column("eval_accuracy_std", "±", "accuracy"),
        Column("eval_accuracy_low", "95% low", "accuracy"), Column("eval_accuracy_high", "95% high", "accuracy"),
        Column("eval_loss_mean", "eval loss", "loss"), Column("eval_bpb_mean", "bpb", "loss"),
        Column("train_loss_mean", "train loss", "loss"),
    ]
    notes = ["Mean over the seeds that have the checkpoint, ± sample std. 95% low/high: Wilson interval of "
             "the accuracy over all the seeds' problems together (eval_n each; - where a line has no eval_n)."]
    return Table("Accuracy and loss at each checkpoint", columns, checkpoint_rows(results), notes)


def _pooled_interval(accuracies: list[float], counts: list[float]) -> tuple[float, float] | None:
    if not counts or any(math.isnan(n) for n in counts):
        return None
    return binomial_interval(round(sum(a * n for a, n in zip(accuracies, counts))), round(sum(counts)))


def bench_table(results: Results) -> Table:
    """Benchmark scores at the trained depth, per group, task, metric and checkpoint."""
    bench = results.bench[results.bench["depth"] == results.bench["trained_depth"]]
    rows = []
    for group in results.groups:
        of_group = bench[bench["group"] == group]
        for (task, metric, tokens), at in of_group.groupby(["task", "metric", "tokens"], sort=True):
            scores = spread([None if math.isnan(v) else v for v in at["score"]])
            if metric in ACCURACY_METRICS:
                interval = _pooled_interval(list(at["score"]), list(at["n"]))
            else:  # bpb, loss: the one seed's bootstrap interval
                interval = (at["low"].iloc[0], at["high"].iloc[0]) if len(at) == 1 else None
            rows.append({"group": group, "task": task, "metric": metric, "tokens": tokens, "seeds": scores.n,
                         "n": int(at["n"].iloc[0]), "score": scores.mean, "std": scores.std,
                         "low": interval and _value(interval[0]), "high": interval and _value(interval[1])})
    columns = [Column("group", "group", "text"), Column("task", "task", "text"), Column("metric", "metric", "text"),
               Column("tokens", "tokens", "tokens"), Column("seeds", "seeds", "int"), Column("n", "n", "int"),
               Column("score", "score", "accuracy"), Column("std", "±", "accuracy"),
               Column("low", "95% low", "accuracy"), Column("high", "95% high", "accuracy")]
    notes = ["From `matcher eval` (each run's evals.jsonl), at the trained depth. Mean over seeds ± std; 95%: "
             "Wilson over all seeds' problems for accuracies, the bootstrap over problems for bpb and loss "
             "(one seed)."]
    return Table("Benchmark scores", columns, rows, notes)


def depth_table(results: Results) -> Table:
    """Scores against test-time depth (dr, dr_da): each run's latest step scored at more than one depth."""
    rows = []
    for run, of_run in results.bench.groupby("run", sort=False):
        for (task, metric), at in of_run.groupby(["task", "metric"], sort=True):
            depths_at = at.groupby("step")["depth"].nunique()
            multi = depths_at[depths_at > 1]
            if multi.empty:
                continue
            latest = at[at["step"] == multi.index.max()].sort_values("depth")
            for row in latest.to_dict("records"):
                rows.append({"run": run, "task": task, "metric": metric, "tokens": row["tokens"],
                             "depth": row["depth"], "trained": row["trained_depth"], "n": row["n"],
                             "score": _value(row["score"]), "low": _value(row["low"]), "high": _value(row["high"])})
    columns = [Column("run", "run", "text"), Column("task", "task", "text"), Column("metric", "metric", "text"),
               Column("tokens", "tokens", "tokens"), Column("depth", "depth", "int"),
               Column("trained", "trained depth", "int"), Column("n", "n", "int"),
               Column("score", "score", "accuracy"), Column("low", "95% low", "accuracy"),
               Column("high", "95% high", "accuracy")]
    notes = ["`matcher eval RUN --depth 8,16,32`: a depth-recurrent checkpoint applied more or fewer times "
             "than it was trained with."]
    return Table("Scores against test-time depth", columns, rows, notes)


COSTS = (
    ("train_flops_per_token", "FLOP/token", "flops"),
    ("total_params", "params", "count"),
    ("active_params", "active", "count"),
    ("applied_params", "applied", "count"),
    ("train_memory_bytes", "train mem", "bytes"),
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
