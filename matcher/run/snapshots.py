"""Model checkpoints at every eval point: `checkpoints/step-<step>.safetensors`, the model only (no
optimizer), so any point of a curve can be scored again later (`matcher eval`).

- Weights in the dtype the run computes in: bf16 for a bf16 run (autocast casts every matmul weight to
  bf16 anyway, half the bytes of fp32), fp32 for an fp32 run (a bf16 copy of fp32 weights would not
  reproduce the logged numbers). Buffers (the routers' balancing bias) stay fp32: they choose experts.
- Tied embeddings are stored once (safetensors refuses shared tensors) and tied again on loading.
- The header's metadata records the step, tokens, run and model config, so a checkpoint is checked
  against the run.yaml beside it.
- Keep policy (train.keep_checkpoints): 0 keeps every one; N keeps the newest N. The resume
  checkpoint last.pt is separate and always kept.
- Loading refuses a checkpoint that cannot be read or holds a NaN or infinite value: scored, it would
  store an accuracy of 0 and a NaN loss as if they were results.
- Saving is collective under FSDP (the full state dict is gathered); rank 0 writes, atomically.
"""

# Function-local imports: safetensors, only when a snapshot is written or read, and torch's distributed checkpoint
# helpers (about half a second to import), only when one is written.

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from matcher.atomic import write_atomic
from matcher.config import ModelConfig
from matcher.errors import RunError
from matcher.models import Model

FORMAT = "matcher-model-1"
_NAME = re.compile(r"step-(\d+)\.safetensors$")


def snapshot_path(run_path: Path, step: int) -> Path:
    return Path(run_path) / "checkpoints" / f"step-{step:08d}.safetensors"


def list_snapshots(run_path: Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's model checkpoints, by step."""
    folder = Path(run_path) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.safetensors") if (m := _NAME.search(p.name))]
    return sorted(found)


def save_snapshot(run_path: Path, model: torch.nn.Module, cfg: ModelConfig, *, step: int, tokens: int,
                  run: str, dtype: torch.dtype, is_main: bool, keep: int = 0) -> Path:
    """Write the model at `step`, then delete the oldest beyond `keep` (0: keep all). Collective."""
    from safetensors.torch import save
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    path = snapshot_path(run_path, step)
    if is_main:
        if cfg.tie_embeddings:
            state.pop("lm_head.weight", None)
        params = {name for name, _ in model.named_parameters()}
        tensors = {name: (t.to(dtype) if name in params and t.is_floating_point() else t).contiguous()
                   for name, t in state.items()}
        metadata = {"format": FORMAT, "step": str(step), "tokens": str(tokens), "run": run,
                    "dtype": str(dtype).removeprefix("torch."), "model": json.dumps(cfg.to_dict())}
        data = save(tensors, metadata=metadata)
        write_atomic(path, lambda handle: handle.write(data))
        if keep:
            for _, old in list_snapshots(run_path)[:-keep]:
                old.unlink(missing_ok=True)

    if dist.is_initialized():
        dist.barrier()
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as error:  # the library raises its own error types for a cut or foreign file
        raise RunError(f"{path}: not a readable safetensors checkpoint ({error}); delete it, or retrain") from None
    if meta.get("format") != FORMAT:
        raise RunError(f"{path}: not a matcher model checkpoint (format {meta.get('format')!r})")
    return {"step": int(meta["step"]), "tokens": int(meta["tokens"]), "run": meta["run"],
            "dtype": meta["dtype"], "model": json.loads(meta["model"])}


def load_snapshot(path: Path, cfg: ModelConfig, *, depth: int | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model at `path` (fp32 parameters, eval mode) and its metadata; `cfg` (the run's) must be the
    one it was saved with. `depth`: a dr/dr_da model applied `depth` times instead (test-time depth):
    the shared layer's per-depth balancing bias is the trained one for the depths it has, the last
    trained depth's beyond them, and da_rope forward_reversed keeps counting its reversed index from the
    trained depth."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if ModelConfig.from_dict(meta["model"]) != cfg:
        raise RunError(f"{path}: a checkpoint of another model than this run's run.yaml; put back this "
                       "run's checkpoints")
    try:
        state = load_file(str(path))
    except Exception as error:  # the library raises its own error types for a cut or damaged file
        raise RunError(f"{path}: its tensors cannot be read ({error}); delete it, or retrain") from None
    damaged = [name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if damaged:
        raise RunError(f"{path}: {len(damaged)} tensor(s) hold NaN or infinite values (first: {damaged[0]}); the "
                       "checkpoint is damaged or the run diverged: score another step, or retrain")
    trained_depth = cfg.depth
    if depth is not None and depth != cfg.depth:
        if cfg.variant == "la":
            raise RunError(f"--depth {depth}: la has {cfg.depth} distinct layers, so it runs at its trained depth "
                           "only; test-time depth is for dr and dr_da")
        cfg = cfg.replace(depth=depth)
        for name, tensor in list(state.items()):
            if name.endswith("router.bias"):  # (trained depth, n_experts) -> (depth, n_experts)
                rows = torch.arange(depth).clamp(max=tensor.shape[0] - 1)
                state[name] = tensor[rows].contiguous()
    model = Model(cfg, trained_depth=trained_depth)
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = {"lm_head.weight"} if cfg.tie_embeddings else set()
    if unexpected or set(missing) - allowed:
        raise RunError(f"{path}: its tensors do not fit the model (missing {sorted(set(missing) - allowed)[:3]}, "
                       f"unexpected {unexpected[:3]})")
    return model.to(device).eval(), meta
