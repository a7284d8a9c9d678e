"""A run's checkpoint (`checkpoints/last.pt`): everything the rest of the run depends on.

Weights and optimizer state as full (unsharded) state dicts, the RNG states, and the loop's own state
(step, loss meter, expert load since the last eval, elapsed time, the length of metrics.jsonl). Saving
is a collective under FSDP (every rank gathers, rank 0 writes, atomically). Loading reads the file on
rank 0 only and broadcasts it: a 2B run's checkpoint is ~24 GB, and eight ranks each reading it would
hold eight copies in host memory.

Integrity: `last.pt.sha256` beside it lists the checksums a reader accepts. Before the new file replaces
the old one it lists both, afterwards only the new one, so a kill at any moment leaves a checkpoint
that verifies; a damaged one (a flipped bit, a cut copy) is named as damaged instead of loading and
failing later with a NaN. A checkpoint also records which model it holds, so one copied from another
run is refused before any tensor is loaded.
"""

# Function-local imports: torch's distributed checkpoint helpers (about half a second to import), only when a
# checkpoint is saved or loaded.

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from matcher.atomic import sha256_file, write_atomic, write_text_atomic
from matcher.config import ModelConfig
from matcher.errors import MatcherError, RunError

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
                    identity: dict[str, Any], loop_state: dict[str, Any]) -> None:
    """Write model, optimizer, RNG, `identity` (what the checkpoint is of: load refuses another) and
    `loop_state` (step, meter, ...). Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optim_state = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main:
        checkpoint = {"format": CHECKPOINT_FORMAT, "model": model_state, "optimizer": optim_state,
                      "rng": rng_state(), "identity": identity, **loop_state}
        _write_verified(path, checkpoint)
    if dist.is_initialized():
        dist.barrier()


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    identity: dict[str, Any]) -> dict[str, Any] | None:
    """Restore model, optimizer and RNG from `path`; returns the loop state, or None when there is no
    checkpoint. A damaged checkpoint, or one of another `identity`, is a RunError. Collective: rank 0
    reads, the others receive (a rank 0 error reaches every rank)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    distributed = dist.is_initialized()
    main = not distributed or dist.get_rank() == 0
    checkpoint, problem = (_read(path, identity) if main else (None, None))
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


def _read(path: Path, identity: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, None
    restart = "delete it (and last.pt.sha256) to restart the run from its beginning"
    try:
        return _verified(path, identity, restart)
    except OSError as error:  # returned, not raised: the other ranks wait for rank 0's answer
        return None, f"{path}: cannot be read ({error.strerror or error}); check its permissions, or {restart}"


def _verified(path: Path, identity: dict[str, Any], restart: str) -> tuple[dict[str, Any] | None, str | None]:
    accepted = _accepted_checksums(path)
    if accepted is not None and sha256_file(path) not in accepted:
        return None, (f"{path}: damaged (its checksum is not the one written; a disk error or a cut copy?); "
                      f"restore it from a backup, or {restart}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        return None, f"{path}: cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}); {restart}"
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        return None, f"{path}: written by another matcher version; {restart}"
    saved = checkpoint.get("identity")
    if saved is not None and not _same_run(saved, identity):
        differs = sorted(key for key in {**saved, **identity} if not _same_value(key, saved.get(key),
                                                                                identity.get(key)))
        return None, (f"{path}: a checkpoint of another run ({', '.join(differs)} differ from this run's "
                      f"run.yaml); put back this run's checkpoint, or {restart}")
    return checkpoint, None


def _same_run(saved: dict[str, Any], identity: dict[str, Any]) -> bool:
    return all(_same_value(key, saved.get(key), identity.get(key)) for key in {**saved, **identity})


def _same_value(key: str, saved: Any, current: Any) -> bool:
    """Model configs compare as configs, so a field added to ModelConfig since the checkpoint was
    written counts at its default (as run.yaml's own check does)."""
    if key == "model" and isinstance(saved, dict) and isinstance(current, dict):
        try:
            return ModelConfig.from_dict(saved) == ModelConfig.from_dict(current)
        except MatcherError:
            return False
    return saved == current


class _Hashing:
    """A binary writer that hashes what passes through it."""

    def __init__(self, handle: Any):
        self.handle, self.digest = handle, hashlib.sha256()
        self.error: OSError | None = None  # torch.save reports a failed write as "unexpected pos": kept

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _accepted_checksums(path: Path) -> list[str] | None:
    """The checksums a reader accepts for `path`; None for a checkpoint written before they existed."""
    try:
        accepted = json.loads(_checksum_path(path).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, OSError):
        return []  # a damaged or unreadable list accepts nothing: the checkpoint cannot be trusted either
    return [value for value in accepted if isinstance(value, str)] if isinstance(accepted, list) else []


def _write_verified(path: Path, checkpoint: dict[str, Any]) -> None:
    # Every checksum still accepted stays accepted until this save completes: after a kill between the
    # list and the rename, the file on disk may be any of them (a second kill must not strand it).
    accepted = _accepted_checksums(path) if path.is_file() else []
    previous = accepted if accepted is not None else [sha256_file(path)]  # one written before checksums
    written = {}

    def write(handle: Any) -> None:
        hashing = _Hashing(handle)
        try:
            torch.save(checkpoint, hashing)
        except RuntimeError:
            if hashing.error is not None:  # a full disk, say: named as such (write_atomic adds the path)
                raise hashing.error from None
            raise
        written["sha256"] = hashing.digest.hexdigest()
        # before the new file replaces the old: either of the two verifies
        write_text_atomic(_checksum_path(path), json.dumps([written["sha256"], *previous]) + "\n")

    write_atomic(path, write)
    write_text_atomic(_checksum_path(path), json.dumps([written["sha256"]]) + "\n")

