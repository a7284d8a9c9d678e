"""The analytic cost model against published counts and hand-derived formulas."""

import pytest

from matcher.config import ModelConfig
from matcher.cost.analytic import (
    Conventions,
    activation_bytes,
    da_cache_bytes,
    forward_flops_per_token,
    memory,
    param_counts,
    sa_kv_cache_bytes,
    train_flops_per_token,
)
from matcher.errors import ConfigError
from matcher.plan.presets import PRESETS, get_preset


def test_llama2_7b_published_parameter_count():
    assert param_counts(get_preset("llama2-7b")).total == 6_738_415_616


def test_olmoe_and_qwen3_published_parameter_counts():
    # allenai/OLMoE-1B-7B-0924: 6,919,161,856 parameters (65,536 of them the QK-norm gains)
    olmoe = get_preset("olmoe-1b-7b")
    assert param_counts(olmoe).total == 6_919_161_856
    assert param_counts(olmoe).total - param_counts(olmoe.replace(qk_norm="none")).total == 16 * 2 * 2048
    # Qwen/Qwen3-0.6B: "Number of Parameters (Non-Embedding): 0.44B", per-head QK-norm, tied embeddings
    qwen = param_counts(get_preset("qwen3-0.6b"))
    assert round(qwen.non_embedding / 1e9, 2) == 0.44 and qwen.total == 596_049_920


def test_qkv_biases_are_parameters_without_flops():
    cfg = get_preset("la-tiny")
    biased = cfg.replace(qkv_bias=True)
    added = cfg.depth * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
    assert param_counts(biased).total - param_counts(cfg).total == added
    assert forward_flops_per_token(biased) == forward_flops_per_token(cfg)
    # a bias beside every norm's gain: 2 per layer (SA, FFN) and the final norm, d_model each
    with_norm_bias = cfg.replace(norm_bias=True)
    assert param_counts(with_norm_bias).total - param_counts(cfg).total == (2 * cfg.depth + 1) * cfg.d_model


def test_decoders_out_of_scope_get_one_clear_message():
    from matcher.config import from_mapping

    base = get_preset("la-tiny").to_dict()
    for key, what in (("kv_lora_rank", "multi-head latent attention"), ("sliding_window", "sliding-window"),
                      ("first_k_dense_replace", "mixed dense/MoE")):
        with pytest.raises(ConfigError, match=f"{what}.* is out of scope: .*drop the field"):
            from_mapping(ModelConfig, {**base, key: 4}, "model")


def test_mixtral_8x7b_published_parameter_counts():
    counts = param_counts(get_preset("mixtral-8x7b"))
    assert counts.total == 46_702_792_704
    # Mistral AI quotes 12.9B active parameters per token
    assert 12.85e9 < counts.active < 12.95e9


@pytest.mark.parametrize("la_name", ["la-tiny", "la-1b", "la-2b"])
def test_dr_has_exactly_one_la_layer_plus_embeddings(la_name):
    la = get_preset(la_name)
    dr = la.replace(variant="dr")
    la_counts, dr_counts = param_counts(la), param_counts(dr)
    embeddings = la_counts.embedding + la.d_model  # + final norm
    one_layer = (la_counts.total - embeddings) // la.depth
    assert dr_counts.total == one_layer + embeddings
    # dr applies its layer `depth` times: same FLOPs as la with the same layer
    assert train_flops_per_token(dr) == train_flops_per_token(la)
    assert dr_counts.applied == la_counts.applied


def test_hand_derived_flops_of_a_small_moe():
    cfg = ModelConfig(variant="dr_da", vocab_size=100, d_model=32, depth=3, n_heads=4, n_kv_heads=2, seq_len=10,
                      d_ff=48, n_experts=6, top_k=2, n_shared_experts=1, router_rank=8, da_heads=2, da_head_dim=8)
    f = forward_flops_per_token(cfg)
    hd = 8
    assert f["sa_proj"] == 3 * 2 * (32 * 4 * hd + 2 * 32 * 2 * hd + 4 * hd * 32)
    assert f["sa_scores"] == 3 * 2 * 2 * 10 * 4 * hd
    assert f["da_proj"] == 3 * 2 * 4 * 32 * 16
    assert f["da_scores"] == 2 * 2 * 16 * (1 + 2 + 3)
    assert f["router"] == 3 * 2 * (32 * 8 + 8 * 6)
    assert f["experts"] == 3 * 2 * 2 * 3 * 32 * 48
    assert f["shared_experts"] == 3 * 2 * 1 * 3 * 32 * 48
    assert f["lm_head"] == 2 * 32 * 100
    assert f["dense_mlp"] == 0
    halved = forward_flops_per_token(cfg, Conventions(causal_half=True))
    assert halved["sa_scores"] == f["sa_scores"] / 2
    assert train_flops_per_token(cfg) == 3 * sum(f.values())


def test_hand_derived_parameters_of_a_small_moe():
    cfg = ModelConfig(variant="dr_da", vocab_size=100, d_model=32, depth=3, n_heads=4, n_kv_heads=2, seq_len=10,
                      d_ff=48, n_experts=6, top_k=2, n_shared_experts=1, router_rank=8, da_heads=2, da_head_dim=8,
                      mlp_act="gelu", tie_embeddings=True)
    p = param_counts(cfg)
    layer = 3 * 32 + (32 * 32 + 2 * 32 * 16 + 32 * 32) + 4 * 32 * 16 + (32 * 8 + 8 * 6) + 7 * 2 * 32 * 48
    assert p.total == 100 * 32 + 32 + layer
    assert p.embedding == 100 * 32
    assert p.active == p.total - 4 * 2 * 32 * 48
    assert p.applied == 100 * 32 + 32 + 3 * (layer - 4 * 2 * 32 * 48)
    parallel = param_counts(cfg.replace(mixture="parallel"))
    assert p.total - parallel.total == 2 * 32


def test_dense_model_has_no_router_or_experts():
    cfg = get_preset("llama2-7b")
    f = forward_flops_per_token(cfg)
    assert f["router"] == f["experts"] == f["shared_experts"] == 0
    assert f["dense_mlp"] == 32 * 2 * 3 * 4096 * 11008
    # the PaLM rule of thumb: 6N + 12 L d T (full attention) for a dense decoder
    norms = (2 * 32 + 1) * 4096  # elementwise, not matrix products
    n = param_counts(cfg).non_embedding - norms + 32000 * 4096  # + LM-head matmul
    assert train_flops_per_token(cfg) == pytest.approx(6 * n + 12 * 32 * 4096 * 4096, rel=1e-9)


def test_memory_bytes_by_dtype():
    cfg = get_preset("la-tiny")
    total = param_counts(cfg).total
    m = memory(cfg, batch=2)
    assert (m.weights_bytes, m.gradients_bytes, m.optimizer_bytes) == (4 * total, 4 * total, 8 * total)
    bf16 = memory(cfg, batch=2, conv=Conventions(weight_dtype="bf16", optimizer_dtype="bf16"))
    assert bf16.weights_bytes == 2 * total and bf16.optimizer_bytes == 4 * total
    assert m.training_bytes == m.weights_bytes + m.gradients_bytes + m.optimizer_bytes + m.activations_bytes


def test_caches():
    cfg = get_preset("dr_da-tiny")
    # every applied layer has its own SA cache, also in dr: 2 (k, v) x kv heads x head_dim x depth
    assert sa_kv_cache_bytes(cfg, batch=3, context=100) == 3 * 100 * 4 * 2 * 2 * 16 * 2
    # the DA cache holds the token in flight only: constant in the context
    assert da_cache_bytes(cfg, batch=3) == 3 * 4 * 2 * 1 * 16 * 2
    assert da_cache_bytes(cfg.replace(variant="dr"), batch=3) == 0
    assert memory(cfg, 3, context=10).da_cache_bytes == memory(cfg, 3, context=1000).da_cache_bytes


def test_recompute_saves_activation_memory_for_deep_models():
    cfg = get_preset("la-1b")
    full = activation_bytes(cfg, 1, 2048, Conventions(recompute="full"))
    none = activation_bytes(cfg, 1, 2048, Conventions(recompute="none"))
    # the vocabulary-sized logits of the loss are kept in both modes
    assert full < none / 3


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_positive_costs(name):
    cfg = get_preset(name)
    p = param_counts(cfg)
    assert 0 < p.active <= p.total and p.embedding + p.non_embedding == p.total
    assert p.applied >= p.active
    assert train_flops_per_token(cfg) > 6 * (p.applied - p.embedding)
