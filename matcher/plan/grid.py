"""Hyperparameter grids of a sweep (`matcher plan --grid train.lr=1e-3,3e-3,1e-2`).

Matching makes the costs equal; a grid makes the comparison fair: each variant is trained at several
settings and the best point is chosen per variant on a validation split. A grid is one training
setting and its values; values written `xM` are M times the plan's own value (the compute fit's
learning rate, or what --set train.FIELD gave), so `--grid train.lr=x0.33,x1,x3` scans around the fit.
`--grid dr:train.lr=...` gives one run group (a variant, or the target by its label or variant) its
own values for that setting, in place of the grid every group shares.

Every grid point of a run group is a group of its own (`matcher compare` aggregates a group's seeds),
named <label>-<setting><value>..., such as dr-lr1e-3, and its runs <group>-s<seed> when there are
several seeds, as without a grid.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from dataclasses import dataclass
from typing import Any

from matcher.config import TrainConfig
from matcher.errors import ConfigError

TRAIN_PREFIX = "train."
MULTIPLIER = "x"
MULTIPLIED_DIGITS = 3  # a value x M of the fit is rounded to this many significant digits: stable names
# settings a grid cannot scan, and why
NOT_GRIDDED = {
    "seed": "give seeds with --seeds",
    "seq_len": "the context is part of the matched model; plan again with --seq-len",
    "batch_size": "every run of a sweep takes the same tokens per step, so that the curves are comparable",
    "micro_batch_size": "it changes memory, not the training: set it with --micro-batch",
}


@dataclass(frozen=True)
class GridAxis:
    """One `--grid` option: a training setting and its values as typed."""

    field: str  # a TrainConfig field
    values: tuple[str, ...]  # as typed: numbers or xM multipliers of the plan's value
    group: str | None  # the run group (label or variant) it applies to; None: every group


def parse_grid(text: str) -> GridAxis:
    """`[GROUP:]train.FIELD=V1,V2,...`: the field checked against TrainConfig, the values checked to be
    numbers or xM multipliers (resolved against the plan's value later, by resolve_grids)."""
    spec, sep, raw = text.partition("=")
    group, colon, key = spec.strip().rpartition(":")
    key = key.strip()
    if not sep or not key.startswith(TRAIN_PREFIX) or (colon and not group.strip()):
        raise ConfigError(f"--grid takes [VARIANT:]train.FIELD=V1,V2,... such as train.lr=1e-3,3e-3,1e-2 or "
                          f"dr:train.lr=x0.33,x1,x3 (multiples of the plan's value), got {text!r}")
    name = key[len(TRAIN_PREFIX):]
    numeric = [f.name for f in dataclasses.fields(TrainConfig) if f.type in ("int", "float")]
    if name in NOT_GRIDDED:
        raise ConfigError(f"--grid {key}: cannot be a grid: {NOT_GRIDDED[name]}")
    if name not in numeric:
        close = difflib.get_close_matches(name, numeric, n=1)
        hint = f" (did you mean {TRAIN_PREFIX + close[0]!r}?)" if close else ""
        gridded = ", ".join(n for n in numeric if n not in NOT_GRIDDED)
        raise ConfigError(f"--grid {key}: not a numeric training setting{hint}. A grid scans one of: {gridded}")
    values = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not values:
        raise ConfigError(f"--grid {key}: give one or more comma-separated values, got {text!r}")
    for value in values:
        try:
            number = float(value[len(MULTIPLIER):] if value.startswith(MULTIPLIER) else value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or (value.startswith(MULTIPLIER) and number <= 0):
            raise ConfigError(f"--grid {key}: {value!r} is neither a number nor a positive multiple xM of the "
                              "plan's value (such as x0.33)")
    if len(set(values)) != len(values):
        raise ConfigError(f"--grid {key}: a value is given twice in {raw!r}")
    return GridAxis(field=name, values=values, group=group.strip() or None)


@dataclass(frozen=True)
class GridPoint:
    """One point of a run group's grid: its settings and the name suffix that tells it apart."""

    settings: dict[str, Any]  # TrainConfig field -> value
    suffix: str  # "lr1e-3-wf0.1"; "" without a grid


def resolve_grids(axes: list[GridAxis], labels: dict[str, str], train: TrainConfig) -> dict[str, dict[str, list]]:
    """Per run group label: {field: resolved values} in the order given. `labels` maps each run group's
    label to its variant (the target's label to la, say), so `la:` names the target. A group's own axis
    for a field replaces the shared one; a field given twice for one group is an error."""
    by_label: dict[str, dict[str, list]] = {label: {} for label in labels}
    shared = [axis for axis in axes if axis.group is None]
    own = [axis for axis in axes if axis.group is not None]
    shared_fields = [axis.field for axis in shared]
    for axis in shared:
        if shared_fields.count(axis.field) > 1:
            raise ConfigError(f"--grid train.{axis.field} is given twice; give all its values in one --grid")
        for label in by_label:
            by_label[label][axis.field] = _resolve_values(axis, getattr(train, axis.field))
    seen: set[tuple[str, str]] = set()
    for axis in own:
        label = _group_label(axis.group, labels)
        if (label, axis.field) in seen:
            raise ConfigError(f"--grid {axis.group}:train.{axis.field} is given twice; give all its values in one "
                              "--grid")
        seen.add((label, axis.field))
        by_label[label][axis.field] = _resolve_values(axis, getattr(train, axis.field))
    for label, grid in by_label.items():
        for field, values in grid.items():
            for value in values:  # each value must make a valid training config, checked here, not at run time
                TrainConfig.from_dict({**train.to_dict(), field: value}, where=f"--grid {label}:train.{field}")
    return {label: grid for label, grid in by_label.items() if grid}


def _group_label(group: str, labels: dict[str, str]) -> str:
    if group in labels:
        return group
    by_variant = [label for label, variant in labels.items() if variant == group]
    if len(by_variant) == 1:
        return by_variant[0]
    raise ConfigError(f"--grid {group}:...: no run group {group!r} in this plan; the groups are "
                      f"{', '.join(labels)}")


def _resolve_values(axis: GridAxis, planned: float | int) -> list[float | int]:
    values = []
    for typed in axis.values:
        if typed.startswith(MULTIPLIER):
            scaled = planned * float(typed[len(MULTIPLIER):])
            value: float | int = round(scaled) if isinstance(planned, int) else _significant(scaled)
        else:
            value = float(typed)
            if isinstance(planned, int):
                if not value.is_integer():
                    raise ConfigError(f"--grid train.{axis.field}: {typed} is not a whole number")
                value = int(value)
        values.append(value)
    if len(set(values)) != len(values):
        raise ConfigError(f"--grid train.{axis.field}={','.join(axis.values)}: two values resolve to the same "
                          f"{values} (the plan's value is {planned:g})")
    return values


def _significant(value: float) -> float:
    if value == 0:
        return 0.0
    return float(f"{value:.{MULTIPLIED_DIGITS}g}")


def grid_points(grid: dict[str, list]) -> list[GridPoint]:
    """The cartesian product of a group's grid, the first setting varying slowest; one point with an
    empty suffix when there is no grid."""
    fields = list(grid)
    abbreviations = _abbreviations(fields)
    points = []
    for values in itertools.product(*(grid[f] for f in fields)):
        settings = dict(zip(fields, values))
        suffix = "-".join(f"{abbreviations[f]}{short_number(v)}" for f, v in settings.items())
        points.append(GridPoint(settings=settings, suffix=suffix))
    return points


def _abbreviations(fields: list[str]) -> dict[str, str]:
    """lr -> lr, warmup_fraction -> wf, weight_decay -> wd: the initials of a compound name, the whole
    name of a single word, and the whole name wherever two initials would collide."""
    initials = {f: "".join(part[0] for part in f.split("_")) if "_" in f else f for f in fields}
    return {f: (a if list(initials.values()).count(a) == 1 else f) for f, a in initials.items()}


def short_number(value: float | int) -> str:
    """A value as a name part: 1e-3, 3.3e-3, 0.05 -> 5e-2, 0.1, 1, 20, 1000."""
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e4):
        return str(int(value))
    if 0.1 <= abs(value) < 1e4:
        return f"{value:g}"
    mantissa, exponent = f"{value:.{MULTIPLIED_DIGITS - 1}e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
