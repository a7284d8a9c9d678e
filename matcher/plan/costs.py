"""The named costs of one config, each computed in one place.

COSTS says, for every cost the planner matches (search.QUANTITIES) or a sweep records
(runs[*].predicted, copied into run.yaml), how it comes from matcher.cost.analytic and the settings
it is computed at; the search's costs_of and the sweep's predict both read it. The name a sweep
records a cost under is part of its entry (`recorded`), so the two vocabularies cannot drift apart.

The settings a cost depends on are the parameters of its formula, so whether a value computed at
other settings can stand in for it (`compute(known=...)`) is read off the formula itself, not a list
kept beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from matcher.config import ModelConfig
from matcher.cost.analytic import (
    Conventions,
    body_train_flops_per_token,
    inference_cache_bytes,
    inference_memory_bytes,
    memory,
    param_counts,
    train_flops_per_token,
)

# the settings a formula may take besides the config, resolved against it (_resolve)
SETTINGS = ("conventions", "batch", "seq_len", "inference_batch", "context")
# A float holds every integer up to 2^53 exactly; an integer cost read back from a float above that
# (9 PB, 9e15 FLOPs per token) is recomputed rather than recorded off by a rounding.
_EXACT = 2**53


class Settings(Protocol):
    """What costs are computed at (search.MatchSpec is one)."""

    conventions: Conventions
    batch: int  # sequences per training step (training memory)
    seq_len: int | None  # tokens per sequence; None: the config's
    inference_batch: int  # sequences decoded at once (inference memory and caches)
    inference_context: int | None  # context tokens per decoded sequence; None: seq_len


@dataclass(frozen=True)
class Cost:
    """One named cost: its formula, and whether and under which name a sweep records it."""

    formula: Callable[..., int | float]  # (cfg, *settings it depends on, by SETTINGS name) -> value
    recorded: str | None = None  # the name a sweep records it under; None: matched, not recorded
    needs: tuple[str, ...] = field(init=False)  # the formula's settings

    def __post_init__(self) -> None:
        code = self.formula.__code__
        needs = code.co_varnames[1:code.co_argcount]
        unknown = [name for name in needs if name not in SETTINGS]
        if unknown:  # a typo would otherwise surface as a TypeError in the middle of a search
            raise TypeError(f"a cost formula takes the config and settings among {SETTINGS}, got {unknown}")
        object.__setattr__(self, "needs", needs)


# In the order a sweep records them (runs[*].predicted is written in this order).
COSTS: dict[str, Cost] = {
    "flops": Cost(lambda cfg, conventions, seq_len: train_flops_per_token(cfg, conventions, seq_len),
                  recorded="train_flops_per_token"),
    "params": Cost(lambda cfg: param_counts(cfg).total, recorded="total_params"),
    "active_params": Cost(lambda cfg: param_counts(cfg).active, recorded="active_params"),
    "applied_params": Cost(lambda cfg: param_counts(cfg).applied, recorded="applied_params"),
    "train_memory_bytes": Cost(lambda cfg, conventions, batch, seq_len:
                               memory(cfg, batch, seq_len, conventions).training_bytes,
                               recorded="train_memory_bytes"),
    "inference_cache_bytes": Cost(lambda cfg, conventions, inference_batch, context:
                                  inference_cache_bytes(cfg, inference_batch, context, conventions),
                                  recorded="inference_cache_bytes"),
    "body_params": Cost(lambda cfg: param_counts(cfg).non_embedding, recorded="body_params"),
    "body_flops": Cost(lambda cfg, conventions, seq_len: body_train_flops_per_token(cfg, conventions, seq_len),
                       recorded="body_train_flops_per_token"),
    "inference_memory_bytes": Cost(lambda cfg, conventions, inference_batch, context:
                                   inference_memory_bytes(cfg, inference_batch, context, conventions)),
}
# recorded name -> cost name, in the order a sweep writes them
RECORDED = {cost.recorded: name for name, cost in COSTS.items() if cost.recorded is not None}


@dataclass(frozen=True)
class Computed:
    """Costs of one config already computed (e.g. a search.Match's), and the settings they were computed at."""

    values: Mapping[str, float]  # cost name -> value
    at: Settings


def _resolve(cfg: ModelConfig, settings: Settings) -> dict[str, object]:
    """The SETTINGS for `cfg`, defaults filled in: settings written differently but meaning the same compare
    equal (seq_len None and the config's seq_len)."""
    seq_len = cfg.seq_len if settings.seq_len is None else settings.seq_len
    context = seq_len if settings.inference_context is None else settings.inference_context
    return {"conventions": settings.conventions, "batch": settings.batch, "seq_len": seq_len,
            "inference_batch": settings.inference_batch, "context": context}


def _reusable(name: str, at: dict[str, object], known: Computed | None, then: dict[str, object] | None) -> bool:
    """Whether `known` holds cost `name` computed at the settings its formula reads, exactly."""
    if known is None or name not in known.values or abs(known.values[name]) >= _EXACT:
        return False
    return all(at[setting] == then[setting] for setting in COSTS[name].needs)


def compute(cfg: ModelConfig, settings: Settings, names: Iterable[str],
            known: Computed | None = None) -> dict[str, int | float]:
    """The costs `names` of `cfg` at `settings`, as the formulas give them (integers for counts and bytes).
    A value in `known` (costs of this same config) is taken instead where it was computed at the settings
    its cost depends on; it may be the float of an integer cost, which callers convert alike (float or round)."""
    at = _resolve(cfg, settings)
    then = _resolve(cfg, known.at) if known is not None else None
    values = {}
    for name in names:
        if _reusable(name, at, known, then):
            values[name] = known.values[name]
        else:
            cost = COSTS[name]
            values[name] = cost.formula(cfg, *(at[setting] for setting in cost.needs))
    return values
