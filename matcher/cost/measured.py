"""Costs counted on the real PyTorch module (models/), to check the analytic cost model (matcher/cost/analytic.py)
component by component. It imports torch: the commands load it only when they measure.

Conventions (the same as the analytic model's):
- 1 FLOP = one add or one multiply; a multiply-accumulate is 2 FLOPs (fvcore counts MACs: converted).
- FLOPs are per token of the forward pass; attention scores/values are counted at full T^2 by both
  counters, and `causal_half` halves `sa_scores` (only) in one place, `_per_token`.
- Only matmul-like work is counted (linear layers, attention, router scores); norms, rotary, softmax,
  gating and the embedding lookup are elementwise or lookups and count 0 in both counters.
- Parameters are unique (a tied LM head and dr's shared layer count once).
"""

# Function-local imports: fvcore, only for `matcher cost --fvcore`.

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from matcher.config import ModelConfig
from matcher.cost.analytic import FLOP_COMPONENTS, PARAM_COMPONENTS, check_activation_dtype, param_counts
from matcher.cost.live_bytes import LiveBytes
from matcher.errors import ConfigError, MatcherError
from matcher.models import Model

FVCORE_MAX_PARAMS = 300_000_000  # fvcore runs real weights on the CPU: 300M fp32 parameters is 1.2 GB

# parameter name -> component; first match wins
_PARAM_RULES = [
    (r"tok_emb\.weight", "embedding"),
    (r"lm_head\.weight", "lm_head"),
    (r"norm\.(weight|bias)", "final_norm"),
    (r"layers\.\d+\.(attn_norm|da_norm|ffn_norm|norm)\.(weight|bias)", "norms"),
    (r"layers\.\d+\.attn\..+", "sa"),
    (r"layers\.\d+\.depth_attn\..+", "da"),
    (r"layers\.\d+\.ffn\.router\..+", "router"),
    (r"layers\.\d+\.ffn\.experts\..+", "experts"),
    (r"layers\.\d+\.ffn\.shared\..+", "shared_experts"),
    (r"layers\.\d+\.ffn\.w[123]\.weight", "dense_mlp"),
]

# module path -> component of the FLOPs done in that module itself (not in its submodules). What
# attention does outside its projections is the score/value work: QK^T and AV.
_FLOP_RULES = [
    (r"layers\.\d+\.attn\.w[qkvo]", "sa_proj"),
    (r"layers\.\d+\.attn", "sa_scores"),
    (r"layers\.\d+\.depth_attn\.w[qkvo]", "da_proj"),
    (r"layers\.\d+\.depth_attn", "da_scores"),
    (r"layers\.\d+\.ffn\.router(\.proj)?", "router"),
    (r"layers\.\d+\.ffn\.experts", "experts"),
    (r"layers\.\d+\.ffn\.shared(\.w[123])?", "shared_experts"),
    (r"layers\.\d+\.ffn(\.w[123])?", "dense_mlp"),
    (r"lm_head", "lm_head"),
]


def _component(name: str, rules: list[tuple[str, str]], what: str) -> str:
    for pattern, component in rules:
        if re.fullmatch(pattern, name):
            return component
    raise RuntimeError(f"{what} {name!r} belongs to no cost component: extend the rules in measure.py")


def _meta_model(cfg: ModelConfig):
    with torch.device("meta"), _SkipInit():
        return Model(cfg)


_INIT_OPS = ("normal_", "uniform_", "fill_", "zero_", "trunc_normal_")


def _skip_init_mode():
    class SkipInit(TorchFunctionMode):
        """Meta tensors hold no values, so initialising them is moot; and the meta path of `normal_`
        imports torch._dynamo (~3 s on 2 cores, more than the whole count takes), so it is skipped."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in _INIT_OPS:
                tensor = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by keyword
                if getattr(tensor, "is_meta", False):
                    return tensor
            return func(*args, **kwargs)

    return SkipInit()


class _SkipInit:
    def __enter__(self):
        self.mode = _skip_init_mode()
        return self.mode.__enter__()

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def measured_params(cfg: ModelConfig) -> dict[str, int]:
    """Unique parameters of the module built on the meta device, by component, plus "total"."""
    counts = dict.fromkeys(PARAM_COMPONENTS, 0)
    for name, p in _meta_model(cfg).named_parameters():  # de-duplicates tied and shared weights
        counts[_component(name, _PARAM_RULES, "parameter")] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def _exclusive(inclusive: dict[str, float]) -> dict[str, float]:
    """Per-module counts that include submodules -> counts of the module's own ops. A module's parent is
    the longest proper prefix that was counted (containers such as `layers` are never called)."""
    own = dict(inclusive)
    for name, count in inclusive.items():
        if not name:
            continue
        parts = name.split(".")
        for cut in range(len(parts) - 1, -1, -1):
            parent = ".".join(parts[:cut])
            if parent in inclusive:
                own[parent] -= count
                break
    return own


def _by_component(inclusive: dict[str, float], total: float) -> dict[str, float]:
    flops = dict.fromkeys(FLOP_COMPONENTS, 0.0)
    for name, count in _exclusive(inclusive).items():
        if count == 0:
            continue
        if not name or re.fullmatch(r"layers\.\d+", name):
            raise RuntimeError(f"{count} FLOPs outside any component (in {name or 'the model'!r})")
        flops[_component(name, _FLOP_RULES, "module")] += count
    if abs(sum(flops.values()) - total) > 1e-9 * max(total, 1):
        raise RuntimeError(f"components sum to {sum(flops.values())} FLOPs of {total} counted")
    return flops


def _per_token(flops: dict[str, float], tokens: int, causal_half: bool) -> dict[str, float]:
    """The one place where the causal convention is applied: a causal mask halves QK^T and AV."""
    per_token = {k: v / tokens for k, v in flops.items()}
    if causal_half:
        per_token["sa_scores"] /= 2
    per_token["total"] = sum(per_token[k] for k in FLOP_COMPONENTS)
    return per_token


def measured_forward_flops(cfg: ModelConfig, seq_len: int, batch: int = 1, causal_half: bool = False,
                           counter: str = "torch") -> dict[str, float]:
    """Forward FLOPs per token by component, and "total".

    counter="torch": torch.utils.flop_counter.FlopCounterMode on the meta device, where SDPA decomposes
    into batched matmuls and is counted exactly, and the experts' grouped GEMMs are counted by the formula
    registered with their op (models/kernels.py): their work is the routed rows times one
    expert's FLOPs per row whatever the (here unknown) routing. Works for any size.
    counter="fvcore": fvcore's FlopCountAnalysis jit-traces the model on small real CPU tensors, with
    handles for scaled_dot_product_attention and the grouped GEMM, which it does not know; MACs are
    converted to FLOPs.
    """
    if counter == "torch":
        inclusive, total = _flop_counter_forward(cfg, seq_len, batch)
    elif counter == "fvcore":
        inclusive, total = _fvcore_forward(cfg, seq_len, batch)
    else:
        raise ConfigError(f"counter must be torch or fvcore, got {counter!r}")
    return _per_token(_by_component(inclusive, total), batch * seq_len, causal_half)


EXTRAPOLATION_DEPTHS = (1, 2, 3)


def measured_costs_from_three_depths(cfg: ModelConfig, seq_len: int, batch: int = 1,
                                     causal_half: bool = False) -> tuple[dict[str, int], dict[str, float]]:
    """Parameters and forward FLOPs per token by component (as measured_params and measured_forward_flops)
    of `cfg`, counted on the real module at depths 1, 2 and 3 only and extrapolated to cfg.depth.

    Every count is a polynomial of degree at most 2 in depth: la adds one identical layer per depth,
    dr/dr_da apply one layer once more (parameters constant, FLOPs linear), and depth attention at depth
    index i attends over i + 1 states (its scores quadratic). Three points fix such a polynomial, so
    the extrapolation is exact (tests/test_measure.py checks it against the whole model), and the count
    costs three shallow models instead of one `depth`-deep one."""
    if cfg.depth <= len(EXTRAPOLATION_DEPTHS):
        return measured_params(cfg), measured_forward_flops(cfg, seq_len, batch, causal_half)
    points = [cfg.replace(depth=d) for d in EXTRAPOLATION_DEPTHS]
    params = [measured_params(p) for p in points]
    flops = [measured_forward_flops(p, seq_len, batch, causal_half) for p in points]
    steps = cfg.depth - 1  # f(D) = f1 + (D-1) (f2 - f1) + (D-1)(D-2)/2 (f3 - 2 f2 + f1)
    curvature = steps * (steps - 1) // 2

    def extrapolate(f1, f2, f3):
        return f1 + steps * (f2 - f1) + curvature * (f3 - 2 * f2 + f1)

    return ({k: extrapolate(*(p[k] for p in params)) for k in params[0]},
            {k: extrapolate(*(f[k] for f in flops)) for k in flops[0]})


def _meta_tokens(seq_len: int, batch: int):
    return torch.zeros(batch, seq_len, dtype=torch.long, device="meta")


def _flop_counter_forward(cfg: ModelConfig, seq_len: int, batch: int) -> tuple[dict[str, float], float]:
    model = _meta_model(cfg)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(_meta_tokens(seq_len, batch))
    # keys are "Global" and module paths prefixed by the root's class name: "Model.layers.0.attn.wq"
    root = type(model).__name__
    inclusive = {
        re.sub(rf"^{root}\.?", "", name): float(sum(ops.values()))
        for name, ops in counter.get_flop_counts().items()
        if name != "Global"
    }
    return inclusive, float(counter.get_total_flops())


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: QK^T and AV, each B * heads * Tq * Tk * head_dim MACs (full T^2, also when causal;
    `causal_half` applies the convention afterwards)."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])  # (..., heads, Tq, hs), (..., kv_heads, Tk, hs)
    batch_heads = 1
    for size in q[:-2]:
        batch_heads *= size
    return 2 * batch_heads * q[-2] * k[-2] * q[-1]


def _grouped_mm_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle: a (M, K) @ b (G, K, N) is M * K * N MACs, each row meeting one group's weights."""
    from fvcore.nn.jit_handles import get_shape

    a, b = get_shape(inputs[0]), get_shape(inputs[1])
    return a[0] * a[1] * b[-1]


def _fvcore_forward(cfg: ModelConfig, seq_len: int, batch: int) -> tuple[dict[str, float], float]:
    with warnings.catch_warnings():  # fvcore scripts a loss function at import: torch.jit.script is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis

    n_params = param_counts(cfg).total  # the limit needs no model: the analytic count is exact
    if n_params > FVCORE_MAX_PARAMS:
        raise MatcherError(
            f"fvcore needs real weights and this model has {n_params:,} parameters (limit "
            f"{FVCORE_MAX_PARAMS:,}): count it with counter='torch' (meta device, any size)"
        )
    generator = torch.Generator().manual_seed(0)
    model = Model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=generator)
    analysis = FlopCountAnalysis(model, (idx,))
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    analysis.set_op_handle("matcher::grouped_mm", _grouped_mm_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        macs_by_module = analysis.by_module()
        total_macs = analysis.total()
    return {name: 2.0 * macs for name, macs in macs_by_module.items()}, 2.0 * total_macs


def measured_training_memory(cfg: ModelConfig, batch: int, seq_len: int, recompute: str = "none",
                             activation_dtype: str = "fp32", device: str = "fake") -> dict[str, int]:
    """Bytes of one AdamW training step: "weights", "gradients", "optimizer", "activations", "peak".

    device="fake" (default, any size, no memory used): the model and data are FakeTensorMode tensors
    on the CPU, so every op runs its shape-only kernel (SDPA takes the same flash path as a real CPU
    run; the experts' grouped GEMMs save the same bytes whatever the routing), and the LiveBytes
    dispatch mode (matcher/cost/live_bytes.py) follows every storage from its creation to its release. Two
    steps run and the second is measured, so AdamW's fp32 states already exist.
    - weights, gradients, optimizer: parameter (fp32), .grad (fp32) and AdamW state bytes (exp_avg,
      exp_avg_sq and a step counter per tensor).
    - activations: bytes the forward leaves alive for backward (end of forward minus start), logits and
      loss included; with recompute="full" only each applied layer's input and what lies outside layers.
    - peak: the most bytes live at any moment of the step (buffers and backward/optimizer temporaries
      included), the number to compare with a GPU's memory.
    device="cuda": the same step on the GPU with real tensors; activations from torch.cuda.memory_allocated
    around the forward, peak from torch.cuda.max_memory_allocated (the caching allocator's rounding
    included).

    activation_dtype "bf16" runs the step under autocast to bfloat16 (weights, grads and AdamW stay
    fp32), as the trainer does on GPUs.
    """
    if recompute not in ("none", "full"):
        raise ConfigError(f"recompute must be none or full, got {recompute!r}")
    check_activation_dtype(activation_dtype)
    if device == "fake":
        return _fake_training_memory(cfg, batch, seq_len, recompute == "full", activation_dtype)
    if device == "cuda":
        return _cuda_training_memory(cfg, batch, seq_len, recompute == "full", activation_dtype)
    raise ConfigError(f"device must be fake or cuda, got {device!r}")


def _training_step(model, optimizer, idx, activation_dtype: str, after_forward=None) -> None:
    with torch.autocast(idx.device.type, dtype=torch.bfloat16, enabled=activation_dtype == "bf16"):
        _, loss = model(idx, idx)
    if after_forward is not None:
        after_forward()
    loss.backward()
    del loss  # the step's graph and logits go here, as in a training loop
    optimizer.step()


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _optimizer_state(optimizer) -> list:
    return [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]


def _memory_by_kind(model, optimizer) -> dict[str, int]:
    return {
        "weights": _nbytes(model.parameters()),
        "gradients": _nbytes(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer": _nbytes(_optimizer_state(optimizer)),
    }


def _fake_training_memory(cfg: ModelConfig, batch: int, seq_len: int, recompute: bool,
                          activation_dtype: str) -> dict[str, int]:
    with FakeTensorMode():
        model = Model(cfg)
        model.recompute = recompute
        optimizer = torch.optim.AdamW(model.parameters())
        idx = torch.zeros(batch, seq_len, dtype=torch.long)
        _training_step(model, optimizer, idx, activation_dtype)  # creates the optimizer state
        optimizer.zero_grad(set_to_none=True)
        tracker = LiveBytes()
        tracker.track([*model.parameters(), *model.buffers(), idx, *_optimizer_state(optimizer)])
        start_bytes, at_forward_end = tracker.live_bytes, []
        with tracker:
            _training_step(model, optimizer, idx, activation_dtype,
                           after_forward=lambda: at_forward_end.append(tracker.live_bytes))
        return {**_memory_by_kind(model, optimizer), "activations": at_forward_end[0] - start_bytes,
                "peak": tracker.peak_bytes}


def _cuda_training_memory(cfg: ModelConfig, batch: int, seq_len: int, recompute: bool,
                          activation_dtype: str) -> dict[str, int]:
    if not torch.cuda.is_available():
        raise MatcherError("device='cuda' needs a CUDA GPU; use device='fake' to count without one")
    model = Model(cfg).cuda()
    model.recompute = recompute
    optimizer = torch.optim.AdamW(model.parameters())
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len), device="cuda")
    _training_step(model, optimizer, idx, activation_dtype)  # creates the optimizer state
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start_bytes, at_forward_end = torch.cuda.memory_allocated(), []
    _training_step(model, optimizer, idx, activation_dtype,
                   after_forward=lambda: at_forward_end.append(torch.cuda.memory_allocated()))
    torch.cuda.synchronize()
    return {**_memory_by_kind(model, optimizer), "activations": at_forward_end[0] - start_bytes,
            "peak": torch.cuda.max_memory_allocated()}
