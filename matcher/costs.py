"""The analytic cost model: parameters, FLOPs and memory of a ModelConfig, by formula (no torch).

Every cost matcher prints, searches on or writes into a sweep is computed here, once. The formulas
follow the module inventory of `models/` exactly (tests/test_costs_vs_measured.py counts the real
modules and compares component by component).

Conventions (`Conventions`, printed with every number):
- 1 FLOP = one add or one multiply; a multiply-accumulate is 2 FLOPs. Only matrix products are
  counted (projections, attention scores and values, experts, router, LM head); norms, rotary,
  softmax, activations and routing bookkeeping are not, as in PaLM/Megatron accounting.
- Training (model) FLOPs = forward + backward = 3 x forward, no recomputation. Hardware FLOPs with
  full activation recomputation add one more forward: 4 x forward.
- Sequence-attention scores/values are counted over the full context unless `causal_half`, which
  halves them (Megatron's convention for a causal mask).
- Depth attention at depth index i (0-based) attends over i + 1 depth states of the same token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from matcher.config import ModelConfig
from matcher.errors import ConfigError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}

PARAM_COMPONENTS = ("embedding", "lm_head", "final_norm", "norms", "sa", "da", "router", "experts",
                    "shared_experts", "dense_mlp")
FLOP_COMPONENTS = ("sa_proj", "sa_scores", "da_proj", "da_scores", "router", "experts", "shared_experts",
                   "dense_mlp", "lm_head")


@dataclass(frozen=True, kw_only=True)
class Conventions:
    causal_half: bool = False  # halve sequence-attention score/value FLOPs for the causal mask
    recompute: str = "none"  # activation recomputation in training: none | full (per applied layer)
    weight_dtype: str = "fp32"  # master weights
    grad_dtype: str = "fp32"
    optimizer_dtype: str = "fp32"  # AdamW keeps two states per parameter
    activation_dtype: str = "bf16"  # saved activations (bf16 autocast on GPU; fp32 on CPU)
    cache_dtype: str = "bf16"  # inference KV and depth-attention caches

    def __post_init__(self) -> None:
        if self.recompute not in ("none", "full"):
            raise ConfigError(f"recompute must be none or full, got {self.recompute!r}")
        for name in ("weight_dtype", "grad_dtype", "optimizer_dtype", "activation_dtype", "cache_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise ConfigError(f"{name} must be one of {', '.join(DTYPE_BYTES)}, got {getattr(self, name)!r}")

    def describe(self) -> list[str]:
        return [
            "1 FLOP = one add or one multiply (a multiply-accumulate = 2 FLOPs); matrix products only",
            "training FLOPs = 3 x forward (model FLOPs, no recomputation); "
            "hardware FLOPs with full recomputation = 4 x forward",
            "sequence-attention scores " + ("halved for the causal mask" if self.causal_half
                                            else "counted over the full context (causal mask not halved)"),
            f"memory: weights {self.weight_dtype}, gradients {self.grad_dtype}, AdamW 2 states "
            f"{self.optimizer_dtype}, activations {self.activation_dtype} (recompute {self.recompute}), "
            f"caches {self.cache_dtype}",
            "parameters: total = unique; active = per application of each unique layer (top_k routed "
            "experts) + embeddings; applied = summed over all depth applications + embeddings",
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------- parameters
def _mlp_matrices(cfg: ModelConfig) -> int:
    return 3 if cfg.mlp_act == "swiglu" else 2


def expert_params(cfg: ModelConfig) -> int:
    """One expert (or the dense MLP): d_model x d_ff matrices."""
    return _mlp_matrices(cfg) * cfg.d_model * cfg.d_ff


def sa_params(cfg: ModelConfig) -> int:
    return cfg.d_model * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)


def da_params(cfg: ModelConfig) -> int:
    return 4 * cfg.d_model * cfg.da_heads * cfg.da_head_dim if cfg.has_depth_attention else 0


def router_params(cfg: ModelConfig) -> int:
    if not cfg.is_moe:
        return 0
    if cfg.router_rank:
        return cfg.d_model * cfg.router_rank + cfg.router_rank * cfg.n_experts
    return cfg.d_model * cfg.n_experts


def norms_per_layer(cfg: ModelConfig) -> int:
    if cfg.mixture == "parallel":
        return 1
    return 3 if cfg.has_depth_attention else 2


def layer_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of ONE unique layer, by component."""
    return {
        "norms": norms_per_layer(cfg) * cfg.d_model,
        "sa": sa_params(cfg),
        "da": da_params(cfg),
        "router": router_params(cfg),
        "experts": cfg.n_experts * expert_params(cfg),
        "shared_experts": cfg.n_shared_experts * expert_params(cfg),
        "dense_mlp": 0 if cfg.is_moe else expert_params(cfg),
    }


@dataclass(frozen=True)
class ParamCounts:
    by_component: dict[str, int]  # unique parameters per component (PARAM_COMPONENTS)
    total: int  # unique parameters (a shared layer counted once)
    embedding: int  # token embedding + untied LM head
    non_embedding: int
    active: int  # per application of each unique layer (top_k routed experts), plus embeddings
    applied: int  # what one token's forward pass multiplies by, summed over all depth applications

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def param_counts(cfg: ModelConfig) -> ParamCounts:
    layer = layer_params(cfg)
    n_layers = cfg.n_unique_layers
    by_component = {
        "embedding": cfg.vocab_size * cfg.d_model,
        "lm_head": 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model,
        "final_norm": cfg.d_model,
        **{name: n_layers * count for name, count in layer.items()},
    }
    total = sum(by_component.values())
    embedding = by_component["embedding"] + by_component["lm_head"]
    unselected = (cfg.n_experts - cfg.top_k) * expert_params(cfg)
    layer_active = sum(layer.values()) - unselected
    return ParamCounts(
        by_component=by_component,
        total=total,
        embedding=embedding,
        non_embedding=total - embedding,
        active=n_layers * layer_active + embedding + cfg.d_model,
        applied=cfg.depth * layer_active + embedding + cfg.d_model,
    )


# ---------------------------------------------------------------------------------------------- FLOPs
def forward_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                            seq_len: int | None = None) -> dict[str, float]:
    """Forward FLOPs per token, by component (FLOP_COMPONENTS), summed over all depth applications.
    `seq_len` is the context that sequence attention covers (default: the config's)."""
    context = cfg.seq_len if seq_len is None else seq_len
    d, depth = cfg.d_model, cfg.depth
    mac = 2.0
    sa_scores_per_layer = 2 * mac * context * cfg.n_heads * cfg.head_dim  # QK^T and AV
    if conv.causal_half:
        sa_scores_per_layer /= 2
    da_width = cfg.da_heads * cfg.da_head_dim
    da_depth_states = depth * (depth + 1) / 2  # sum over depth index i of (i + 1) states
    flops = {
        "sa_proj": depth * mac * sa_params(cfg),
        "sa_scores": depth * sa_scores_per_layer,
        "da_proj": depth * mac * da_params(cfg),
        "da_scores": 2 * mac * da_width * da_depth_states if cfg.has_depth_attention else 0.0,
        "router": depth * mac * router_params(cfg),
        "experts": depth * mac * cfg.top_k * expert_params(cfg),
        "shared_experts": depth * mac * cfg.n_shared_experts * expert_params(cfg),
        "dense_mlp": 0.0 if cfg.is_moe else depth * mac * expert_params(cfg),
        "lm_head": mac * d * cfg.vocab_size,
    }
    return {name: float(value) for name, value in flops.items()}


def train_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                          seq_len: int | None = None) -> float:
    """Model FLOPs of one training token: forward + backward = 3 x forward."""
    return 3.0 * sum(forward_flops_per_token(cfg, conv, seq_len).values())


def hardware_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                             seq_len: int | None = None) -> float:
    """FLOPs the hardware executes per training token: 4 x forward with full recomputation."""
    passes = 4.0 if conv.recompute == "full" else 3.0
    return passes * sum(forward_flops_per_token(cfg, conv, seq_len).values())


# --------------------------------------------------------------------------------------------- memory
def activation_elements_per_token(cfg: ModelConfig) -> dict[str, float]:
    """Elements saved for backward per token of one layer APPLICATION, by component, without
    recomputation (what the autograd graph of models/ keeps; flash-style attention, so no T x T
    probabilities). Checked against fake-tensor measurement in tests."""
    d = cfg.d_model
    q_width = cfg.n_heads * cfg.head_dim
    kv_width = cfg.n_kv_heads * cfg.head_dim
    norm = 2 * d  # input and normalised state of each RMSNorm
    # SA: q, k, v after rotary, attention output (input of wo), log-sum-exp per head
    sa = q_width + 2 * kv_width + q_width + cfg.n_heads
    elems = {"norms": norms_per_layer(cfg) * norm, "sa": float(sa), "da": 0.0, "ffn": 0.0}
    if cfg.has_depth_attention:
        # q and output per token; this depth's k and v (the stacked depth keys are counted in
        # `activation_bytes` because they grow with depth)
        da_width = cfg.da_heads * cfg.da_head_dim
        elems["da"] = float(2 * da_width + cfg.da_heads)
    f = cfg.d_ff
    hidden = 4 * f if cfg.mlp_act == "swiglu" else 2 * f  # w1 out, w3 out, act out, product
    if cfg.is_moe:
        # router query + scores; per selected expert: gathered input, hidden states, output, gate
        router = (cfg.router_rank or 0) + cfg.n_experts
        routed = cfg.top_k * (d + hidden + d + 1)
        shared = (cfg.n_shared_experts * hidden) if cfg.n_shared_experts else 0
        elems["ffn"] = float(router + routed + shared)
    else:
        elems["ffn"] = float(hidden)
    return elems


@dataclass(frozen=True)
class MemoryReport:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    training_bytes: int  # weights + gradients + optimizer + activations
    sa_kv_cache_bytes: int  # inference: per batch and context, all applied layers
    da_cache_bytes: int  # inference: depth-attention cache of the tokens in flight (one per sequence)
    inference_cache_bytes: int  # SA KV + DA caches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def activation_bytes(cfg: ModelConfig, batch: int, seq_len: int, conv: Conventions = Conventions()) -> int:
    """Activations kept for backward in one training step of `batch` sequences of `seq_len` tokens."""
    tokens = batch * seq_len
    act = DTYPE_BYTES[conv.activation_dtype]
    per_application = sum(activation_elements_per_token(cfg).values())
    # The loss keeps fp32 log-probabilities over the vocabulary, the LM head its input.
    head = 4 * cfg.vocab_size + act * 2 * cfg.d_model
    da_width = cfg.da_heads * cfg.da_head_dim if cfg.has_depth_attention else 0
    if conv.recompute == "none":
        # the stacked depth keys/values of depth index i hold i + 1 states
        da_stacks = 2 * da_width * cfg.depth * (cfg.depth + 1) / 2
        per_token = act * (cfg.depth * per_application + da_stacks) + head
    else:
        # each application keeps its input (and the depth K/V it produced); during backward one
        # application's activations are rebuilt at a time
        per_token = act * (cfg.depth * (cfg.d_model + 2 * da_width) + per_application + 2 * da_width * cfg.depth) \
            + head
    return int(round(tokens * per_token))


def sa_kv_cache_bytes(cfg: ModelConfig, batch: int, context: int, conv: Conventions = Conventions()) -> int:
    """Decoding: keys and values of every APPLIED layer (dr reuses weights, not inputs)."""
    return batch * context * cfg.depth * 2 * cfg.n_kv_heads * cfg.head_dim * DTYPE_BYTES[conv.cache_dtype]


def da_cache_bytes(cfg: ModelConfig, batch: int, conv: Conventions = Conventions()) -> int:
    """Decoding: depth keys/values of the token in flight (overwritten at the next token)."""
    if not cfg.has_depth_attention:
        return 0
    return batch * cfg.depth * 2 * cfg.da_heads * cfg.da_head_dim * DTYPE_BYTES[conv.cache_dtype]


def memory(cfg: ModelConfig, batch: int, seq_len: int | None = None, conv: Conventions = Conventions(),
           context: int | None = None) -> MemoryReport:
    """Training memory of one step (batch x seq_len) and the inference caches for `batch` sequences of
    `context` tokens (default: seq_len)."""
    seq_len = cfg.seq_len if seq_len is None else seq_len
    context = seq_len if context is None else context
    params = param_counts(cfg).total
    weights = params * DTYPE_BYTES[conv.weight_dtype]
    grads = params * DTYPE_BYTES[conv.grad_dtype]
    optimizer = 2 * params * DTYPE_BYTES[conv.optimizer_dtype]
    acts = activation_bytes(cfg, batch, seq_len, conv)
    kv = sa_kv_cache_bytes(cfg, batch, context, conv)
    da = da_cache_bytes(cfg, batch, conv)
    return MemoryReport(weights, grads, optimizer, acts, weights + grads + optimizer + acts, kv, da, kv + da)


# --------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class CostReport:
    config: ModelConfig
    conventions: Conventions
    batch: int
    seq_len: int
    params: ParamCounts
    forward_flops_per_token: dict[str, float]
    train_flops_per_token: float
    hardware_flops_per_token: float
    memory: MemoryReport
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_flops_per_sequence(self) -> float:
        return self.train_flops_per_token * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        fwd_total = sum(self.forward_flops_per_token.values())
        return {
            "config": self.config.to_dict(),
            "conventions": self.conventions.to_dict(),
            "batch": self.batch,
            "seq_len": self.seq_len,
            "params": self.params.to_dict(),
            "flops": {
                "forward_per_token": {**self.forward_flops_per_token, "total": fwd_total},
                "train_per_token": self.train_flops_per_token,
                "train_per_sequence": self.train_flops_per_sequence,
                "hardware_per_token": self.hardware_flops_per_token,
            },
            "memory_bytes": self.memory.to_dict(),
        }


def cost_report(cfg: ModelConfig, conv: Conventions = Conventions(), batch: int = 1,
                seq_len: int | None = None) -> CostReport:
    seq_len = cfg.seq_len if seq_len is None else seq_len
    return CostReport(
        config=cfg,
        conventions=conv,
        batch=batch,
        seq_len=seq_len,
        params=param_counts(cfg),
        forward_flops_per_token=forward_flops_per_token(cfg, conv, seq_len),
        train_flops_per_token=train_flops_per_token(cfg, conv, seq_len),
        hardware_flops_per_token=hardware_flops_per_token(cfg, conv, seq_len),
        memory=memory(cfg, batch, seq_len, conv),
    )
