"""The language model: token embedding, `depth` layer applications, final norm, LM head.

`la` holds `depth` distinct layers and applies layer i at depth index i; `dr` and `dr_da` hold ONE layer
and apply it at every depth index. The layer is told its depth index (depth attention, the router's
depth rotation and its per-depth balancing bias use it).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from matcher.config import LR_GROUPS, ModelConfig
from matcher.models.cache import DepthKV, KVCache
from matcher.models.expert_attention import ExpertAttention, ExpertsForward, Router
from matcher.models.kernels import WeightGradients
from matcher.models.layer import Layer
from matcher.models.norm import RMSNorm, rotary_cos_sin

IGNORE_INDEX = -100  # target value excluded from the loss (prompt or padding tokens)
# how a shared layer's expert weight gradients are computed: once per backward over all its applications
# (see WeightGradients), or by each application's own backward (only to measure what combining saves:
# bench/dispatch.py --before); the two are equal in fp32
WEIGHT_GRADIENT_MODES = ("combined", "per_application")


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig, trained_depth: int | None = None):
        """`trained_depth`: the depth a dr_da model applied at a test-time depth cfg.depth was trained at
        (da_rope forward_reversed counts its reversed index from it); None: cfg.depth."""
        super().__init__()
        self.cfg = cfg
        self.recompute = False  # activation checkpointing per applied layer; set by the trainer
        n_applications = cfg.depth // cfg.n_unique_layers  # times each unique layer is applied
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Layer(cfg, n_applications, trained_depth) for _ in range(cfg.n_unique_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix, counted once
        self.reset_parameters()
        self._applied_more_than_once = n_applications > 1

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """normal(0, 0.02); projections into the residual stream scaled by 1/sqrt(2*depth) (GPT-2), so
        the residual's variance does not grow with the number of applications; norm gains 1, biases 0."""
        out_std = 0.02 / math.sqrt(2 * self.cfg.depth)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("wo.weight", "w2.weight", "experts.w2")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, 0.02)

    def lr_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each train.lr_mult group, each parameter in exactly one (tied embeddings once):
        embeddings (token embedding, LM head), experts (routed and shared experts' weights), shared_block
        (everything else: attention, depth attention, router, norms, a dense MLP, the final norm)."""
        embeddings = {id(self.tok_emb.weight), id(self.lm_head.weight)}
        experts = {id(p) for layer in self.layers if isinstance(layer.ffn, ExpertAttention)
                   for module in (layer.ffn.experts, layer.ffn.shared) if module is not None
                   for p in module.parameters()}
        groups: dict[str, list[nn.Parameter]] = {group: [] for group in LR_GROUPS}
        for p in self.parameters():
            group = "embeddings" if id(p) in embeddings else "experts" if id(p) in experts else "shared_block"
            groups[group].append(p)
        return groups

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                weight_gradients: str = "combined") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) token ids -> logits (B, T, vocab), or (logits, mean loss) when targets (B, T) are
        given. With a cache, idx continues the cached sequences at cache.pos and the cache advances.
        `weight_gradients`: one of WEIGHT_GRADIENT_MODES."""
        if weight_gradients not in WEIGHT_GRADIENT_MODES:
            raise ValueError(f"weight_gradients must be one of {WEIGHT_GRADIENT_MODES}, got {weight_gradients!r}")
        B, T = idx.shape
        start = 0 if cache is None else cache.pos
        positions = torch.arange(start, start + T, device=idx.device)
        if cache is not None and cache.pad_left is not None:  # left-padded rows count from their first token
            positions = (positions[None] - cache.pad_left[:, None]).clamp(min=0)  # (B, T)
            cos, sin = rotary_cos_sin(positions.flatten(), self.cfg.head_dim, self.cfg.rope_theta)
            rope = cos.view(B, T, -1), sin.view(B, T, -1)  # (B, T, hs/2) each
        else:
            rope = rotary_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)  # (T, hs/2) each
        h = self.tok_emb(idx)  # (B, T, d)
        combine = (weight_gradients == "combined" and self._applied_more_than_once and not self.recompute
                   and torch.is_grad_enabled() and not torch.compiler.is_compiling())
        # one per layer (dense layers ignore theirs); backward holds what it needs of them after they close
        experts_forward = [ExpertsForward(WeightGradients() if combine else None) for _ in self.layers]
        try:
            # depth attention's keys/values of these tokens, filled one depth at a time; outside the
            # checkpointed layers, so recomputation rebuilds no earlier depth's
            depth_kv = DepthKV(self.cfg.depth) if self.cfg.has_depth_attention else None
            for depth in range(self.cfg.depth):
                layer = self.layers[depth % len(self.layers)]  # la: layer `depth`; dr/dr_da: the shared one
                layer_experts = experts_forward[depth % len(self.layers)]
                if cache is not None:
                    h = layer(h, depth, rope, cache.slot(depth), depth_kv, layer_experts)
                elif self.recompute and torch.is_grad_enabled():
                    h = checkpoint(layer, h, depth, rope, None, depth_kv, layer_experts, use_reentrant=False)
                else:
                    h = layer(h, depth, rope, None, depth_kv, layer_experts)
        finally:
            for layer_experts in experts_forward:
                layer_experts.close()
        if cache is not None:
            cache.advance(T)
        logits = self.lm_head(self.norm(h))  # (B, T, vocab)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

    def new_cache(self, batch_size: int, max_len: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None, pad_left: torch.Tensor | None = None) -> KVCache:
        """An empty sequence-attention KV cache with one slot per applied layer (depth slots, also for dr).
        `pad_left` (B,): padding tokens at the start of each row (prompts of different lengths)."""
        device = device if device is not None else self.tok_emb.weight.device
        return KVCache(self.cfg.depth, batch_size, self.cfg.n_kv_heads, max_len, self.cfg.head_dim,
                       device=device, dtype=dtype if dtype is not None else self.tok_emb.weight.dtype,
                       pad_left=None if pad_left is None else pad_left.to(device))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, stop_token: int | None = None,
                 pad_left: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy continuation of prompts idx (B, T) -> (B, T + n), n <= max_new_tokens: stops early once
        every sequence has produced `stop_token`. Prompts of different lengths are left-padded, with
        `pad_left` (B,) the padding tokens of each row."""
        B, T = idx.shape
        cache = self.new_cache(B, T + max_new_tokens, pad_left=pad_left)
        logits = self(idx, cache=cache)
        out = idx
        for step in range(max_new_tokens):
            next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
            out = torch.cat((out, next_token), dim=1)
            done = stop_token is not None and bool((out[:, T:] == stop_token).any(dim=1).all())
            if done or step == max_new_tokens - 1:
                break
            logits = self(next_token, cache=cache)
        return out

    # auxiliary-loss-free expert balancing (no-ops for dense models)

    def _routers_by_depth(self) -> list[tuple[int, Router]]:
        """(row in the router's per-application buffers, router) for each depth index."""
        rows = []
        for depth in range(self.cfg.depth):
            ffn = self.layers[depth % len(self.layers)].ffn
            if isinstance(ffn, ExpertAttention):
                rows.append((depth % ffn.n_applications, ffn.router))
        return rows

    @torch.no_grad()
    def update_router_bias(self, rate: float) -> None:
        """bias += rate * sign(mean load - load) per application, from the tokens routed since the last
        call (all-reduced over ranks under torch.distributed); starts a new counting window."""
        for layer in self.layers:
            if isinstance(layer.ffn, ExpertAttention):
                layer.ffn.router.update_bias(rate)

    @torch.no_grad()
    def routed_counts(self, current: bool = False) -> torch.Tensor | None:
        """Tokens routed to each expert at each applied depth, (depth, n_experts) fp32 on the model's
        device: the window the last bias update used (over all ranks; no host sync, for the training
        step), or with `current` the window being counted (the last one right after an update). None
        for dense models."""
        rows = [(router.load_window() if current else router.last_load)[row]
                for row, router in self._routers_by_depth()]
        return torch.stack(rows) if rows else None

    @torch.no_grad()
    def expert_load(self) -> torch.Tensor | None:
        """routed_counts(current=True) as each expert's share per applied depth, on the CPU."""
        counts = self.routed_counts(current=True)
        return None if counts is None else shares(counts.cpu())


def compile_model(module: nn.Module, **kwargs) -> nn.Module:
    """torch.compile(module, **kwargs) for a Model (or a wrapper of one): one graph per forward, also with
    recomputation. Depth attention records each depth's keys/values in the forward's DepthKV, a Python
    side effect that Dynamo refuses inside a checkpointed layer unless told that the recomputed forward
    need not replay it; it need not, since the recomputation's keys/values are traced in the same graph."""
    if hasattr(torch._dynamo.config, "skip_fwd_side_effects_in_bwd_under_checkpoint"):  # older torch: breaks
        torch._dynamo.config.skip_fwd_side_effects_in_bwd_under_checkpoint = True
    return torch.compile(module, **kwargs)


def shares(counts: torch.Tensor) -> torch.Tensor:
    """Counts per (depth, expert) as each expert's share of its depth's routed tokens."""
    return counts / counts.sum(dim=-1, keepdim=True).clamp(min=1)
