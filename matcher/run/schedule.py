"""When things happen in a run, as pure functions of the step: the learning rate (warmup-stable-decay)
and the steps that end at an evaluation checkpoint. No torch, so the CLI and tests can use them
freely."""

from __future__ import annotations

import math

from matcher.config import TrainConfig


def wsd_lr(step: int, train: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup to `lr`, constant, then a linear
    decay that reaches `lr * min_lr_ratio` on the last step."""
    total = train.total_steps
    warmup = round(train.warmup_fraction * total)
    decay = round(train.decay_fraction * total)
    if step < warmup:
        return train.lr * (step + 1) / warmup
    decay_start = total - decay
    if step >= decay_start:
        progress = (step - decay_start + 1) / decay
        return train.lr * (1 - (1 - train.min_lr_ratio) * progress)
    return train.lr


def eval_steps(train: TrainConfig) -> list[int]:
    """Step counts (1-based: after that many optimizer steps) at which to evaluate and checkpoint.

    From `eval_tokens` when given (those within the run; the last step is always one, so every run
    ends with an evaluation), else exactly `n_evals` distinct steps log-spaced from one step's tokens
    to `total_tokens`: a point whose log-spaced step rounds onto its neighbour's moves to the next free
    step, so `n_evals: 8` is 8 points (TrainConfig refuses more points than steps)."""
    total = train.total_steps
    per_step = train.tokens_per_step
    if train.eval_tokens:
        targets = [t for t in train.eval_tokens if t <= total * per_step]
        steps = {min(total, max(1, math.ceil(t / per_step - 1e-9))) for t in targets}
        return sorted(steps | {total})
    count = min(train.n_evals, total)
    if count == 1:
        return [total]
    low, high = math.log(per_step), math.log(total * per_step)
    steps: list[int] = []
    for i in range(count):
        ideal = math.ceil(math.exp(low + (high - low) * i / (count - 1)) / per_step - 1e-9)
        earliest = steps[-1] + 1 if steps else 1
        latest = total - (count - 1 - i)  # room for the points after this one
        steps.append(min(latest, max(earliest, ideal)))
    return steps
