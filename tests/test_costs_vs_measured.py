"""The analytic cost model (matcher/costs.py) against the real modules (matcher/measure.py), component
by component: parameters exactly, forward FLOPs within 0.1%, training memory within 10%."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_configs import small_configs

from matcher.costs import Conventions, forward_flops_per_token, memory, param_counts
from matcher.measure import (
    FLOP_COMPONENTS,
    PARAM_COMPONENTS,
    measured_forward_flops,
    measured_params,
    measured_training_memory,
)
from matcher.presets import PRESETS, get_preset

FLOP_RTOL = 1e-3
MEMORY_RTOL = 0.10


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def assert_params_match(cfg):
    analytic, measured = param_counts(cfg), measured_params(cfg)
    for component in PARAM_COMPONENTS:
        assert analytic.by_component[component] == measured[component], component
    assert analytic.total == measured["total"]


def assert_flops_match(cfg, seq_len: int, causal_half: bool):
    analytic = forward_flops_per_token(cfg, Conventions(causal_half=causal_half), seq_len=seq_len)
    measured = measured_forward_flops(cfg, seq_len=seq_len, causal_half=causal_half)
    for component in FLOP_COMPONENTS:
        assert measured[component] == pytest.approx(analytic[component], rel=FLOP_RTOL, abs=1e-9), component


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_params_match_per_component(name):
    assert_params_match(get_preset(name))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_forward_flops_match_per_component(name):
    cfg = get_preset(name)
    assert_flops_match(cfg, cfg.seq_len, causal_half=False)


@pytest.mark.parametrize("name", ["la-tiny", "dr_da-100m", "mixtral-8x7b"])
def test_preset_forward_flops_match_with_causal_halving(name):
    cfg = get_preset(name)
    assert_flops_match(cfg, cfg.seq_len, causal_half=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=small_configs(), seq_len=st.integers(1, 24), causal_half=st.booleans())
def test_random_configs_match(cfg, seq_len, causal_half):
    assert_params_match(cfg)
    assert_flops_match(cfg, seq_len, causal_half)


@pytest.mark.parametrize("name, dtype, recompute", [
    ("la-tiny", "fp32", "none"), ("la-tiny", "bf16", "full"),
    ("dr-tiny", "bf16", "none"), ("dr-tiny", "fp32", "full"),
    ("dr_da-tiny", "fp32", "none"), ("dr_da-tiny", "bf16", "full"),
])
def test_tiny_training_memory_within_ten_percent(name, dtype, recompute):
    cfg = get_preset(name)
    batch, seq_len = 8, cfg.seq_len
    analytic = memory(cfg, batch, seq_len, Conventions(activation_dtype=dtype, recompute=recompute))
    measured = measured_training_memory(cfg, batch, seq_len, recompute=recompute, activation_dtype=dtype)
    assert analytic.weights_bytes == measured["weights"]
    assert analytic.gradients_bytes == measured["gradients"]
    assert analytic.optimizer_bytes == pytest.approx(measured["optimizer"], rel=1e-3)  # + step counters
    if recompute == "none":
        assert analytic.activations_bytes == pytest.approx(measured["activations"], rel=MEMORY_RTOL)
        assert analytic.training_bytes == pytest.approx(measured["peak"], rel=MEMORY_RTOL)
    else:
        # the peak comes while the last application is rebuilt, before most gradients exist; counting
        # every gradient (training_bytes) bounds it from above
        before_gradients = analytic.weights_bytes + analytic.optimizer_bytes + analytic.activations_bytes
        assert before_gradients == pytest.approx(measured["peak"], rel=MEMORY_RTOL)
        assert measured["peak"] <= analytic.training_bytes


@st.composite
def flash_attention_configs(draw):
    """Heads of 2 are left out: their rotated q/k have no unit-stride last dim, so CPU SDPA takes the math
    path, which keeps T x T probabilities that flash attention (every real head size) does not."""
    cfg = draw(small_configs())
    return cfg.replace(head_dim=max(cfg.head_dim, 4), da_head_dim=max(cfg.da_head_dim, 4))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=flash_attention_configs(), batch=st.integers(1, 3), seq_len=st.integers(2, 12),
       dtype=st.sampled_from(["fp32", "bf16"]))
def test_random_config_activations_within_ten_percent(cfg, batch, seq_len, dtype):
    analytic = memory(cfg, batch, seq_len, Conventions(activation_dtype=dtype)).activations_bytes
    measured = measured_training_memory(cfg, batch, seq_len, activation_dtype=dtype)["activations"]
    assert measured == pytest.approx(analytic, rel=MEMORY_RTOL)


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_depth_attention_memory_grows_linearly_in_depth(recompute):
    """Depth attention's bytes (dr_da minus the same dr) are proportional to depth: each application
    saves the same tensors and the depth keys/values are stored once, one slot per depth. Attending over
    a concatenated prefix saved i + 1 keys/values at depth index i: quadratic."""
    cfg = get_preset("dr_da-tiny").replace(d_model=32, n_experts=4, seq_len=16)
    batch = 2
    extra = {}
    for depth in (1, 2, 4):
        da = cfg.replace(depth=depth)
        extra[depth] = (measured_training_memory(da, batch, 16, recompute=recompute)["activations"]
                        - measured_training_memory(da.replace(variant="dr"), batch, 16, recompute=recompute)
                        ["activations"])
        if recompute == "none":
            conv = Conventions(activation_dtype="fp32")
            assert extra[depth] == (memory(da, batch, 16, conv).activations_bytes
                                    - memory(da.replace(variant="dr"), batch, 16, conv).activations_bytes)
    assert extra[1] > 0
    assert extra[2] == 2 * extra[1] and extra[4] == 4 * extra[1]
