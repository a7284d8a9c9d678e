"""The feed-forward part of a layer: a dense MLP, or expert attention (a sparse MoE written as attention).

Expert attention: the router's query (the normalised state, optionally projected to `router_rank` and
rotated by the depth index) scores one learned key per expert with a sigmoid; the top_k experts by
score + balancing bias are selected, and their outputs are mixed by the scores (without the bias)
normalised over the selected experts. The bias is a buffer moved outside the gradient towards equal
expert load (auxiliary-loss-free balancing, DeepSeek-V3).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from matcher.config import ModelConfig
from matcher.models.kernels import WeightGradients, grouped_mm
from matcher.models.norm import apply_rotary, compute_dtype, rotary_cos_sin


class MLP(nn.Module):
    """swiglu: w2(silu(w1 x) * w3 x); gelu: w2(gelu(w1 x))."""

    def __init__(self, d_model: int, d_ff: int, act: str):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False) if act == "swiglu" else None
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w3 is None:
            return self.w2(F.gelu(self.w1(x)))
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Router(nn.Module):
    """Scores, balancing bias and the load counts of one layer's router.

    `bias`, `load` and `last_load` have one row per application of the layer: `depth` rows for the
    shared dr/dr_da layer, 1 for each la layer.
    """

    def __init__(self, cfg: ModelConfig, n_applications: int):
        super().__init__()
        self.top_k, self.depth_rope, self.rope_theta = cfg.top_k, cfg.router_depth_rope, cfg.rope_theta
        self.proj = nn.Linear(cfg.d_model, cfg.router_rank, bias=False) if cfg.router_rank else None
        self.expert_keys = nn.Parameter(torch.empty(cfg.n_experts, cfg.router_rank or cfg.d_model))
        # fp32 buffers, not parameters: updated from the measured load, never by the optimizer
        self.register_buffer("bias", torch.zeros(n_applications, cfg.n_experts, dtype=torch.float32))
        # tokens routed to each expert since the last bias update, and in the window before it
        self.register_buffer("load", torch.zeros(n_applications, cfg.n_experts, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("last_load", torch.zeros_like(self.load), persistent=False)

    def forward(self, x: torch.Tensor, application: int, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> chosen experts (N, k) and their normalised gates (N, k)."""
        q = x if self.proj is None else self.proj(x)  # (N, r)
        if self.depth_rope:
            # a shared router can then route differently at each depth; only the query turns
            cos, sin = rotary_cos_sin(torch.full((1,), depth, device=x.device), q.shape[-1], self.rope_theta)
            q = apply_rotary(q, cos, sin)
        # F.linear with the parameter itself, so autocast casts it once per forward, not per application
        logits = F.linear(q, self.expert_keys).float()  # (N, E)
        with torch.no_grad():
            # selection by score + balancing bias; the bias never enters a gate
            _, chosen = torch.topk(torch.sigmoid(logits) + self.bias[application], self.top_k, dim=-1)
        # only the selected scores carry gradient, so backward keeps (N, k) of them, not all (N, E): indexing
        # saves just the indices (gather would save the whole logits)
        rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (N, 1)
        gates = torch.sigmoid(logits[rows, chosen])  # (N, k), chosen (N, k)
        return chosen, gates / gates.sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def update_bias(self, rate: float) -> None:
        load = self.load
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(load)  # every rank then moves its bias by the same global load
        self.bias += rate * torch.sign(load.mean(dim=-1, keepdim=True) - load)
        self.last_load.copy_(load)
        load.zero_()

    def load_window(self) -> torch.Tensor:
        """Counts since the last update, or those the last update used when none came since."""
        return self.load if self.load.sum() > 0 else self.last_load


class ExpertsForward:
    """What the applications of one layer's experts share during one forward of the model; Model.forward
    makes one per layer and passes it down, and closes it when that forward ends.

    - `weight_casts`: the expert weights cast to autocast's dtype, once for every application. Autocast
      does not cast grouped_mm's arguments, and a cast per application would save a copy per application
      for backward (for dr at depth 32, 32 copies of the shared experts).
    - `weight_gradients`: for a layer applied several times, a WeightGradients that computes the expert
      weight gradients once per backward (see models/kernels.py); None: each application's backward
      returns its own.
    """

    def __init__(self, weight_gradients: WeightGradients | None = None) -> None:
        self.weight_casts: dict[torch.dtype, tuple] | None = {}
        self.weight_gradients = weight_gradients

    def close(self) -> None:
        """The casts live on only where backward saved them; a recomputation in backward (which still holds
        this object) casts per application and keeps its weight gradients per application."""
        self.weight_casts = None
        self.weight_gradients = None


class Experts(nn.Module):
    """n_experts MLPs as stacked weights; each token runs only its top_k selected experts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff
        self.w1 = nn.Parameter(torch.empty(E, d, f))
        self.w3 = nn.Parameter(torch.empty(E, d, f)) if cfg.mlp_act == "swiglu" else None
        self.w2 = nn.Parameter(torch.empty(E, f, d))

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor,
                tokens_per_expert: torch.Tensor, forward_state: ExpertsForward | None = None) -> torch.Tensor:
        """x (N, d), chosen/gates (N, k), tokens_per_expert (E,) assignments per expert -> (N, d). `forward_state`:
        what this application shares with the layer's other applications in one forward of the model; None:
        nothing (weights cast for this call alone, its weight gradients computed by its own backward)."""
        N, d = x.shape
        k = chosen.shape[1]
        order = chosen.flatten().argsort(stable=True)  # (N*k,) assignments grouped by expert
        token_of = order // k  # (N*k,) the token of each sorted assignment
        # where each expert's rows end, kept on the device: no host sync, and shapes do not depend on
        # the routing (compiles once, runs on meta)
        offsets = tokens_per_expert.cumsum(0, dtype=torch.int32)  # (E,)
        w1, w3, w2 = self._weights(x, forward_state)
        matmul = grouped_mm
        if forward_state is not None and forward_state.weight_gradients is not None and torch.is_grad_enabled():
            matmul = forward_state.weight_gradients.application()
        rows = x[token_of].to(w1.dtype)  # (N*k, d)
        h = matmul(rows, w1, offsets)  # (N*k, f)
        h = F.gelu(h) if w3 is None else F.silu(h) * matmul(rows, w3, offsets)
        y = matmul(h, w2, offsets) * gates.flatten()[order, None]  # (N*k, d), weighted by gate
        return y.new_zeros(N, d).index_add_(0, token_of, y)  # (N, d), summed over each token's k

    def _weights(self, x: torch.Tensor, forward_state: ExpertsForward | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """w1, w3, w2 in the dtype the matmuls run in (autocast's, when it is on for x's device)."""
        weights = (self.w1, self.w3, self.w2)
        dtype = compute_dtype(x)
        if dtype == self.w1.dtype:
            return weights
        if forward_state is not None and forward_state.weight_casts is not None and dtype in forward_state.weight_casts:
            return forward_state.weight_casts[dtype]
        cast = tuple(w if w is None else w.to(dtype) for w in weights)
        if forward_state is not None and forward_state.weight_casts is not None:
            forward_state.weight_casts[dtype] = cast
        return cast


class ExpertAttention(nn.Module):
    """Router + routed experts + optional always-active shared expert(s)."""

    def __init__(self, cfg: ModelConfig, n_applications: int):
        super().__init__()
        self.n_experts = cfg.n_experts
        self.n_applications = n_applications
        self.router = Router(cfg, n_applications)
        self.experts = Experts(cfg)
        # n shared experts of width d_ff as one MLP of width n*d_ff: the same parameters and FLOPs
        self.shared = None
        if cfg.n_shared_experts:
            self.shared = MLP(cfg.d_model, cfg.n_shared_experts * cfg.d_ff, cfg.mlp_act)

    def forward(self, x: torch.Tensor, depth: int, forward_state: ExpertsForward | None = None) -> torch.Tensor:
        """x (B, T, d) at depth index `depth` -> (B, T, d); `forward_state` as for Experts.forward."""
        B, T, d = x.shape
        x = x.reshape(B * T, d)
        application = depth % self.n_applications  # la: its only row; the shared layer: the depth index
        chosen, gates = self.router(x, application, depth)
        # scatter_add_, not bincount: bincount has no meta kernel, and its output size would be data
        tokens_per_expert = torch.zeros(self.n_experts, dtype=torch.int64, device=x.device)
        tokens_per_expert.scatter_add_(0, chosen.flatten(), torch.ones_like(chosen.flatten()))  # (E,)
        if self.training:
            # with recomputation this runs again in backward: every count doubles, shares are unchanged
            self.router.load[application] += tokens_per_expert
        y = self.experts(x, chosen, gates, tokens_per_expert, forward_state)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(B, T, d)
