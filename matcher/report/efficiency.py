"""Data efficiency from accuracy curves: the training tokens a run needs to reach a target accuracy,
the ratio of two runs' needs, the spread over seeds and the default targets. Functions of plain
numbers (no files, no pandas), so each rule is tested on hand-made curves.

Rules
- Crossing: the FIRST checkpoint whose accuracy is >= the target. Between it and the checkpoint
  before, tokens are interpolated linearly in log(tokens): curves are read on a log token axis, where
  a straight segment is the natural guess between two checkpoints. A curve that dips after its first
  crossing still reached the target there.
- A target met at the first checkpoint is reached at that checkpoint's tokens (nothing is known
  before it, so this is an upper bound). Checkpoints at 0 tokens (the untrained model) are skipped:
  a log axis has no zero.
- Never reached: None.
- Ratio = baseline tokens / variant tokens, so above 1 the variant needs fewer tokens (is more
  data-efficient). None when either run did not reach the target.
- Seeds: mean and sample standard deviation (n - 1) over the seeds that have a value (reached the
  target, or have that checkpoint); the std is None for fewer than two values.
- Default targets: 25%, 50% and 75% of the baseline's best accuracy (the maximum of its seed-mean
  curve), rounded to 2 decimals; zeros, repeats and any that rounding lifted above the best are
  dropped, so the baseline reaches every one, and there are none before it scores 0.01. 100% is left
  out: it is met only at the baseline's single best checkpoint, where noise decides.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from matcher.errors import ResultsError

DEFAULT_TARGET_FRACTIONS = (0.25, 0.5, 0.75)


def tokens_to_reach(tokens: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """Training tokens at which the accuracy curve first reaches `target`; None if it never does.
    `tokens` must be increasing (checkpoint order)."""
    if len(tokens) != len(accuracy):
        raise ValueError(f"{len(tokens)} token checkpoints but {len(accuracy)} accuracies")
    if any(later <= earlier for earlier, later in zip(tokens, tokens[1:])):
        raise ValueError("tokens must be strictly increasing")
    points = [(t, a) for t, a in zip(tokens, accuracy) if t > 0]
    for i, (t, a) in enumerate(points):
        if a < target:
            continue
        if i == 0 or a == target:
            return float(t)
        t_before, a_before = points[i - 1]
        fraction = (target - a_before) / (a - a_before)
        return math.exp(math.log(t_before) + fraction * (math.log(t) - math.log(t_before)))
    return None


def efficiency_ratio(baseline_tokens: float | None, variant_tokens: float | None) -> float | None:
    """Baseline tokens / variant tokens to reach the same target (> 1: the variant needs fewer)."""
    if baseline_tokens is None or variant_tokens is None:
        return None
    return baseline_tokens / variant_tokens


@dataclass(frozen=True)
class Spread:
    """Mean and sample std of the values a group's seeds have, `n` of them out of `seeds`."""

    mean: float | None
    std: float | None
    n: int
    seeds: int


def spread(values: Sequence[float | None]) -> Spread:
    """One value per seed; None where a seed has none (did not reach, or has no such checkpoint)."""
    present = [v for v in values if v is not None]
    mean = statistics.fmean(present) if present else None
    std = statistics.stdev(present) if len(present) >= 2 else None
    return Spread(mean, std, len(present), len(values))


def default_targets(baseline_accuracy: Sequence[float]) -> list[float]:
    """Targets from the baseline's (seed-mean) accuracy curve; [] while its best is below 0.01."""
    return sorted(default_target_fractions(baseline_accuracy))


def default_target_fractions(baseline_accuracy: Sequence[float]) -> dict[float, list[float]]:
    """Each default target and the fractions of the baseline's best accuracy that round to it (several
    when the best is small: 25% and 50% of 0.03 are both 0.01); a fraction that rounds to 0 gives none."""
    if not baseline_accuracy:
        return {}
    best = max(baseline_accuracy)
    targets: dict[float, list[float]] = {}
    for fraction in DEFAULT_TARGET_FRACTIONS:
        target = round(fraction * best, 2)
        if 0 < target <= best:
            targets.setdefault(target, []).append(fraction)
    return targets


def parse_targets(text: str) -> list[float]:
    """`--targets` as typed: accuracies separated by commas or spaces, as fractions (0.5) or percent
    (50%). Sorted, repeats dropped."""
    targets = set()
    for item in text.replace(",", " ").split():
        percent = item.endswith("%")
        try:
            value = float(item.rstrip("%"))
        except ValueError:
            raise ResultsError(
                f"target {item!r} is not a number: give accuracies like --targets 0.3,0.5 (or 30%,50%)"
            ) from None
        if percent:
            value /= 100
        if not 0 < value <= 1:
            raise ResultsError(f"target {item!r} is not an accuracy between 0 and 1: "
                               "give e.g. --targets 0.3,0.5 (or 30%,50%)")
        targets.add(value)
    if not targets:
        raise ResultsError("--targets is empty: give accuracies like --targets 0.3,0.5, "
                           "or leave it out for the defaults")
    return sorted(targets)


# metrics a target can name besides accuracy; lower is better for every one of these
LOSS_METRICS = {"loss": "eval_loss", "bpb": "eval_bpb", "train_loss": "train_loss"}


@dataclass(frozen=True)
class Target:
    """A level a curve must reach: `metric` is acc (the in-training accuracy), loss, bpb, train_loss, or a
    benchmark score TASK.METRIC (e.g. gsm8k-test.strict) that `matcher eval` stored."""

    metric: str
    value: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOSS_METRICS or self.metric.endswith((".bpb", ".loss"))

    def __str__(self) -> str:
        return f"{self.value:g}" if self.metric == "acc" else f"{self.metric}:{self.value:g}"


def as_targets(targets: Sequence[float | Target]) -> list[Target]:
    """Targets as given: a bare number is an accuracy target."""
    return [t if isinstance(t, Target) else Target("acc", t) for t in targets]


def parse_metric_targets(text: str) -> list[Target]:
    """`--targets` with optional metrics: `0.5` and `50%` are accuracies; `bpb:1.2`, `loss:2.0`,
    `gsm8k-test.strict:0.3` name the metric."""
    accuracies, others = [], []
    for item in text.replace(",", " ").split():
        metric, sep, value = item.rpartition(":")
        if not sep:
            accuracies.append(item)
            continue
        try:
            number = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
        except ValueError:
            raise ResultsError(f"target {item!r}: {value!r} is not a number; give e.g. --targets bpb:1.2") from None
        if metric == "acc":
            accuracies.append(value)
        else:
            others.append(Target(metric, number))
    targets = [Target("acc", value) for value in parse_targets(",".join(accuracies))] if accuracies else []
    return targets + sorted(set(others), key=lambda t: (t.metric, -t.value if t.lower_is_better else t.value))


def tokens_to_reach_target(tokens: Sequence[float], values: Sequence[float], target: Target) -> float | None:
    """tokens_to_reach for a target of either direction (a loss reaches its target from above)."""
    if target.lower_is_better:
        return tokens_to_reach(tokens, [-v for v in values], -target.value)
    return tokens_to_reach(tokens, values, target.value)
