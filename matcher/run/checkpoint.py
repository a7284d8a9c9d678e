"""A run's checkpoint (`checkpoints/last.pt`): everything the rest of the run depends on.

Weights and optimizer state as full (unsharded) state dicts, the RNG states, and the loop's own state
(step, loss meter, expert load since the last eval, elapsed time, the length of metrics.jsonl). Saving
is a collective under FSDP (every rank gathers, rank 0 writes, atomically). Loading reads the file on
rank 0 only and broadcasts it: a 2B run's checkpoint is ~24 GB, and eight ranks each reading it would
hold eight copies in host memory.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from matcher.atomic import write_atomic
from matcher.errors import RunError

CHECKPOINT_FORMAT = 1


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            # this rank's device only: a resume may see a different number of GPUs
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, is_main: bool,
                    loop_state: dict[str, Any]) -> None:
    """Write model, optimizer, RNG and `loop_state` (step, meter, ...). Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optim_state = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main:
        checkpoint = {"format": CHECKPOINT_FORMAT, "model": model_state, "optimizer": optim_state,
                      "rng": rng_state(), **loop_state}
        write_atomic(path, lambda handle: torch.save(checkpoint, handle))
    if dist.is_initialized():
        dist.barrier()


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
                    ) -> dict[str, Any] | None:
    """Restore model, optimizer and RNG from `path`; returns the loop state, or None when there is no
    checkpoint. Collective: rank 0 reads, the others receive (a rank 0 error reaches every rank)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    distributed = dist.is_initialized()
    main = not distributed or dist.get_rank() == 0
    checkpoint, problem = (_read(path) if main else (None, None))
    if distributed:
        found = [checkpoint is not None, problem]
        dist.broadcast_object_list(found, src=0)
        exists, problem = found
    else:
        exists = checkpoint is not None
    if problem is not None:
        raise RunError(problem)
    if not exists:
        return None
    tensors = {"model": checkpoint.pop("model"), "optimizer": checkpoint.pop("optimizer")} if main else {}
    options = StateDictOptions(full_state_dict=True, strict=True, broadcast_from_rank0=distributed)
    # Model and optimizer separately: set_state_dict skips the model on a rank whose model state is
    # empty (every rank but 0 here), and the ranks' broadcasts would no longer pair.
    set_model_state_dict(model, tensors.get("model", {}), options=options)
    set_optimizer_state_dict(model, optimizer, tensors.get("optimizer", {}), options=options)
    if distributed:  # the small rest (step, RNG, meter) as torch.save bytes: pickled tensors do not travel
        buffer = io.BytesIO()
        if main:
            torch.save(checkpoint, buffer)
        rest = [buffer.getvalue()]
        dist.broadcast_object_list(rest, src=0)
        if not main:
            checkpoint = torch.load(io.BytesIO(rest[0]), weights_only=True)
    set_rng_state(checkpoint.pop("rng"))
    return checkpoint


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        return None, (f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); delete it "
                      "to restart the run from its beginning")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        return None, f"{path}: written by another matcher version; delete it to restart the run"
    return checkpoint, None
