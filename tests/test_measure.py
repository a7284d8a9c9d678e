"""Costs counted on the real module: parameters by component, FLOPs by two independent counters
(FlopCounterMode on meta, fvcore on CPU) and by hand, and training memory against saved tensors."""

import pytest
import torch

from matcher.cost.measured import (
    FLOP_COMPONENTS,
    PARAM_COMPONENTS,
    measured_forward_flops,
    measured_params,
    measured_training_memory,
)
from matcher.errors import MatcherError
from matcher.models import Model
from matcher.plan.presets import PRESETS, get_preset

TINY = ["la-tiny", "dr-tiny", "dr_da-tiny"]
COUNTER_CASES = {  # every component and option that changes a count
    "la-tiny": ("la-tiny", {}),
    "dr-tiny": ("dr-tiny", {}),
    "dr_da-tiny": ("dr_da-tiny", {}),
    "dense-gelu": ("dr_da-tiny", dict(n_experts=0, top_k=0, mlp_act="gelu")),
    "shared-lowrank": ("dr_da-tiny", dict(n_shared_experts=2, router_rank=8)),
    "parallel-untied": ("la-tiny", dict(mixture="parallel", tie_embeddings=False)),
    "gqa1-wide-da": ("dr_da-tiny", dict(n_kv_heads=1, da_heads=2, da_head_dim=8, depth=3)),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("name", list(PRESETS))
def test_params_by_component_sum_to_the_module(name):
    cfg = get_preset(name)
    counts = measured_params(cfg)
    assert set(counts) == {*PARAM_COMPONENTS, "total"}
    assert sum(counts[c] for c in PARAM_COMPONENTS) == counts["total"]
    with torch.device("meta"):
        assert counts["total"] == sum(p.numel() for p in Model(cfg).parameters())
    assert (counts["lm_head"] == 0) == cfg.tie_embeddings
    assert (counts["da"] > 0) == (cfg.variant == "dr_da")
    assert (counts["dense_mlp"] > 0) == (cfg.n_experts == 0)


def test_params_by_hand_for_la_tiny():
    cfg = get_preset("la-tiny")  # d 64, depth 4, 4 heads of 16, 2 KV heads, 4 experts of 64, tied, vocab 128
    d, D, hd, f = 64, 4, 16, 64
    assert measured_params(cfg) == {
        "embedding": 128 * d, "lm_head": 0, "final_norm": d, "norms": D * 2 * d,
        "sa": D * d * hd * (4 + 2 + 2 + 4), "da": 0, "router": D * 4 * d, "experts": D * 4 * 3 * d * f,
        "shared_experts": 0, "dense_mlp": 0, "total": 255_552,
    }


@pytest.mark.parametrize("name, total", [("llama2-7b", 6_738_415_616), ("mixtral-8x7b", 46_702_792_704)])
def test_published_totals(name, total):
    assert measured_params(get_preset(name))["total"] == total


def test_forward_flops_by_hand_for_la_tiny_and_dr_da_tiny():
    T = 64
    d, D, nh, nkv, hd, V, E, k, f = 64, 4, 4, 2, 16, 128, 4, 2, 64
    flops = measured_forward_flops(get_preset("la-tiny"), seq_len=T, batch=2)
    expected = {
        "sa_proj": D * 2 * d * hd * (2 * nh + 2 * nkv),  # wq, wo: nh heads; wk, wv: nkv heads
        "sa_scores": D * 4 * T * nh * hd,  # QK^T and AV over all T keys
        "da_proj": 0, "da_scores": 0,
        "router": D * 2 * d * E,
        "experts": D * k * 3 * 2 * d * f,  # top_k swiglu experts
        "shared_experts": 0, "dense_mlp": 0,
        "lm_head": 2 * d * V,
    }
    expected["total"] = sum(expected.values())
    assert flops == pytest.approx(expected, rel=1e-12)
    half = measured_forward_flops(get_preset("la-tiny"), seq_len=T, batch=2, causal_half=True)
    assert half == pytest.approx({**expected, "sa_scores": expected["sa_scores"] / 2,
                                  "total": expected["total"] - expected["sa_scores"] / 2}, rel=1e-12)

    cfg = get_preset("dr_da-tiny").replace(da_heads=2, da_head_dim=8)
    flops = measured_forward_flops(cfg, seq_len=T)
    assert flops["da_proj"] == D * 4 * 2 * d * (2 * 8)
    assert flops["da_scores"] == 4 * 2 * 8 * sum(i + 1 for i in range(D))  # depth i sees i + 1 states
    assert flops["router"] == D * 2 * d * cfg.n_experts  # the shared router is applied at every depth
    assert flops["experts"] == D * k * 3 * 2 * d * cfg.d_ff


@pytest.mark.parametrize("case", list(COUNTER_CASES))
def test_flop_counter_and_fvcore_agree_per_component(case):
    name, changes = COUNTER_CASES[case]
    cfg = get_preset(name).replace(**changes)
    torch_flops = measured_forward_flops(cfg, seq_len=24, batch=2, counter="torch")
    fvcore_flops = measured_forward_flops(cfg, seq_len=24, batch=2, counter="fvcore")
    assert set(torch_flops) == {*FLOP_COMPONENTS, "total"}
    assert fvcore_flops == pytest.approx(torch_flops, rel=1e-12)


def test_fvcore_refuses_large_models():
    with pytest.raises(MatcherError, match="counter='torch'"):
        measured_forward_flops(get_preset("la-1b"), seq_len=8, counter="fvcore")


def measured_backward_flops(cfg, seq_len: int) -> float:
    """Backward FLOPs per token (all parameter and input gradients), counted by FlopCounterMode on the
    meta device. Totals only: FlopCounterMode attributes backward ops to modules unreliably when a module
    is applied repeatedly."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = Model(cfg)
    logits = model(torch.zeros(1, seq_len, dtype=torch.long, device="meta"))
    counter = FlopCounterMode(display=False)
    with counter:
        logits.backward(torch.ones_like(logits))
    return counter.get_total_flops() / seq_len


@pytest.mark.parametrize("name", ["la-tiny", "dr_da-100m"])
def test_backward_is_twice_forward_plus_depth_attention_scores(name):
    """Depth attention's backward recomputes its scores (QK^T, half of its score/value FLOPs)."""
    cfg = get_preset(name)
    forward = measured_forward_flops(cfg, seq_len=32)
    expected = 2 * forward["total"] + forward["da_scores"] / 2
    assert measured_backward_flops(cfg, seq_len=32) == pytest.approx(expected, rel=1e-12)


def saved_for_backward_bytes(cfg, batch: int, seq_len: int, bf16: bool) -> int:
    """Independent count on real CPU tensors: unique non-parameter storages autograd saves, plus the
    logits and loss the step holds."""
    torch.manual_seed(0)
    model = Model(cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    idx = torch.randint(0, cfg.vocab_size, (batch, seq_len))
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() != idx.untyped_storage().data_ptr():
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, loss = model(idx, idx)
    for t in (logits, loss, *depth_kv_of_graph(loss)):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(storages.values())


def depth_kv_of_graph(loss) -> list:
    """The depth keys/values that depth attention's backward nodes hold besides their saved tensors."""
    held, seen, nodes = [], set(), [loss.grad_fn]
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        depth_kv = getattr(node, "depth_kv", None)
        if depth_kv is not None:
            held += [depth_kv.keys, depth_kv.values]
        nodes += [next_node for next_node, _ in node.next_functions]
    return held


@pytest.mark.parametrize("name, dtype", [("la-tiny", "bf16"), ("dr_da-tiny", "fp32")])
def test_training_memory_matches_saved_tensors_on_cpu(name, dtype):
    cfg = get_preset(name)
    memory = measured_training_memory(cfg, batch=2, seq_len=32, activation_dtype=dtype)
    n_params = measured_params(cfg)["total"]
    assert memory["weights"] == memory["gradients"] == 4 * n_params
    assert 8 * n_params <= memory["optimizer"] <= 8 * n_params + 8 * 64  # + a step counter per tensor
    assert memory["activations"] == saved_for_backward_bytes(cfg, 2, 32, bf16=dtype == "bf16")
    assert memory["peak"] >= memory["weights"] + memory["optimizer"] + memory["activations"]


def test_live_bytes_agrees_with_torch_mem_tracker():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    cfg = get_preset("la-tiny").replace(depth=2)
    with FakeTensorMode():
        model = Model(cfg)
        optimizer = torch.optim.AdamW(model.parameters())
        idx = torch.zeros(2, 16, dtype=torch.long)
        tracker = MemTracker()
        tracker.track_external(model, optimizer, idx)
        with tracker:
            for _ in range(2):
                _, loss = model(idx, idx)
                loss.backward()
                del loss
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tracker.reset_mod_stats()
    mem_tracker_peak = sum(by_kind["Total"] for by_kind in tracker.get_tracker_snapshot("peak").values())
    assert measured_training_memory(cfg, batch=2, seq_len=16)["peak"] == mem_tracker_peak


def test_recompute_keeps_only_layer_inputs():
    cfg = get_preset("dr-tiny")
    none = measured_training_memory(cfg, batch=4, seq_len=64)
    full = measured_training_memory(cfg, batch=4, seq_len=64, recompute="full")
    layer_inputs = cfg.depth * 4 * 64 * cfg.d_model * 4  # fp32 (B, T, d) per applied layer
    assert layer_inputs < full["activations"] < none["activations"] / 4
    assert full["peak"] < none["peak"]


def test_memory_options_are_checked():
    with pytest.raises(MatcherError, match="recompute"):
        measured_training_memory(get_preset("la-tiny"), 1, 8, recompute="some")
    with pytest.raises(MatcherError, match="activation_dtype"):
        measured_training_memory(get_preset("la-tiny"), 1, 8, activation_dtype="fp16")


def _assert_three_depths_equal_the_whole_model(cfg, seq_len, causal_half=False):
    from matcher.cost.measured import measured_costs_from_three_depths, measured_forward_flops, measured_params

    params, flops = measured_costs_from_three_depths(cfg, seq_len=seq_len, causal_half=causal_half)
    assert params == measured_params(cfg)  # exactly, component by component
    whole = measured_forward_flops(cfg, seq_len=seq_len, causal_half=causal_half)
    assert set(flops) == set(whole)
    for component, value in whole.items():
        assert flops[component] == pytest.approx(value, rel=1e-12, abs=1e-9), component


@pytest.mark.parametrize("name, depth", [("la-tiny", 7), ("dr-tiny", 9), ("dr_da-tiny", 8), ("dr_da-tiny", 3),
                                         ("la-tiny", 1)])
def test_counting_three_depths_and_extrapolating_equals_the_whole_model(name, depth, one_thread):
    _assert_three_depths_equal_the_whole_model(get_preset(name).replace(depth=depth), seq_len=24)


def test_three_depths_extrapolate_every_option(one_thread):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from model_configs import small_configs

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cfg=small_configs(), depth=st.integers(4, 7), qk_norm=st.sampled_from(["none", "head", "full"]),
           causal_half=st.booleans())
    def check(cfg, depth, qk_norm, causal_half):
        _assert_three_depths_equal_the_whole_model(cfg.replace(depth=depth, qk_norm=qk_norm), 8, causal_half)

    check()
