"""`matcher compare <ladder.yaml>`: a ladder's rungs on one axis of training FLOPs, with a power law per
variant.

For every rung (a sweep of the ladder manifest, matcher.plan.ladder) and variant: the training tokens to
reach one target accuracy (the same target on every rung), the training FLOPs that took, and the final
eval accuracy, each the mean over the variant's seeds. Per variant and quantity, y = a * C^b is fitted by
least squares in log-log space (scipy.stats.linregress), C being the rung's training FLOPs (the target's
FLOPs per token x the rung's tokens: matched variants share it).
"""

# Function-local imports: scipy and matplotlib, only for the fit and the plot.

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.errors import ResultsError
from matcher.report.comparison import Column, Report, Table
from matcher.report.efficiency import tokens_to_reach
from matcher.report.results import load_results

QUANTITIES = ("flops_to_target", "final_accuracy")


@dataclass(frozen=True)
class LadderPoint:
    rung: str
    variant: str
    train_flops: float  # the rung's training compute (x axis)
    tokens_to_target: float | None  # mean over seeds; None when a seed never reached the target
    flops_to_target: float | None  # tokens_to_target x the variant's training FLOPs per token
    final_accuracy: float | None  # mean over seeds of the last eval's accuracy


@dataclass(frozen=True)
class PowerLaw:
    variant: str
    quantity: str
    coefficient: float  # a
    exponent: float  # b
    r_squared: float | None  # None with two points (the line passes through both)
    points: int


def ladder_points(manifest: dict[str, Any], manifest_path: Path, target: float | None,
                  results_root: Path | None = None) -> tuple[list[LadderPoint], float, list[str]]:
    """Every (rung, variant) point, the target accuracy used, and warnings (rungs without results)."""
    root = results_root or Path(manifest.get("results_root", "results"))
    loaded, warnings = [], []
    for rung in manifest["rungs"]:
        folder = root / Path(rung["sweep"]).stem
        if not folder.is_dir():
            warnings.append(f"{rung['target']}: no results at {folder}; run `matcher run "
                            f"{(manifest_path.parent / rung['sweep']).as_posix()}`")
            continue
        results = load_results(folder)
        warnings += results.warnings
        loaded.append((rung, results))
    if not loaded:
        raise ResultsError(f"{manifest_path}: no rung has results under {root}; train the rungs' sweeps first")
    if target is None:  # half the smallest rung's best baseline accuracy: one target every rung reaches early
        rung, results = loaded[0]
        baseline = results.evals[results.evals["group"] == results.baseline]["eval_accuracy"]
        target = round(float(baseline.max()) / 2, 4) if len(baseline) else 0.0
    points = []
    for rung, results in loaded:
        runs = results.runs
        for variant in dict.fromkeys(runs["variant"]):
            rows = runs[runs["variant"] == variant]
            reach, finals, flops_per_token = [], [], []
            for _, run in rows.iterrows():
                evals = results.evals[results.evals["run"] == run["run"]]
                if evals.empty:
                    continue
                reach.append(tokens_to_reach(list(evals["tokens"]), list(evals["eval_accuracy"]), target))
                finals.append(float(evals["eval_accuracy"].iloc[-1]))
                flops_per_token.append(float(run["train_flops_per_token"]))
            if not finals:
                continue
            tokens = None if None in reach else sum(reach) / len(reach)
            per_token = sum(flops_per_token) / len(flops_per_token)
            points.append(LadderPoint(rung=rung["target"], variant=variant, train_flops=float(rung["train_flops"]),
                                      tokens_to_target=tokens,
                                      flops_to_target=None if tokens is None else tokens * per_token,
                                      final_accuracy=sum(finals) / len(finals)))
    return points, target, warnings


def fit_power_laws(points: list[LadderPoint]) -> list[PowerLaw]:
    """y = a C^b per variant and quantity, over the rungs where y is known and positive (two or more)."""
    from scipy import stats

    laws = []
    for variant in dict.fromkeys(p.variant for p in points):
        for quantity in QUANTITIES:
            known = [(p.train_flops, getattr(p, quantity)) for p in points if p.variant == variant]
            known = [(c, y) for c, y in known if y is not None and y > 0]
            if len(known) < 2 or len({c for c, _ in known}) < 2:
                continue
            fit = stats.linregress([math.log(c) for c, _ in known], [math.log(y) for _, y in known])
            laws.append(PowerLaw(variant=variant, quantity=quantity, coefficient=math.exp(fit.intercept),
                                 exponent=float(fit.slope),
                                 r_squared=float(fit.rvalue ** 2) if len(known) > 2 else None, points=len(known)))
    return laws


def ladder_report(name: str, points: list[LadderPoint], laws: list[PowerLaw], target: float) -> Report:
    """The ladder's comparison as a Report, written like a sweep's (matcher/report/render.py): the rungs'
    points and the power laws."""
    rungs = Table("Rungs: training FLOPs to the target accuracy, and final accuracy", [
        Column("rung", "rung", "text"), Column("variant", "variant", "text"),
        Column("train_flops", "train FLOPs C", "flops"),
        Column("tokens_to_target", "tokens to target", "tokens", missing="not reached"),
        Column("flops_to_target", "FLOPs to target", "flops"),
        Column("final_accuracy", "final accuracy", "accuracy")], [dataclasses.asdict(p) for p in points])
    fits = Table("power laws y = a C^b (least squares in log-log, scipy.stats.linregress)", [
        Column("variant", "variant", "text"), Column("quantity", "quantity", "text"),
        Column("coefficient", "a", "coefficient"), Column("exponent", "b", "exponent"),
        Column("r_squared", "R²", "fit", missing="- (2 points)"), Column("points", "rungs", "int")],
        [dataclasses.asdict(law) for law in laws])
    return Report(f"ladder {name}: target accuracy {target:g}", [], [rungs, fits])


def plot_ladder(points: list[LadderPoint], laws: list[PowerLaw], target: float, path: Path) -> Path:
    """Two log-log panels against training FLOPs: FLOPs to the target accuracy, and final accuracy,
    each variant's points with its fitted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    titles = {"flops_to_target": f"training FLOPs to reach accuracy {target:g}",
              "final_accuracy": "final eval accuracy"}
    for ax, quantity in zip(axes, QUANTITIES):
        for variant in dict.fromkeys(p.variant for p in points):
            mine = [(p.train_flops, getattr(p, quantity)) for p in points if p.variant == variant
                    and getattr(p, quantity)]
            if not mine:
                continue
            (line,) = ax.plot(*zip(*mine), "o", label=variant)
            law = next((f for f in laws if f.variant == variant and f.quantity == quantity), None)
            if law is not None:
                xs = sorted(c for c, _ in mine)
                ax.plot(xs, [law.coefficient * c ** law.exponent for c in xs], "-", color=line.get_color(),
                        label=f"{variant}: C^{law.exponent:.3f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rung training FLOPs C")
        ax.set_title(titles[quantity])
        ax.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
