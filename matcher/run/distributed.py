"""Data parallelism for one run: process-group setup from torchrun's environment, DDP or FSDP2
wrapping, and the few collectives the training loop needs. With one process everything here is a
no-op, so the same loop runs alone, under torchrun on CPU (gloo) and on GPUs (nccl)."""

# Function-local imports: FSDP2 (about half a second to import), only when a run shards with it.

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from matcher.errors import RunError


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(device_type: str | None, index: int = 0) -> torch.device:
    """`device_type` cpu, cuda or cuda:N (None: CUDA when available) as a device, or one clear error: an
    unknown name, or cuda where torch sees no GPU (a CPU-only build of torch, or no GPU visible)."""
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    name, _, number = device_type.partition(":")
    if name not in ("cpu", "cuda") or (number and not (name == "cuda" and number.isdigit())):
        raise RunError(f"--device {device_type!r} is not a device; give cpu or cuda")
    index = int(number) if number else index
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build: install a CUDA build of torch to use a GPU"
               if torch.version.cuda is None else "no GPU is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES")
        raise RunError(f"device cuda was asked for, but torch sees no CUDA GPU here ({why}); or use --device cpu")
    return torch.device("cuda", index)


def init_world(device_type: str | None = None) -> tuple[World, torch.device]:
    """Join torchrun's process group when there is one; pick this rank's device (`device_type` cpu or
    cuda; default: CUDA when available)."""
    world = World(rank=int(os.environ.get("RANK", 0)), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                  size=int(os.environ.get("WORLD_SIZE", 1)))
    device = pick_device(device_type, world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world.size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=(
            device if device.type == "cuda" else None))
    return world, device


def resolve_dtype(setting: str, device: torch.device) -> str:
    """train.dtype for a device: auto is bf16 on CUDA and fp32 elsewhere; fp32 and bf16 as given."""
    return setting if setting != "auto" else "bf16" if device.type == "cuda" else "fp32"


def autocast_for(dtype: str, device: torch.device):
    """The context training and evaluation run their forwards in: bf16 autocast, or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device, *, fsdp: bool,
         param_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The module the training step calls. FSDP2 shards `model` in place, so checkpointing and evaluation
    keep using `model` itself; DDP returns a wrapper.

    FSDP2 units: each layer's sequence attention, depth attention and feed-forward part separately, then
    the layer (its norms), then the root (embedding, final norm, head), so no unit is a whole 2B layer.
    dr/dr_da apply ONE layer `depth` times: its units stay gathered from their first application to the
    end of backward (reshard_after_forward=False) instead of being gathered again at every application.
    With `param_dtype` (bf16 training), parameters are gathered in it and gradients reduced in fp32."""
    if world.size == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = (MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
                  if param_dtype is not None else MixedPrecisionPolicy())
        reshard = len(model.layers) == model.cfg.depth  # la: each layer is applied once
        for layer in model.layers:
            for part in (layer.attn, layer.depth_attn, layer.ffn):
                if part is not None:
                    fully_shard(part, mp_policy=policy, reshard_after_forward=reshard)
            fully_shard(layer, mp_policy=policy, reshard_after_forward=reshard)
        fully_shard(model, mp_policy=policy)
        return model

    # no find_unused_parameters: every parameter gets a gradient in every step, also a routed expert that
    # no token of this rank's batch chose (the grouped GEMM's weight gradient covers all experts: zero)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def gradient_sync(train_model: torch.nn.Module, enabled: bool):
    """A context in which backward passes do (enabled) or do not (accumulating micro-batches) reduce
    gradients over ranks: DDP's no_sync, FSDP2's set_requires_gradient_sync; nothing to do alone."""
    module = getattr(train_model, "_orig_mod", train_model)  # under torch.compile
    if enabled or not dist.is_initialized():
        if hasattr(module, "set_requires_gradient_sync"):
            module.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if hasattr(module, "no_sync"):
        return module.no_sync()
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(False)
    return contextlib.nullcontext()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over ranks in one collective."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
