"""The analytic cost model: parameters, FLOPs and memory of a ModelConfig, by formula (no torch).

Every cost matcher prints, searches on or writes into a sweep is computed here, once. The formulas
follow the module inventory of `models/` exactly (tests/test_costs_vs_measured.py counts the real
modules and compares component by component).

Conventions (`Conventions`, printed with every number):
- 1 FLOP = one add or one multiply; a multiply-accumulate is 2 FLOPs. Only matrix products are
  counted (projections, attention scores and values, experts, router, LM head); norms, rotary,
  softmax, activations and routing bookkeeping are not, as in PaLM/Megatron accounting.
- Training (model) FLOPs = forward + backward = 3 x forward, no recomputation. Hardware FLOPs are what
  models/ executes: backward is 2 x forward, plus depth attention's recomputed scores (its backward
  rebuilds QK^T from the log-sum-exp, flash-style; a torch.compile'd run keeps the probabilities instead
  and runs 0.003% fewer FLOPs at dr_da-100m); with full recomputation, plus what checkpointing
  reruns (`recompute_flops_per_token`): each layer application up to the last tensor its backward needs,
  never the LM head.
- Sequence-attention scores/values are counted over the full context unless `causal_half`, which
  halves them (Megatron's convention for a causal mask).
- Depth attention at depth index i (0-based) attends over i + 1 depth states of the same token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from matcher.config import ModelConfig
from matcher.errors import ConfigError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}
# Saved activations in the dtypes the trainer runs (bf16 autocast or fp32), so every command that takes
# --activation-dtype (cost, plan with or without --measure) accepts the same ones and the measured check
# can run them
ACTIVATION_DTYPES = ("bf16", "fp32")

PARAM_COMPONENTS = ("embedding", "lm_head", "final_norm", "norms", "sa", "da", "router", "experts",
                    "shared_experts", "dense_mlp")
FLOP_COMPONENTS = ("sa_proj", "sa_scores", "da_proj", "da_scores", "router", "experts", "shared_experts",
                   "dense_mlp", "lm_head")


def check_activation_dtype(dtype: str) -> None:
    if dtype not in ACTIVATION_DTYPES:
        raise ConfigError(f"activation_dtype (--activation-dtype) must be one of {', '.join(ACTIVATION_DTYPES)}, "
                          f"the dtypes training runs in; got {dtype!r}")


@dataclass(frozen=True, kw_only=True)
class Conventions:
    causal_half: bool = False  # halve sequence-attention score/value FLOPs for the causal mask
    recompute: str = "none"  # activation recomputation in training: none | full (per applied layer)
    weight_dtype: str = "fp32"  # master weights
    grad_dtype: str = "fp32"
    optimizer_dtype: str = "fp32"  # AdamW keeps two states per parameter
    activation_dtype: str = "bf16"  # saved activations (bf16 autocast on GPU; fp32 on CPU)
    cache_dtype: str = "bf16"  # inference KV and depth-attention caches
    inference_weight_dtype: str = "bf16"  # weights as served (inference memory)

    def __post_init__(self) -> None:
        if self.recompute not in ("none", "full"):
            raise ConfigError(f"recompute must be none or full, got {self.recompute!r}")
        check_activation_dtype(self.activation_dtype)
        for name in ("weight_dtype", "grad_dtype", "optimizer_dtype", "activation_dtype", "cache_dtype",
                     "inference_weight_dtype"):
            if getattr(self, name) not in DTYPE_BYTES:
                raise ConfigError(f"{name} must be one of {', '.join(DTYPE_BYTES)}, got {getattr(self, name)!r}")

    def describe(self) -> list[str]:
        return [
            "1 FLOP = one add or one multiply (a multiply-accumulate = 2 FLOPs); matrix products only",
            "training FLOPs = 3 x forward (model FLOPs, no recomputation); hardware FLOPs = 3 x forward "
            "+ depth attention's QK^T again in backward + with full recomputation each layer application "
            "rerun up to the last tensor its backward needs (no LM head, no trailing unsaved matmul)",
            "sequence-attention scores " + ("halved for the causal mask" if self.causal_half
                                            else "counted over the full context (causal mask not halved)"),
            f"memory: weights {self.weight_dtype}, gradients {self.grad_dtype}, AdamW 2 states "
            f"{self.optimizer_dtype}, activations {self.activation_dtype} (recompute {self.recompute}), "
            f"caches {self.cache_dtype}; inference memory = weights {self.inference_weight_dtype} + SA KV + "
            "DA caches at the stated batch and context",
            "parameters: total = unique; active = per application of each unique layer (top_k routed "
            "experts) + embeddings; applied = summed over all depth applications + embeddings",
            "body = non-embedding: parameters without the token embedding and an untied LM head; FLOPs "
            "without the LM head's product",
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
    """The four projection matrices (what the FLOPs multiply by)."""
    return cfg.d_model * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)


def sa_vector_params(cfg: ModelConfig) -> int:
    """QK-norm gains and q/k/v biases: parameters without matrix-product FLOPs."""
    qk_width = (cfg.n_heads + cfg.n_kv_heads) * cfg.head_dim
    norms = {"none": 0, "head": 2 * cfg.head_dim, "full": qk_width}[cfg.qk_norm] * _norm_vectors(cfg)
    biases = (qk_width + cfg.n_kv_heads * cfg.head_dim) if cfg.qkv_bias else 0
    return norms + biases


def da_params(cfg: ModelConfig) -> int:
    return 4 * cfg.d_model * cfg.da_heads * cfg.da_head_dim if cfg.has_depth_attention else 0


def router_params(cfg: ModelConfig) -> int:
    if not cfg.is_moe:
        return 0
    if cfg.router_rank:
        return cfg.d_model * cfg.router_rank + cfg.router_rank * cfg.n_experts
    return cfg.d_model * cfg.n_experts


def _norm_vectors(cfg: ModelConfig) -> int:
    """Parameter vectors per norm: the gain, and the bias with norm_bias."""
    return 2 if cfg.norm_bias else 1


def norms_per_layer(cfg: ModelConfig) -> int:
    if cfg.mixture == "parallel":
        return 1
    return 3 if cfg.has_depth_attention else 2


def layer_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of ONE unique layer, by component."""
    return {
        "norms": norms_per_layer(cfg) * cfg.d_model * _norm_vectors(cfg),
        "sa": sa_params(cfg) + sa_vector_params(cfg),
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
        "final_norm": cfg.d_model * _norm_vectors(cfg),
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
        active=n_layers * layer_active + embedding + by_component["final_norm"],
        applied=cfg.depth * layer_active + embedding + by_component["final_norm"],
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


# the FLOP components outside the body: the LM head (the embedding lookup is a gather and counts 0)
EMBEDDING_FLOP_COMPONENTS = ("lm_head",)


def body_train_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                               seq_len: int | None = None) -> float:
    """Training FLOPs per token of the body (non-embedding): 3 x forward without the LM head, as the
    scaling-law papers count compute (Kaplan et al. 2020's C = 6N with N non-embedding parameters;
    DeepSeek LLM's non-embedding FLOPs per token keep attention and drop the vocabulary's product)."""
    forward = forward_flops_per_token(cfg, conv, seq_len)
    return 3.0 * sum(v for name, v in forward.items() if name not in EMBEDDING_FLOP_COMPONENTS)


def recompute_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                              seq_len: int | None = None) -> dict[str, float]:
    """FLOPs per token that full recomputation reruns in backward, by component (FLOP_COMPONENTS).

    torch.utils.checkpoint (non-reentrant, per layer application) reruns the application's forward only
    until every tensor its backward saved is rebuilt, so a trailing matmul whose output nothing saves is
    skipped: the last part of the layer loses its output projection. That is the FFN in a sequential
    layer (a dense MLP's w2, or the shared experts' w2 when there are any; routed experts all rerun, since
    their outputs are saved for the gates' gradient), and depth attention's wo in a parallel dr_da layer.
    The LM head (with the embedding and final norm) lies outside the checkpointed layers: never rerun."""
    rerun = forward_flops_per_token(cfg, conv, seq_len)
    rerun["lm_head"] = 0.0
    mac, d = 2.0, cfg.d_model
    if cfg.mixture == "parallel" and cfg.has_depth_attention:
        rerun["da_proj"] -= cfg.depth * mac * d * cfg.da_heads * cfg.da_head_dim
    elif not cfg.is_moe:
        rerun["dense_mlp"] -= cfg.depth * mac * d * cfg.d_ff
    elif cfg.n_shared_experts:
        rerun["shared_experts"] -= cfg.depth * mac * d * cfg.n_shared_experts * cfg.d_ff
    return rerun


def hardware_flops_per_token(cfg: ModelConfig, conv: Conventions = Conventions(),
                             seq_len: int | None = None) -> float:
    """FLOPs the hardware executes per training token (see the module docstring)."""
    forward = forward_flops_per_token(cfg, conv, seq_len)
    flops = 3.0 * sum(forward.values()) + forward["da_scores"] / 2  # QK^T: half of QK^T and AV
    if conv.recompute == "full":
        flops += sum(recompute_flops_per_token(cfg, conv, seq_len).values())
    return flops


# --------------------------------------------------------------------------------------------- memory
# What the autograd graph of models/ keeps for backward, tensor by tensor, as counted on the module
# (FakeTensor measurement, tests/test_costs_vs_measured.py). `act` is the activation dtype's bytes (matmul
# inputs and outputs); the residual stream, norm statistics, attention log-sum-exps, router scores and
# gates stay fp32 and routing indices int64 whatever the activation dtype.
FP32_BYTES = 4
INDEX_BYTES = 8


def _hidden_width(cfg: ModelConfig, d_ff: int) -> int:
    """Hidden activations kept per MLP row: swiglu w1 out, silu out, w3 out, product; gelu w1 out, gelu's."""
    return (4 if cfg.mlp_act == "swiglu" else 2) * d_ff


def layer_activation_bytes_per_token(cfg: ModelConfig, conv: Conventions = Conventions()) -> dict[str, float]:
    """Bytes one layer application keeps for backward per token, by component (the same at every depth:
    depth attention's keys/values are stored once per forward, see depth_kv_bytes_per_token)."""
    act = DTYPE_BYTES[conv.activation_dtype]
    d, k = cfg.d_model, cfg.top_k
    q_width, kv_width = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    sequential = cfg.mixture == "sequential"
    # each RMSNorm: fp32 input and normalised state and 1/rms. Its output (in the matmul dtype) is kept by
    # the first consumer that saves it, counted there; in a parallel layer SA's input is everyone's.
    per_token = {"norms": norms_per_layer(cfg) * (2 * FP32_BYTES * d + FP32_BYTES)}
    # SA: input, rotated q and k, v, the attention output and its (B, T, heads*hd) copy for wo; fp32
    # log-sum-exp per head
    per_token["sa"] = act * (d + 3 * q_width + 2 * kv_width) + FP32_BYTES * cfg.n_heads
    if cfg.qk_norm != "none":
        # each QK-norm keeps, like the layer norms, its fp32 input and normalised state and 1/rms per row
        # (a row: the whole projection for "full", one head for "head"); its output replaces the
        # projection as rotary's input, counted above. Norm biases keep nothing more.
        rows = 2 if cfg.qk_norm == "full" else cfg.n_heads + cfg.n_kv_heads
        per_token["sa"] += 2 * FP32_BYTES * (q_width + kv_width) + FP32_BYTES * rows
    per_token["da"] = 0.0
    if cfg.has_depth_attention:
        # input, q and output (a view feeds wo), fp32 log-sum-exp
        da_width = cfg.da_heads * cfg.da_head_dim
        per_token["da"] = act * ((d if sequential else 0) + 2 * da_width) + FP32_BYTES * cfg.da_heads
    # the FFN keeps its input unless only gathers and the rotated router query read it
    keeps_input = (not cfg.is_moe or cfg.router_rank > 0 or not cfg.router_depth_rope
                   or cfg.n_shared_experts > 0)
    ffn_input = act * d if sequential and keeps_input else 0
    if cfg.is_moe:
        # router: its query when it is a new tensor (rotated, or projected), the fp32 scores of the selected
        # experts and their sum, the top-k and row indices (unselected scores are not kept)
        query = (cfg.router_rank or d) if cfg.router_depth_rope else cfg.router_rank
        router = act * query + (FP32_BYTES + INDEX_BYTES) * (k + 1)
        # routed experts, per assignment: the gathered input, hidden states, the output; the gate-weighted
        # output in fp32 (gates are fp32), the sorted gate and two index vectors (gather, scatter)
        routed = k * (act * (2 * d + _hidden_width(cfg, cfg.d_ff)) + FP32_BYTES * (d + 1) + 2 * INDEX_BYTES)
        shared = act * _hidden_width(cfg, cfg.n_shared_experts * cfg.d_ff)
        per_token["ffn"] = float(ffn_input + router + routed + shared)
    else:
        per_token["ffn"] = float(ffn_input + act * _hidden_width(cfg, cfg.d_ff))
    return per_token


def depth_kv_bytes_per_token(cfg: ModelConfig, conv: Conventions = Conventions()) -> float:
    """Depth attention's keys and values, one slot per depth index, stored once for the whole forward
    (models/cache.py DepthKV) and read by every later depth: linear in depth."""
    if not cfg.has_depth_attention:
        return 0.0
    return DTYPE_BYTES[conv.activation_dtype] * 2 * cfg.da_heads * cfg.da_head_dim * cfg.depth


def head_activation_bytes_per_token(cfg: ModelConfig, conv: Conventions = Conventions()) -> float:
    """Final norm, the LM head's input, the logits and the loss's fp32 log-probabilities."""
    act = DTYPE_BYTES[conv.activation_dtype]
    d = cfg.d_model
    return 2 * FP32_BYTES * d + FP32_BYTES + act * d + act * cfg.vocab_size + FP32_BYTES * cfg.vocab_size


def rotary_table_bytes(cfg: ModelConfig, seq_len: int) -> int:
    """fp32 cos and sin tables the rotations keep, shared by the batch: token positions for SA, one row
    per depth index for depth attention and the router."""
    depth_rows = 0
    if cfg.has_depth_attention and cfg.da_rope != "none":  # forward_reversed: the same row, its pairs mixed
        depth_rows += cfg.da_head_dim
    if cfg.is_moe and cfg.router_depth_rope:
        depth_rows += cfg.router_rank or cfg.d_model
    return 2 * FP32_BYTES * (seq_len * cfg.head_dim // 2 + cfg.depth * depth_rows // 2)


def weight_copy_bytes(cfg: ModelConfig, conv: Conventions = Conventions()) -> int:
    """Autocast's low-precision copies of the matmul weights, kept for backward once per forward (a
    shared layer's weights once, not per application); none when activations are not narrower."""
    act = DTYPE_BYTES[conv.activation_dtype]
    if act >= DTYPE_BYTES[conv.weight_dtype]:
        return 0
    counts = param_counts(cfg).by_component
    matmul = sum(counts[c] for c in ("sa", "da", "router", "experts", "shared_experts", "dense_mlp"))
    return act * (matmul + cfg.vocab_size * cfg.d_model)  # + the LM head (the embedding itself when tied)


@dataclass(frozen=True)
class MemoryReport:
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    # weights + gradients + optimizer + activations: every gradient counted, so a bound from above of the
    # step's peak, which comes at the start of backward before most gradients exist
    training_bytes: int
    sa_kv_cache_bytes: int  # inference: per batch and context, all applied layers
    da_cache_bytes: int  # inference: depth-attention cache of the tokens in flight (one per sequence)
    inference_cache_bytes: int  # SA KV + DA caches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def activation_bytes(cfg: ModelConfig, batch: int, seq_len: int, conv: Conventions = Conventions()) -> int:
    """Activations of one training step of `batch` sequences of `seq_len` tokens: what the forward keeps
    for backward, plus with recompute="full" the one application rebuilt at a time during backward."""
    tokens = batch * seq_len
    per_application = sum(layer_activation_bytes_per_token(cfg, conv).values())
    head, depth_kv = head_activation_bytes_per_token(cfg, conv), depth_kv_bytes_per_token(cfg, conv)
    weight_copies, tables = weight_copy_bytes(cfg, conv), rotary_table_bytes(cfg, seq_len)
    if conv.recompute == "none":
        return int(round(tokens * (cfg.depth * per_application + depth_kv + head) + weight_copies + tables))
    # Kept: each application's fp32 input, the depth keys/values (outside the checkpointed layers), the
    # head with its weight copy. Rebuilt during backward, one application at a time, with its layer's
    # weight copies.
    act = DTYPE_BYTES[conv.activation_dtype]
    head_copy = act * cfg.vocab_size * cfg.d_model if weight_copies else 0
    kept = tokens * (cfg.depth * FP32_BYTES * cfg.d_model + depth_kv + head) + head_copy + tables
    rebuilt = tokens * per_application + (weight_copies - head_copy) / cfg.n_unique_layers
    return int(round(kept + rebuilt))


def sa_kv_cache_bytes(cfg: ModelConfig, batch: int, context: int, conv: Conventions = Conventions()) -> int:
    """Decoding: keys and values of every APPLIED layer (dr reuses weights, not inputs)."""
    return batch * context * cfg.depth * 2 * cfg.n_kv_heads * cfg.head_dim * DTYPE_BYTES[conv.cache_dtype]


def da_cache_bytes(cfg: ModelConfig, batch: int, conv: Conventions = Conventions()) -> int:
    """Decoding: depth keys/values of the token in flight (overwritten at the next token)."""
    if not cfg.has_depth_attention:
        return 0
    return batch * cfg.depth * 2 * cfg.da_heads * cfg.da_head_dim * DTYPE_BYTES[conv.cache_dtype]


def inference_cache_bytes(cfg: ModelConfig, batch: int, context: int, conv: Conventions = Conventions()) -> int:
    """Decoding caches of `batch` sequences of `context` tokens: SA KV + DA (the weights aside)."""
    return sa_kv_cache_bytes(cfg, batch, context, conv) + da_cache_bytes(cfg, batch, conv)


def inference_memory_bytes(cfg: ModelConfig, batch: int, context: int, conv: Conventions = Conventions()) -> int:
    """Serving `batch` sequences of `context` tokens: the weights (inference_weight_dtype), every applied
    layer's SA KV cache and the DA cache of the tokens in flight."""
    weights = param_counts(cfg).total * DTYPE_BYTES[conv.inference_weight_dtype]
    return weights + inference_cache_bytes(cfg, batch, context, conv)


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
    return MemoryReport(weights, grads, optimizer, acts, weights + grads + optimizer + acts, kv, da,
                        inference_cache_bytes(cfg, batch, context, conv))


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
    body_train_flops_per_token: float  # without the LM head (body_train_flops_per_token)
    hardware_flops_per_token: float
    memory: MemoryReport

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
                "body_train_per_token": self.body_train_flops_per_token,
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
        body_train_flops_per_token=body_train_flops_per_token(cfg, conv, seq_len),
        hardware_flops_per_token=hardware_flops_per_token(cfg, conv, seq_len),
        memory=memory(cfg, batch, seq_len, conv),
    )
