"""The expert dispatch's kernels (models/kernels.py) on their own, against a per-group loop of plain
matmuls: the grouped GEMM in both its forms with its gradients, its fake kernel and FLOP formula, the
layouts the kernels are handed, and the weight gradients combined over a shared layer's applications."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from matcher.models.kernels import WeightGradients, grouped_mm, kernel_layout

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def group_bounds(offsets: torch.Tensor) -> list[tuple[int, int]]:
    ends = offsets.tolist()
    return list(zip([0] + ends[:-1], ends))


def loop_grouped_mm(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The reference: a (M, K) @ b (G, K, N) -> (M, N), or a (K, M) @ b (M, N) -> (G, K, N), one matmul a group."""
    if b.dim() == 3:
        return torch.cat([a[start:end] @ b[g] for g, (start, end) in enumerate(group_bounds(offsets))])
    return torch.stack([a[:, start:end] @ b[start:end] for start, end in group_bounds(offsets)])


def random_groups(seed: int, rows: int = 13, k: int = 5, n: int = 7, groups: int = 4):
    """Random operands whose group sizes include an empty group; offsets int32 cumulative row counts."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 6, (groups,), generator=generator)
    counts[seed % groups] = 0
    counts[-1] += rows - counts.sum().clamp(max=rows)
    offsets = counts.cumsum(0).to(torch.int32)
    a = torch.randn(int(offsets[-1]), k, generator=generator)
    b = torch.randn(groups, k, n, generator=generator)
    return a, b, offsets, generator


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_mm_and_its_gradients_equal_the_per_group_loop(seed):
    a, b, offsets, generator = random_groups(seed)
    grad = torch.randn(a.shape[0], b.shape[2], generator=generator)
    results = []
    for matmul in (grouped_mm, loop_grouped_mm):
        a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = matmul(a_, b_, offsets)
        out.backward(grad)
        results.append((out.detach(), a_.grad, b_.grad))
    for got, want, name in zip(results[0], results[1], ("out", "grad a", "grad b")):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=name)
    empty = [g for g, (start, end) in enumerate(group_bounds(offsets)) if start == end]
    assert empty and all((results[0][2][g] == 0).all() for g in empty)  # an unused group's gradient is zero


def test_the_weight_gradient_form_equals_the_per_group_loop():
    a, _, offsets, generator = random_groups(seed=3)
    grad = torch.randn(a.shape[0], 6, generator=generator)
    got = grouped_mm(a.t(), grad, offsets)  # (G, K, N) from a (K, M) and grad (M, N)
    torch.testing.assert_close(got, loop_grouped_mm(a.t(), grad, offsets), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fake_kernel_gives_both_forms_shapes_in_every_dtype(dtype):
    """aten's own meta kernel takes bf16 only; the counters and the memory model run fp32 on fake tensors."""
    with FakeTensorMode():
        a, b = torch.empty(10, 8, dtype=dtype), torch.empty(3, 8, 12, dtype=dtype)
        offsets = torch.empty(3, dtype=torch.int32)
        out = grouped_mm(a, b, offsets)
        weight_gradient = grouped_mm(a.t(), out, offsets)
    assert (out.shape, out.dtype) == ((10, 12), dtype)
    assert (weight_gradient.shape, weight_gradient.dtype) == ((3, 8, 12), dtype)


def test_flop_formula_counts_both_forms_of_the_grouped_gemm():
    a, b = torch.randn(10, 8), torch.randn(3, 8, 12)
    offsets = torch.tensor([4, 4, 10], dtype=torch.int32)
    with FlopCounterMode(display=False) as counter:
        out = grouped_mm(a, b, offsets)  # (10, 12)
        weight_gradient = grouped_mm(a.t(), out, offsets)  # (3, 8, 12)
    assert weight_gradient.shape == (3, 8, 12)
    assert counter.get_total_flops() == 2 * (2 * 10 * 8 * 12)


def test_grouped_mm_on_layouts_the_kernels_reject_equals_the_loop():
    """Odd widths (unpadded strides), column-major and expanded (stride-0) operands are copied first."""
    a, b, offsets, generator = random_groups(seed=4, k=5, n=3)
    expanded = torch.randn(1, 3, generator=generator).expand(a.shape[0], 3)  # as the gradient of y.sum()
    for left, right in ((a, b), (a.t().contiguous().t(), b), (a, b.transpose(1, 2).contiguous().transpose(1, 2))):
        torch.testing.assert_close(grouped_mm(left, right, offsets), loop_grouped_mm(a, b, offsets))
    torch.testing.assert_close(grouped_mm(a.t(), expanded, offsets), loop_grouped_mm(a.t(), expanded, offsets))


def test_kernel_layout_pads_the_stride_and_keeps_the_major_order():
    """What the grouped GEMM kernels accept: strides padded to 16 bytes and 16-byte aligned data; a copy
    keeps a column-major operand column-major (CUDA's weight-gradient form needs that) and the values."""
    row_major = torch.randn(5, 7)
    column_major = torch.randn(7, 5).t()  # (5, 7), strides (1, 5)
    for t, major in ((row_major, "row"), (column_major, "column")):
        out = kernel_layout(t)
        assert torch.equal(out, t) and out.shape == t.shape and out.data_ptr() % 16 == 0
        inner, outer = (out.stride(-1), out.stride(-2)) if major == "row" else (out.stride(-2), out.stride(-1))
        assert inner == 1 and outer % 4 == 0, (major, out.stride())
    ok = torch.randn(4, 8)
    assert kernel_layout(ok) is ok and kernel_layout(ok.t()).data_ptr() == ok.data_ptr()  # no copy
    misaligned = torch.randn(33)[1:].view(4, 8)  # 4 bytes past an aligned start
    assert misaligned.data_ptr() % 16 and kernel_layout(misaligned).data_ptr() % 16 == 0
    assert torch.equal(kernel_layout(misaligned), misaligned)


@pytest.mark.parametrize("n_applications", [1, 2, 4])
def test_weight_gradients_combined_over_applications_equal_the_loop(n_applications):
    """One square matmul applied n times in a chain (h <- h + h @ b[group of each row]), each application
    with its own grouping: the first application's backward combines every application's rows into b's
    gradient, which equals the loop's, and keeps nothing after."""
    generator = torch.Generator().manual_seed(n_applications)
    width, groups, rows = 6, 5, 11
    b = torch.randn(groups, width, width, generator=generator) / width
    x = torch.randn(rows, width, generator=generator)
    groupings = []
    for _ in range(n_applications):
        counts = torch.zeros(groups, dtype=torch.int64).scatter_add_(
            0, torch.randint(0, groups, (rows,), generator=generator), torch.ones(rows, dtype=torch.int64))
        groupings.append(counts.cumsum(0).to(torch.int32))
    grad = torch.randn(rows, width, generator=generator)

    def run(combined: bool):
        b_, x_ = b.clone().requires_grad_(), x.clone().requires_grad_()
        gradients = WeightGradients()
        h = x_
        for offsets in groupings:
            matmul = gradients.application() if combined else loop_grouped_mm
            h = h + matmul(h, b_, offsets)
        h.backward(grad)
        return h.detach(), x_.grad, b_.grad, gradients

    got, want = run(combined=True), run(combined=False)
    for name, g, w in zip(("out", "grad x", "grad b"), got[:3], want[:3]):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=name)
    assert got[3].combined == {0} and got[3].kept == {}  # combined once, nothing left kept
