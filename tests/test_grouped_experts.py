"""The grouped-GEMM expert dispatch (models/expert_attention.py, on the kernels of models/kernels.py):
outputs and gradients equal a per-expert loop for random routings (experts without tokens included), on
any layout the kernels are given, on meta and fake tensors in fp32, and under torch.compile without graph
breaks or recompiles. The kernels alone: tests/test_kernels.py."""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from matcher.models import Model
from matcher.models.expert_attention import Experts, ExpertsForward
from matcher.models.kernels import WeightGradients
from matcher.models.model import compile_model
from matcher.plan.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def loop_reference(experts: Experts, x: torch.Tensor, chosen: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """The dispatch as one matmul chain per expert over the tokens that chose it."""
    y = torch.zeros_like(x)
    for e in range(experts.w1.shape[0]):
        token, slot = (chosen == e).nonzero(as_tuple=True)
        if len(token) == 0:
            continue
        rows = x[token]
        h = rows @ experts.w1[e]
        h = F.gelu(h) if experts.w3 is None else F.silu(h) * (rows @ experts.w3[e])
        y = y.index_add(0, token, (h @ experts.w2[e]) * gates[token, slot, None])
    return y


def random_case(act: str, d: int, f: int, seed: int, n_tokens: int = 23, n_experts: int = 7, top_k: int = 3):
    """Experts with random weights and a random top_k routing that leaves two experts without tokens."""
    generator = torch.Generator().manual_seed(seed)
    cfg = get_preset("la-tiny").replace(d_model=d, d_ff=f, n_experts=n_experts, top_k=top_k, mlp_act=act,
                                     router_depth_rope=False)
    experts = Experts(cfg)
    with torch.no_grad():
        for w in (experts.w1, experts.w3, experts.w2):
            if w is not None:
                w.copy_(torch.randn(w.shape, generator=generator) / w.shape[1] ** 0.5)
    scores = torch.rand(n_tokens, n_experts, generator=generator)
    unused = torch.randperm(n_experts, generator=generator)[:2]
    scores[:, unused] = -1.0
    chosen = scores.topk(top_k, dim=-1).indices  # (N, k), distinct per token
    gates = torch.rand(n_tokens, top_k, generator=generator).requires_grad_()
    x = torch.randn(n_tokens, d, generator=generator).requires_grad_()
    grad = torch.randn(n_tokens, d, generator=generator)
    return experts, x, chosen, gates, grad, unused


def tokens_per_expert(chosen: torch.Tensor, n_experts: int) -> torch.Tensor:
    return torch.bincount(chosen.flatten(), minlength=n_experts)


def outputs_and_gradients(experts, x, chosen, gates, grad, dispatch):
    tensors = {"x": x, "gates": gates, "w1": experts.w1, "w2": experts.w2, "w3": experts.w3}
    tensors = {name: t for name, t in tensors.items() if t is not None}
    for t in tensors.values():
        t.grad = None
    y = dispatch()
    y.backward(grad)
    return y.detach(), {name: t.grad.clone() for name, t in tensors.items()}


@pytest.mark.parametrize("act", ["swiglu", "gelu"])
@pytest.mark.parametrize("d, f", [(16, 24), (5, 3)])  # 16-byte aligned rows, and not
@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_dispatch_equals_the_per_expert_loop_in_fp32(act, d, f, seed):
    experts, x, chosen, gates, grad, unused = random_case(act, d, f, seed)
    counts = tokens_per_expert(chosen, experts.w1.shape[0])
    assert (counts[unused] == 0).all()
    got = outputs_and_gradients(experts, x, chosen, gates, grad, lambda: experts(x, chosen, gates, counts))
    want = outputs_and_gradients(experts, x, chosen, gates, grad, lambda: loop_reference(experts, x, chosen, gates))
    torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
    assert got[1].keys() == want[1].keys()
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], atol=1e-6, rtol=1e-5, msg=name)
    # an expert no token chose still gets a gradient, zero: DDP needs no find_unused_parameters
    assert (got[1]["w1"][unused] == 0).all() and (got[1]["w2"][unused] == 0).all()


@pytest.mark.parametrize("act", ["swiglu", "gelu"])
def test_grouped_dispatch_under_bf16_autocast_is_close_to_the_fp32_loop(act):
    experts, x, chosen, gates, grad, _ = random_case(act, 32, 48, seed=2)
    counts = tokens_per_expert(chosen, experts.w1.shape[0])

    def bf16_dispatch():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return experts(x, chosen, gates, counts)

    got = outputs_and_gradients(experts, x, chosen, gates, grad, bf16_dispatch)
    want = outputs_and_gradients(experts, x, chosen, gates, grad, lambda: loop_reference(experts, x, chosen, gates))
    relative_error = lambda a, b: ((a.float() - b).norm() / b.norm()).item()
    assert relative_error(got[0], want[0]) < 2e-2  # bf16 keeps ~3 significant digits
    for name in want[1]:
        assert got[1][name].dtype == torch.float32, name  # gradients reach the fp32 weights
        assert relative_error(got[1][name], want[1][name]) < 2e-2, name


def test_an_expanded_incoming_gradient_is_accepted():
    """y.sum().backward() hands grouped_mm a stride-0 gradient, which the kernels reject unless copied."""
    experts, x, chosen, gates, _, _ = random_case("swiglu", 16, 24, seed=3)
    experts(x, chosen, gates, tokens_per_expert(chosen, 7)).sum().backward()
    got = experts.w1.grad
    experts.w1.grad = None
    loop_reference(experts, x, chosen, gates).sum().backward()
    torch.testing.assert_close(got, experts.w1.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("where", ["meta", "fake"])
def test_fp32_dispatch_runs_forward_and_backward_on_meta_and_fake_tensors(where):
    """The aten op's own meta kernel takes bf16 only; the counters and memory model run fp32 there."""
    cfg = get_preset("dr-tiny")
    mode = torch.device("meta") if where == "meta" else FakeTensorMode()
    with mode:
        model = Model(cfg)
        idx = torch.zeros(2, 16, dtype=torch.long)
        _, loss = model(idx, idx)
        loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("preset, recompute", [("dr-tiny", False), ("dr_da-tiny", False), ("dr_da-tiny", True)])
def test_compiled_training_matches_eager_without_graph_breaks_or_recompiles(preset, recompute):
    """20 steps of a compiled tiny dr (and dr_da, also with recomputation) model: one graph, compiled at the
    first step and never again, however the tokens are routed; the losses follow the eager run. aot_eager
    traces forward and backward as inductor does (dynamo, the experts' fake kernel, their autograd, depth
    attention's traced form) without its C++ build, which takes minutes here; tests/test_train.py trains
    with inductor."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = get_preset(preset).replace(depth=3, n_experts=9, vocab_size=64)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (2, 32), generator=generator) for _ in range(20)]
    counter = CompileCounterWithBackend("aot_eager")
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = Model(cfg)
        model.recompute = recompute
        step_model = compile_model(model, backend=counter) if compiled else model
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses[compiled], frames = [], []
        for idx in batches:
            _, loss = step_model(idx, idx)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.update_router_bias(1e-3)
            losses[compiled].append(loss.item())
            frames.append(counter.frame_count)
    assert frames == [1] * 20, "compiled once, at the first step"
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    assert model.layers[0].ffn.router.last_load.sum() > 0  # the load was counted inside the graph
    torch.testing.assert_close(losses[True], losses[False], atol=0, rtol=1e-4)


def chained_applications(experts, x, routings, dispatch):
    """Applies the experts once per routing, each application's input the previous one's output added to
    its input (as a shared layer's applications follow one another in the residual stream)."""
    h = x
    for chosen, gates in routings:
        h = h + dispatch(h, chosen, gates)
    return h


@pytest.mark.parametrize("act", ["swiglu", "gelu"])
@pytest.mark.parametrize("n_applications", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_weight_gradients_combined_over_applications_equal_the_per_expert_loop(act, n_applications, seed):
    """With a WeightGradients (as Model.forward passes to a shared layer) each application's backward keeps
    its rows and the first application's computes the weight gradients of all: they equal the loop's."""
    experts, x, _, _, grad, _ = random_case(act, 16, 24, seed)
    routings = []
    for application in range(n_applications):
        _, _, chosen, gates, _, unused = random_case(act, 16, 24, seed=100 * seed + application)
        routings.append((chosen, gates))
    n_experts = experts.w1.shape[0]

    def combined():
        forward_state = ExpertsForward(WeightGradients())
        return chained_applications(experts, x, routings,
                                    lambda h, chosen, gates: experts(h, chosen, gates,
                                                                     tokens_per_expert(chosen, n_experts),
                                                                     forward_state))

    def reference():
        return chained_applications(experts, x, routings,
                                    lambda h, chosen, gates: loop_reference(experts, h, chosen, gates))

    gates_of = {f"gates{i}": gates for i, (_, gates) in enumerate(routings)}
    got, want = {}, {}
    for result, dispatch in ((got, combined), (want, reference)):
        for t in gates_of.values():
            t.grad = None
        y, grads = outputs_and_gradients(experts, x, routings[0][0], routings[0][1], grad, dispatch)
        result.update(y=y, **grads, **{name: t.grad.clone() for name, t in gates_of.items()})
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5, msg=name)


def test_a_weight_gradient_kept_after_the_combining_backward_is_an_error():
    """Applications that do not feed one another could run the combining backward first and lose the
    others' weight gradients: that is refused, not silently wrong."""
    experts, x, chosen, gates, grad, _ = random_case("swiglu", 16, 24, seed=4)
    counts = tokens_per_expert(chosen, experts.w1.shape[0])
    forward_state = ExpertsForward(WeightGradients())
    first = experts(x, chosen, gates, counts, forward_state)
    second = experts(x, chosen, gates, counts, forward_state)  # reads x, not the first application's output
    first.backward(grad, retain_graph=True)
    with pytest.raises(RuntimeError, match="would be lost"):
        second.backward(grad)


def weight_gradient_calls(model, idx, combine: bool, bf16: bool = False):
    """The model's parameter gradients, backward FLOPs and the number of weight-gradient grouped GEMMs
    (those with a 3-D output) of one step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountWeightGradients(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.ops.matcher.grouped_mm.default and out.dim() == 3:
                CountWeightGradients.calls += 1
            return out

    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        _, loss = model(idx, idx, weight_gradients="combined" if combine else "per_application")
    with FlopCounterMode(display=False) as flops, CountWeightGradients():
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return grads, flops.get_total_flops(), CountWeightGradients.calls


@pytest.mark.parametrize("name", ["dr-tiny", "dr_da-tiny"])
def test_a_shared_layer_computes_each_expert_weight_gradient_once_with_the_same_flops(name):
    cfg = get_preset(name)
    torch.manual_seed(0)
    model = Model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    per_application = weight_gradient_calls(model, idx, combine=False)
    combined = weight_gradient_calls(model, idx, combine=True)
    assert per_application[2] == 3 * cfg.depth and combined[2] == 3  # w1, w3, w2
    assert combined[1] == per_application[1]  # the same FLOPs, fewer and larger GEMMs
    for param in per_application[0]:
        torch.testing.assert_close(combined[0][param], per_application[0][param], atol=1e-6, rtol=1e-5, msg=param)
    # bf16: each application's bf16 gradient was summed in bf16; one GEMM now sums them all at once
    per_application, combined = (weight_gradient_calls(model, idx, combine, bf16=True) for combine in (False, True))
    for param in per_application[0]:
        assert combined[0][param].dtype == torch.float32
        torch.testing.assert_close(combined[0][param], per_application[0][param], atol=1e-4, rtol=2e-2, msg=param)
