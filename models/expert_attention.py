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
from matcher.models.norm import apply_rotary, compute_dtype, rotary_cos_sin
from torch._subclasses.fake_tensor import is_fake

from matcher.config import ModelConfig


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


class Experts(nn.Module):
    """n_experts MLPs as stacked weights; each token runs only its top_k selected experts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff
        self.w1 = nn.Parameter(torch.empty(E, d, f))
        self.w3 = nn.Parameter(torch.empty(E, d, f)) if cfg.mlp_act == "swiglu" else None
        self.w2 = nn.Parameter(torch.empty(E, f, d))
        # Model.forward sets a dict for the length of one forward: the weights cast to autocast's dtype,
        # shared by every application of this layer. Autocast's own cache covers only whole leaf tensors
        # passed to an op; casting expert slices instead would save a copy per application for backward
        # (for dr at depth 32, 32 copies of the shared experts).
        self.cast_cache: dict[torch.dtype, tuple] | None = None

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor,
                counts: list[int] | None) -> torch.Tensor:
        """x (N, d), chosen/gates (N, k), counts: assignments per expert (None: unknown, see below)."""
        N, k = chosen.shape
        E = self.w1.shape[0]
        expert_of = chosen.flatten()  # (N*k,)
        order = expert_of.argsort(stable=True)  # assignments grouped by expert
        token_of = order // k  # (N*k,) the token of each sorted assignment
        w1, w3, w2 = self._weights(x)
        rows = x[token_of]  # (N*k, d)
        if counts is None:
            # meta/fake tensors have no data to count: split the rows evenly, the first r experts taking
            # one row more, as two batched matmuls. The matmul work summed over experts is (N*k) rows times
            # one expert's FLOPs per row whatever the split, so the FLOP count is exact; only the split is
            # made up.
            q, r = divmod(N * k, E)
            more, fewer = rows.split([r * (q + 1), (E - r) * q])
            d = x.shape[1]
            outputs = [_mlp(more.view(r, q + 1, d), *_select(w1, w3, w2, slice(0, r))).flatten(0, 1),
                       _mlp(fewer.view(E - r, q, d), *_select(w1, w3, w2, slice(r, E))).flatten(0, 1)]
        else:
            # unbind once: one stack in backward, not a full-size zero gradient per indexed expert
            w1, w3, w2 = (w if w is None else w.unbind(0) for w in (w1, w3, w2))
            outputs = [_mlp(xe, *_select(w1, w3, w2, e))
                       for e, xe in enumerate(rows.split(counts))
                       if xe.shape[0] > 0]  # an unused expert costs nothing
        y = torch.cat(outputs) * gates.flatten()[order, None]  # (N*k, d), weighted by gate
        return y.new_zeros(N, y.shape[1]).index_add_(0, token_of, y)  # (N, d), summed over each token's k

    def _weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """w1, w3, w2 in the dtype the matmuls run in (autocast's, when it is on for x's device)."""
        weights = (self.w1, self.w3, self.w2)
        dtype = compute_dtype(x)
        if dtype == self.w1.dtype or not torch.is_grad_enabled():
            return weights  # without grad nothing is saved: autocast casts just the slices used
        if self.cast_cache is not None and dtype in self.cast_cache:
            return self.cast_cache[dtype]
        cast = tuple(w if w is None else w.to(dtype) for w in weights)
        if self.cast_cache is not None:
            self.cast_cache[dtype] = cast
        return cast


def _select(w1, w3, w2, experts):
    """The weights of one expert (an int) or a range of them (a slice); w3 is None for gelu."""
    return w1[experts], None if w3 is None else w3[experts], w2[experts]


def _mlp(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor | None, w2: torch.Tensor) -> torch.Tensor:
    """One expert: x (n, d) -> (n, d); or G experts at once: x (G, n, d), weights (G, ...) -> (G, n, d)."""
    if w3 is None:
        return F.gelu(x @ w1) @ w2
    return (F.silu(x @ w1) * (x @ w3)) @ w2


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

    def forward(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        B, T, d = x.shape
        x = x.reshape(B * T, d)
        application = depth % self.n_applications  # la: its only row; the shared layer: the depth index
        chosen, gates = self.router(x, application, depth)
        y = self.routed(x, chosen, gates, application)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(B, T, d)

    def routed(self, x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor, application: int) -> torch.Tensor:
        """The routed experts' output (N, d); counts the load. The split sizes are data (a host sync), so
        under torch.compile this runs eagerly (see compile_friendly): compiling it would recompile for
        every new split of the tokens."""
        counts = None
        if x.device.type != "meta" and not is_fake(x):
            per_expert = torch.bincount(chosen.flatten(), minlength=self.n_experts)  # (E,)
            if self.training:
                # with recomputation this runs again in backward: every count doubles, shares are unchanged
                self.router.load[application] += per_expert
            counts = per_expert.tolist()
        return self.experts(x, chosen, gates, counts)


def compile_friendly(model: nn.Module) -> None:
    """Before torch.compile: run each MoE dispatch eagerly (torch.compiler.disable), so the graph
    breaks once around it instead of recompiling for each data-dependent expert split (the recompile
    limit is hit within steps). Attention, norms, router and shared experts still compile."""
    for module in model.modules():
        if isinstance(module, ExpertAttention):
            module.routed = torch.compiler.disable(module.routed)
