"""What a sweep costs before it is launched: each run's tokens and training compute in GPU-hours at a
named device and an assumed MFU (matcher.cost.gpu_hours), and whether the training data on disk holds
the tokens a run reads (from the shard manifest, so a repeat of the data is announced before it happens).
"""

# Function-local imports: the shard manifest's name (its module loads numpy), only when a corpus on disk is counted.

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.cost.gpu_hours import device, gpu_hours
from matcher.data.math_task import MATH_DATA


@dataclass(frozen=True)
class GroupCost:
    group: str  # the run group: a label, or a label's grid point
    runs: int  # its seeds
    tokens_per_run: int
    train_flops_per_run: float  # model FLOPs: train_flops_per_token x tokens
    gpu_hours_per_run: float


@dataclass(frozen=True)
class DataSupply:
    source: str  # a shard folder or file, or the generator's name
    tokens_needed: int  # what one run reads from it (its share of a mixture)
    tokens_on_disk: int | None  # None: generated on the fly, never repeated

    @property
    def epochs(self) -> float | None:
        return None if self.tokens_on_disk is None else self.tokens_needed / max(1, self.tokens_on_disk)


@dataclass(frozen=True)
class LaunchCost:
    gpu: str
    mfu: float
    groups: list[GroupCost]
    data: list[DataSupply]

    @property
    def total_gpu_hours(self) -> float:
        return sum(g.gpu_hours_per_run * g.runs for g in self.groups)

    @property
    def peak_flops(self) -> float:
        return device(self.gpu).peak_bf16_flops

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "mfu": self.mfu, "peak_bf16_flops": self.peak_flops,
                "peak_source": device(self.gpu).source, "total_gpu_hours": self.total_gpu_hours,
                "groups": [g.__dict__ for g in self.groups],
                "data": [{**d.__dict__, "epochs": d.epochs} for d in self.data]}


def launch_cost(plan, gpu: str, mfu: float) -> LaunchCost:
    """Per run group (grid point) its runs, tokens and GPU-hours; per data source what one run reads
    of it against what it holds. `plan` is a matcher.plan.planner.Plan."""
    groups = []
    for run in plan.runs:
        for point in plan.grid_points(run.label):
            tokens = int(point.settings.get("total_tokens", plan.train.total_tokens))
            flops = run.predicted["train_flops_per_token"] * tokens
            groups.append(GroupCost(group="-".join(filter(None, (run.label, point.suffix))), runs=len(plan.seeds),
                                    tokens_per_run=tokens, train_flops_per_run=flops,
                                    gpu_hours_per_run=gpu_hours(flops, gpu, mfu)))
    most_tokens = max(g.tokens_per_run for g in groups)
    return LaunchCost(gpu=gpu, mfu=mfu, groups=groups, data=data_supply(plan.train.data, most_tokens))


def data_supply(data: str | dict, tokens_per_run: int) -> list[DataSupply]:
    """What one run reads of each source of train.data (a mixture's share by weight) and what it holds."""
    sources = data if isinstance(data, dict) else {data: 1.0}
    total_weight = sum(float(w) for w in sources.values())
    supply = []
    for source, weight in sources.items():
        needed = round(tokens_per_run * float(weight) / total_weight)
        held = None if source in MATH_DATA else tokens_on_disk(Path(source))
        supply.append(DataSupply(source=str(source), tokens_needed=needed, tokens_on_disk=held))
    return supply


def tokens_on_disk(path: Path) -> int | None:
    """The training tokens of a shard folder (its manifest's count: the train split, without a held-out
    val split) or of legacy .bin shards (their size); None where nothing readable is there yet (the
    sweep's own data check reports that)."""
    from matcher.data.shards import MANIFEST

    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            tokens = json.loads(manifest.read_text(encoding="utf-8")).get("tokens")
        except (OSError, ValueError, AttributeError):
            return None
        return tokens if isinstance(tokens, int) else None
    shards = sorted(path.glob("*.bin")) if path.is_dir() else [path] if path.suffix == ".bin" else []
    total = 0
    for shard in shards:
        try:
            dtype = json.loads(shard.with_suffix(".json").read_text(encoding="utf-8")).get("dtype")
            total += shard.stat().st_size // {"uint16": 2, "uint32": 4}[dtype]
        except (OSError, ValueError, KeyError, AttributeError):
            return None
    return total or None
