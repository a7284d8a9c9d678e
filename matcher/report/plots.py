"""`matcher compare --plot FILE`: one figure, in the format of FILE's suffix (.png, .pdf, .svg; .png
when it has none).

- Top left: eval accuracy against training tokens (log axis), one line per group: the seed mean,
  with a band of ± one sample std where two or more seeds have the checkpoint; targets dashed.
- Top right: loss against training tokens: train loss (thin) and eval loss (markers), seed means.
- Score against test-time depth, where `matcher eval --depth` scored several.
- Bits per byte against training tokens (where the runs log it): the in-training eval's eval_bpb
  (solid) and the validation split's val_bpb (dashed), seed mean ± one std.
- One panel per benchmark task `matcher eval` scored (at the trained depth, in the setting the
  comparison uses, matcher/report/settings.py): the task's main metric against training tokens, the
  seed mean with a band of ± one sample std where two or more seeds have the point, else the one
  run's 95% interval (Wilson for accuracies, bootstrap for bpb and loss).
- Below, for each run that logged expert load: a heat map of its last eval's load, applied depth by
  expert, as a multiple of the balanced share (1 = every expert gets 1/n_experts of the tokens):
  white is balanced, red an overloaded expert, blue an idle one, on one colour scale for all runs so
  that runs with different expert counts compare.

Groups whose runs did not all finish carry their state in the legend. matplotlib is optional
(`pip install 'matcher[plot]'`); it is drawn without pyplot, so no display is needed.
"""

# Function-local imports: matplotlib, only when a plot is drawn.

from __future__ import annotations

import math
from pathlib import Path

from matcher.errors import ResultsError
from matcher.eval.tasks import SPECS
from matcher.report.comparison import bench_table, checkpoint_rows, depth_table, group_states, group_variants
from matcher.report.efficiency import Target, as_targets
from matcher.report.results import Results

HEAT_MAPS_PER_ROW = 4
PANELS_PER_ROW = 3
BPB_COLUMNS = (("eval_bpb", "-", "eval"), ("val_bpb", "--", "val"))  # column, line style, legend word


def plot_comparison(results: Results, targets: list[float | Target], path: str | Path) -> Path:
    """Draw the figure into `path` (.png added when it has no suffix); returns the file written."""
    figure = comparison_figure(results, targets)
    path = Path(path) if Path(path).suffix else Path(path).with_suffix(".png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    except ValueError as err:
        raise ResultsError(f"cannot write plot {path}: {err}; use a .png, .pdf or .svg file name") from None
    except OSError as err:
        raise ResultsError(f"cannot write plot {path}: {err.strerror}; choose another --plot file") from None
    return path


def comparison_figure(results: Results, targets: list[float | Target]):
    """The figure (a matplotlib Figure, drawn without pyplot) of the module docstring."""
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        raise ResultsError("--plot needs matplotlib: pip install 'matcher[plot]'") from None

    loads = [(run, results.expert_load[run]) for run in results.runs["run"] if run in results.expert_load]
    heat_rows = math.ceil(len(loads) / HEAT_MAPS_PER_ROW)
    depth_rows = depth_table(results).rows if results.bench is not None and len(results.bench) else []
    bpb_columns = [c for c in BPB_COLUMNS if c[0] in results.evals and results.evals[c[0]].notna().any()]
    tasks = benchmark_curves(results)
    panels = 2 + bool(depth_rows) + bool(bpb_columns) + len(tasks)
    panel_rows = math.ceil(panels / PANELS_PER_ROW)
    figure = Figure(figsize=(12, 4.5 * panel_rows + 2.8 * heat_rows), layout="constrained")
    if loads:
        top, bottom = figure.subfigures(2, 1, height_ratios=[4.5 * panel_rows, 2.8 * heat_rows])
    else:
        top = figure
    axes = list(top.subplots(panel_rows, min(panels, PANELS_PER_ROW), squeeze=False).ravel())
    for unused in axes[panels:]:
        unused.remove()
    colors = {group: colormaps["tab10"](i % 10) for i, group in enumerate(results.groups)}
    targets = as_targets(targets)
    _plot_curves(results, targets, colors, axes.pop(0), axes.pop(0))
    if depth_rows:
        _plot_depths(depth_rows, axes.pop(0))
    if bpb_columns:
        _plot_bpb(results, bpb_columns, colors, axes.pop(0))
    for (task, metric, setting_id), curves in tasks.items():
        _plot_task(task, metric, setting_id, curves, colors, axes.pop(0))
    if loads:
        _plot_loads(loads, bottom, heat_rows)
    return figure


def _group_label(results: Results, group: str) -> str:
    return f"{group} ({group_variants(results)[group]})"


def _plot_bpb(results: Results, columns, colors, axes) -> None:
    """Bits per byte against training tokens per group: seed mean, ± one std where two or more seeds."""
    evals = results.evals[results.evals["tokens"] > 0]  # log axis: no zero
    for group in results.groups:
        of_group = evals[evals["group"] == group]
        for column, style, word in columns:
            points = of_group[of_group[column].notna()].groupby("tokens")[column]
            if not len(points):
                continue
            mean, std = points.mean(), points.std().fillna(0.0)
            axes.plot(mean.index, mean.values, linestyle=style, marker="o", color=colors[group],
                      label=f"{_group_label(results, group)} {word}")
            if (std > 0).any():
                axes.fill_between(mean.index, mean - std, mean + std, color=colors[group], alpha=0.2)
    words = ", ".join(f"{word} {'solid' if style == '-' else 'dashed'}" for _, style, word in columns)
    axes.set(xscale="log", xlabel="training tokens", ylabel="bits per byte",
             title=f"Bits per byte ({words})\nseed mean ± std")
    axes.legend(fontsize="small")


def primary_metric(task: str, metrics: list[str]) -> str:
    """The metric a task's panel shows: the first of its spec's metrics (strict for gsm8k, acc for mc),
    for other tasks (lm-evaluation-harness) acc where it has one, else the first by name."""
    spec = SPECS.get(task.split("-")[0]) if not task.startswith("lm-eval-") else None
    order = list(spec.metrics) if spec is not None else ["acc"]
    return next((m for m in order if m in metrics), sorted(metrics)[0])


def benchmark_curves(results: Results) -> dict[tuple[str, str, str], dict[str, tuple[list, list, list, list]]]:
    """(task, metric, setting id) -> group -> (tokens, mean, band low, band high) of each benchmark task's
    main metric at the trained depth: ± one std over seeds where two or more have the point, else the
    one run's 95% interval (none where it has none)."""
    if results.bench is None or not len(results.bench):
        return {}
    trained = results.bench[results.bench["depth"] == results.bench["trained_depth"]]
    rows = [row for row in bench_table(results).rows if row["tokens"] > 0]  # log axis: no zero
    curves: dict[tuple[str, str, str], dict[str, tuple[list, list, list, list]]] = {}
    for task in dict.fromkeys(row["task"] for row in rows):
        metric = primary_metric(task, list(dict.fromkeys(row["metric"] for row in rows if row["task"] == task)))
        setting_id = " ".join(sorted({s.split(" ")[0] for s in trained.loc[trained["task"] == task, "setting"]}))
        by_group = curves.setdefault((task, metric, setting_id), {})
        for row in (r for r in rows if r["task"] == task and r["metric"] == metric and r["score"] is not None):
            tokens, mean, low, high = by_group.setdefault(row["group"], ([], [], [], []))
            if row["seeds"] > 1:
                spread_low, spread_high = row["score"] - row["std"], row["score"] + row["std"]
            else:
                spread_low, spread_high = row["low"], row["high"]
            tokens.append(row["tokens"])
            mean.append(row["score"])
            low.append(math.nan if spread_low is None else spread_low)
            high.append(math.nan if spread_high is None else spread_high)
    return curves


def _plot_task(task: str, metric: str, setting_id: str, curves: dict, colors, axes) -> None:
    for group, (tokens, mean, low, high) in curves.items():
        axes.plot(tokens, mean, marker="o", color=colors[group], label=group)
        axes.fill_between(tokens, low, high, color=colors[group], alpha=0.2)
    axes.set(xscale="log", xlabel="training tokens", ylabel=metric,
             title=f"{task}: {metric}, setting {setting_id}\nband: ± std over seeds (1 seed: 95% CI)")
    axes.legend(fontsize="small")


def _is_loss_metric(metric: str) -> bool:
    return metric == "bpb" or metric.startswith("loss")


def _plot_depths(rows: list[dict], axes) -> None:
    """Score against test-time depth, one line per run and task metric, the trained depth marked. Only the
    accuracies where a task has any: losses share neither their scale nor their direction, and a line per
    seed and metric buried the figure under its legend (the table beside it keeps every metric)."""
    accuracies = [row for row in rows if not _is_loss_metric(row["metric"])]
    rows = accuracies or rows
    lines: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        lines.setdefault((row["run"], f"{row['task']}.{row['metric']}"), []).append(row)
    for (run, metric), points in lines.items():
        drawn = axes.plot([p["depth"] for p in points], [p["score"] for p in points], marker="o",
                          label=f"{run} {metric}")
        trained = [p for p in points if p["depth"] == p["trained"]]
        if trained:
            axes.plot([trained[0]["depth"]], [trained[0]["score"]], marker="*", markersize=14,
                      color=drawn[0].get_color())
    axes.set(xscale="log", xlabel="test-time depth (star: trained)", ylabel="accuracy" if accuracies else "score",
             title=f"{'Accuracy' if accuracies else 'Score'} against test-time depth")
    axes.legend(fontsize="small")


def _plot_curves(results: Results, targets: list[Target], colors, accuracy_axes, loss_axes) -> None:
    checkpoints = [row for row in checkpoint_rows(results) if row["tokens"] > 0]  # log axis: no zero
    variants, states = group_variants(results), group_states(results)
    for group in results.groups:
        rows = [row for row in checkpoints if row["group"] == group]
        seeds = int((results.runs["group"] == group).sum())
        label = f"{group} ({variants[group]}, {seeds} seed{'s' if seeds > 1 else ''})"
        if group == results.baseline:
            label += ", baseline"
        if states[group] != "finished":
            label += f" [{states[group]}]"
        tokens = [row["tokens"] for row in rows]
        mean = [row["eval_accuracy_mean"] for row in rows]
        std = [row["eval_accuracy_std"] or 0.0 for row in rows]
        accuracy_axes.plot(tokens, mean, marker="o", color=colors[group], label=label,
                           linewidth=2.5 if group == results.baseline else 1.5)
        if any(std):
            low = [max(m - s, 0.0) for m, s in zip(mean, std)]
            high = [min(m + s, 1.0) for m, s in zip(mean, std)]
            accuracy_axes.fill_between(tokens, low, high, color=colors[group], alpha=0.2)
        train = results.train[(results.train["group"] == group) & (results.train["tokens"] > 0)]
        train = train.groupby("tokens")["train_loss"].mean()
        loss_axes.plot(train.index, train.values, color=colors[group], linewidth=0.8, alpha=0.6)
        eval_rows = [row for row in rows if row["eval_loss_mean"] is not None]
        loss_axes.plot([row["tokens"] for row in eval_rows], [row["eval_loss_mean"] for row in eval_rows],
                       marker="o", color=colors[group], label=group)
    for i, target in enumerate(t for t in targets if t.metric == "acc"):
        accuracy_axes.axhline(target.value, linestyle="--", color="gray", linewidth=0.8,
                              label="targets" if i == 0 else None)
    for target in (t for t in targets if t.metric in ("loss", "train_loss")):
        loss_axes.axhline(target.value, linestyle="--", color="gray", linewidth=0.8)
    accuracy_axes.set(xscale="log", xlabel="training tokens", ylabel="eval accuracy",
                      title="Accuracy (seed mean ± std)")
    loss_axes.set(xscale="log", xlabel="training tokens", ylabel="loss",
                  title="Loss: train (thin), eval (markers)")
    accuracy_axes.legend(fontsize="small")
    loss_axes.legend(fontsize="small")


def _plot_loads(loads: list[tuple[str, list[list[float]]]], figure, heat_rows: int) -> None:
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.ticker import MaxNLocator

    relative = [[[share * len(depth) for share in depth] for depth in load] for _, load in loads]
    highest = max(max(max(depth) for depth in load) for load in relative)
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(highest, 2.0))
    columns = min(len(loads), HEAT_MAPS_PER_ROW)
    axes = figure.subplots(heat_rows, columns, squeeze=False).ravel()
    for ax, (run, load), scaled in zip(axes, loads, relative):
        image = ax.imshow(scaled, aspect="auto", cmap="RdBu_r", norm=norm,
                          extent=(0.5, len(load[0]) + 0.5, len(load) + 0.5, 0.5))
        ax.set(xlabel="expert", ylabel="applied depth")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(run, fontsize="medium")
    for ax in axes[len(loads):]:
        ax.set_visible(False)
    figure.suptitle("Expert load at the last eval with load data", fontsize="large")
    figure.colorbar(image, ax=list(axes[:len(loads)]), label="load / balanced share")
