"""The feed-forward part of a layer: a dense MLP, or expert attention (a sparse MoE written as attention).

Expert attention: the router's query (the normalised state, optionally projected to `router_rank` and
rotated by the depth index) scores one learned key per expert with a sigmoid; the top_k experts by
score + balancing bias are selected, and their outputs are mixed by the scores (without the bias)
normalised over the selected experts. The bias is a buffer moved outside the gradient towards equal
expert load (auxiliary-loss-free balancing, DeepSeek-V3).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from matcher.config import ModelConfig
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


class Experts(nn.Module):
    """n_experts MLPs as stacked weights; each token runs only its top_k selected experts."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, d, f = cfg.n_experts, cfg.d_model, cfg.d_ff
        self.w1 = nn.Parameter(torch.empty(E, d, f))
        self.w3 = nn.Parameter(torch.empty(E, d, f)) if cfg.mlp_act == "swiglu" else None
        self.w2 = nn.Parameter(torch.empty(E, f, d))
        # Model.forward sets a dict for the length of one forward: the weights cast to autocast's dtype,
        # shared by every application of this layer. Autocast does not cast grouped_mm's arguments, and a
        # cast per application would save a copy per application for backward (for dr at depth 32, 32
        # copies of the shared experts).
        self.cast_cache: dict[torch.dtype, tuple] | None = None
        # Model.forward sets one for the length of one forward of a layer applied several times (see
        # WeightGradients); None: each application's backward returns its own weight gradients.
        self.weight_gradients: WeightGradients | None = None

    def forward(self, x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor,
                tokens_per_expert: torch.Tensor) -> torch.Tensor:
        """x (N, d), chosen/gates (N, k), tokens_per_expert (E,) assignments per expert -> (N, d)."""
        N, d = x.shape
        k = chosen.shape[1]
        order = chosen.flatten().argsort(stable=True)  # (N*k,) assignments grouped by expert
        token_of = order // k  # (N*k,) the token of each sorted assignment
        # where each expert's rows end, kept on the device: no host sync, and shapes do not depend on
        # the routing (compiles once, runs on meta)
        offsets = tokens_per_expert.cumsum(0, dtype=torch.int32)  # (E,)
        w1, w3, w2 = self._weights(x)
        matmul = grouped_mm
        if self.weight_gradients is not None and torch.is_grad_enabled():
            matmul = self.weight_gradients.application()
        rows = x[token_of].to(w1.dtype)  # (N*k, d)
        h = matmul(rows, w1, offsets)  # (N*k, f)
        h = F.gelu(h) if w3 is None else F.silu(h) * matmul(rows, w3, offsets)
        y = matmul(h, w2, offsets) * gates.flatten()[order, None]  # (N*k, d), weighted by gate
        return y.new_zeros(N, d).index_add_(0, token_of, y)  # (N, d), summed over each token's k

    def _weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """w1, w3, w2 in the dtype the matmuls run in (autocast's, when it is on for x's device)."""
        weights = (self.w1, self.w3, self.w2)
        dtype = compute_dtype(x)
        if dtype == self.w1.dtype:
            return weights
        if self.cast_cache is not None and dtype in self.cast_cache:
            return self.cast_cache[dtype]
        cast = tuple(w if w is None else w.to(dtype) for w in weights)
        if self.cast_cache is not None:
            self.cast_cache[dtype] = cast
        return cast


@torch.library.custom_op("matcher::grouped_mm", mutates_args=())
def grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.grouped_mm: a (M, K) @ b (G, K, N) -> (M, N), rows offsets[g-1]:offsets[g] of a
    times b[g]; or, for weight gradients, a (K, M) @ b (M, N) -> (G, K, N), each group summing its own
    columns of a and rows of b.

    A custom op rather than the aten op because the aten op's meta kernel (meta and fake tensors, so also
    torch.compile and the meta-device counters) takes bf16 only, while the CPU and CUDA kernels also run
    fp32; its fake kernel below takes every dtype. Also the one place that meets the kernels' layout rule.
    """
    if a.is_cuda and offsets.shape[0] > MAX_CUDA_GROUPS:
        raise ValueError(f"{offsets.shape[0]} experts: PyTorch's CUDA grouped GEMM takes at most "
                         f"{MAX_CUDA_GROUPS} groups; plan with fewer experts (matcher plan --set n_experts=...)")
    return _GROUPED_MM(_kernel_layout(a), _kernel_layout(b), offs=offsets).contiguous()


# F.grouped_mm is the public name of torch._grouped_mm in recent torch; older builds have only the latter
_GROUPED_MM = getattr(F, "grouped_mm", None) or torch._grouped_mm
MAX_CUDA_GROUPS = 1023  # aten/src/ATen/native/cuda/GroupMM.cu: "Can't process more than 1024 groups"


@grouped_mm.register_fake
def _(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    if b.dim() == 3:
        return a.new_empty(a.shape[0], b.shape[2])
    return a.new_empty(offsets.shape[0], a.shape[0], b.shape[1])


def _grouped_mm_setup(ctx, inputs, output) -> None:
    a, b, offsets = inputs
    ctx.save_for_backward(a, b, offsets)


def _grouped_mm_backward(ctx, grad: torch.Tensor):
    """The gradients of the (M, K) @ (G, K, N) form, as aten's own derivative of _grouped_mm computes them."""
    a, b, offsets = ctx.saved_tensors
    grad_a = grouped_mm(grad, b.transpose(-2, -1), offsets) if ctx.needs_input_grad[0] else None
    grad_b = grouped_mm(a.transpose(0, 1), grad, offsets) if ctx.needs_input_grad[1] else None
    return grad_a, grad_b, None


grouped_mm.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


@register_flop_formula(torch.ops.matcher.grouped_mm)
def _grouped_mm_flops(a_shape, b_shape, offsets_shape, out_shape=None, **kwargs) -> int:
    """2 x M x K x N in both forms: each of a's M rows (or K x M entries) meets one group's N columns."""
    return 2 * math.prod(a_shape) * b_shape[-1]


class WeightGradients:
    """The expert weight gradients of one forward of a layer applied several times, computed once.

    Each application sees only batch x seq_len x top_k / n_experts rows per expert (dr-100m at 2 x 256:
    about 10), so a grouped GEMM backward per application writes a full (E, d, f) weight gradient for a
    few rows each, and autograd then adds `depth` of them: memory-bound (dr-100m's CPU step was 2.4x
    la-100m's). Here each application's backward returns only its input gradient and keeps its rows,
    output gradient and offsets; the backward of the FIRST application, which autograd runs after every
    later one (they all feed its output's gradient), sorts the kept rows of all applications by expert
    and computes each weight's gradient with one grouped GEMM: the same FLOPs, and one (E, d, f) write per
    weight. Kept until then: each application's output gradients of the three matmuls, which the
    activations its backward frees outweigh (the peak stays at the start of backward).

    Not used with recomputation (the kept rows would undo it), under torch.compile (a side effect in
    backward) or for a layer applied once (nothing to share).
    """

    def __init__(self) -> None:
        self.applications = 0
        self.combined: set[int] = set()
        # per matmul of an application (w1, w3, w2 in call order): each application's (rows, grad, offsets)
        self.kept: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    def application(self):
        """grouped_mm for one application's matmuls, called in the same order at every application."""
        combines = self.applications == 0
        self.applications += 1
        calls = iter(range(3))

        def matmul(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
            return _DeferredWeightGradient.apply(a, b, offsets, self, next(calls), combines)

        return matmul

    def keep(self, matmul: int, a: torch.Tensor, grad: torch.Tensor, offsets: torch.Tensor,
             combines: bool) -> torch.Tensor | None:
        """Keeps one application's rows a (M, K) and output gradient (M, N) of one matmul; at the combining
        application, the weight gradient (G, K, N) over every kept application (and forgets them)."""
        if matmul in self.combined:
            raise RuntimeError("an application's backward ran after the first application's: its weight "
                               "gradient would be lost (each application must feed the next)")
        kept = self.kept.setdefault(matmul, [])
        kept.append((a, grad, offsets))
        if not combines:
            return None
        del self.kept[matmul]
        self.combined.add(matmul)
        if len(kept) == 1:
            return grouped_mm(a.transpose(0, 1), grad, offsets)
        # each row's expert (an application's rows are grouped by expert; offsets end the groups), then all
        # applications' rows grouped by expert, keeping application order within an expert
        expert_of = torch.cat([
            torch.searchsorted(offs, torch.arange(rows.shape[0], device=offs.device, dtype=offs.dtype), right=True)
            for rows, _, offs in kept])  # (sum M,)
        order = expert_of.argsort(stable=True)
        rows = torch.cat([rows for rows, _, _ in kept]).index_select(0, order)  # (sum M, K)
        grads = torch.cat([g for _, g, _ in kept]).index_select(0, order)  # (sum M, N)
        offsets = torch.stack([offs for _, _, offs in kept]).sum(0, dtype=torch.int32)  # (G,) cumulative counts
        return grouped_mm(rows.transpose(0, 1), grads, offsets)


class _DeferredWeightGradient(torch.autograd.Function):
    """grouped_mm whose backward hands its weight gradient to a WeightGradients."""

    @staticmethod
    def forward(ctx, a, b, offsets, gradients: WeightGradients, matmul: int, combines: bool):
        ctx.save_for_backward(a, b, offsets)
        ctx.gradients, ctx.matmul, ctx.combines = gradients, matmul, combines
        return grouped_mm(a, b, offsets)

    @staticmethod
    def backward(ctx, grad):
        a, b, offsets = ctx.saved_tensors
        grad_a = grouped_mm(grad, b.transpose(-2, -1), offsets) if ctx.needs_input_grad[0] else None
        grad_b = None
        if ctx.needs_input_grad[1]:
            grad_b = ctx.gradients.keep(ctx.matmul, a, grad, offsets, ctx.combines)
        return grad_a, grad_b, None, None, None, None


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """t, or a copy the grouped GEMM kernels accept: the last two dimensions row- or column-major with the
    other stride a multiple of 16 bytes, and the data 16-byte aligned (odd d_model or d_ff, or an expanded
    gradient such as that of y.sum(), are not). The copy keeps t's shape and its major order (CUDA's kernel
    asks for a column-major left operand in the weight-gradient form, a row-major one in the others), and
    pads only the stride, so FLOPs do not change."""
    align = 16 // t.element_size()
    rows, cols = t.shape[-2], t.shape[-1]
    rows_stride, cols_stride = t.stride(-2), t.stride(-1)
    aligned = t.data_ptr() % 16 == 0
    if aligned and cols_stride == 1 and rows_stride % align == 0 and rows_stride >= cols:
        return t
    if aligned and rows_stride == 1 and cols_stride % align == 0 and cols_stride >= rows:
        return t
    if rows_stride == 1 and cols_stride != 1:  # column-major: pad the column stride
        return t.new_empty(*t.shape[:-2], cols, rows + -rows % align).transpose(-2, -1)[..., :rows, :].copy_(t)
    return t.new_empty(*t.shape[:-1], cols + -cols % align)[..., :cols].copy_(t)


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
        # scatter_add_, not bincount: bincount has no meta kernel, and its output size would be data
        tokens_per_expert = torch.zeros(self.n_experts, dtype=torch.int64, device=x.device)
        tokens_per_expert.scatter_add_(0, chosen.flatten(), torch.ones_like(chosen.flatten()))  # (E,)
        if self.training:
            # with recomputation this runs again in backward: every count doubles, shares are unchanged
            self.router.load[application] += tokens_per_expert
        y = self.experts(x, chosen, gates, tokens_per_expert)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(B, T, d)
