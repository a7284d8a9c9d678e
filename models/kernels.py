"""The kernels of the expert dispatch, apart from the modules that hold the weights.

- `grouped_mm`: a custom op around PyTorch's grouped GEMM, with a fake kernel for every dtype (meta and
  fake tensors, torch.compile, the meta-device counters), its autograd formula and its FLOP formula.
- `kernel_layout`: the stride padding and alignment the grouped GEMM kernels (CUDA's above all) accept.
- `WeightGradients`: the expert weight gradients of a layer applied several times, computed once per
  backward instead of once per application.

Each is checked against a per-group loop of plain matmuls in tests/test_kernels.py.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

# F.grouped_mm is the public name of torch._grouped_mm in recent torch; older builds have only the latter
_GROUPED_MM = getattr(F, "grouped_mm", None) or torch._grouped_mm
MAX_CUDA_GROUPS = 1023  # aten/src/ATen/native/cuda/GroupMM.cu: "Can't process more than 1024 groups"


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
    return _GROUPED_MM(kernel_layout(a), kernel_layout(b), offs=offsets).contiguous()


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


def kernel_layout(t: torch.Tensor) -> torch.Tensor:
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
