"""Intervals: a binomial (Wilson score) interval on every accuracy, and percentile bootstrap intervals
for statistics that have no closed form (bits per byte, tokens to a target, ratios to the baseline).

Wilson rather than the normal approximation: at the sizes small benchmarks have (tens to hundreds of
problems) and near 0 or 1 the normal interval leaves [0, 1] or collapses to a point.
"""

# Function-local imports: scipy and numpy, only when an interval is computed.

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LEVEL = 0.95  # the confidence level every interval in matcher uses
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed, so the same results give the same intervals
# metrics scored right or wrong per problem: a binomial interval (the others, bpb and loss, a bootstrap)
ACCURACY_METRICS = ("acc", "acc_norm", "acc_norm_per_byte", "acc_norm_per_token", "strict", "flexible")


def binomial_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson score interval for `successes` out of `trials` (scipy.stats.binomtest); None for 0 trials."""
    if trials <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def percentile_interval(samples: Sequence[float | None], level: float = LEVEL) -> tuple[float, float] | None:
    """The central `level` range of bootstrap samples; None when fewer than half of them have a value
    (the statistic is undefined in most resamples, e.g. a target mostly not reached)."""
    import numpy as np

    present = np.array([s for s in samples if s is not None], dtype=float)
    if len(present) == 0 or len(present) < len(samples) / 2:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(present, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_draws(statistic: Callable[[Any], Any], samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> list[Any]:
    """`statistic(rng)`, called `samples` times with one seeded generator: the statistic draws its own
    resample (of problems, of seeds, or both) from it, and may return several values of one draw."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [statistic(rng) for _ in range(samples)]


def bootstrap(statistic: Callable[[Any], float | None], samples: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval of `statistic(rng)` over `samples` draws (bootstrap_draws)."""
    return percentile_interval(bootstrap_draws(statistic, samples, seed), level)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], samples: int = BOOTSTRAP_SAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Bootstrap interval of sum(numerators) / sum(denominators) over items resampled with replacement
    (bits per byte: nats over bytes, per problem)."""
    import numpy as np

    top, bottom = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if len(top) == 0:
        return None

    def statistic(rng):
        pick = rng.integers(len(top), size=len(top))
        total = bottom[pick].sum()
        return float(top[pick].sum() / total) if total > 0 else None

    return bootstrap(statistic, samples, seed)
