"""A hypothesis strategy of small valid model configs: every variant, option and component, sized so
that a forward and backward on the CPU take milliseconds."""

from hypothesis import strategies as st

from matcher.config import DA_ROPES, ModelConfig


@st.composite
def small_configs(draw) -> ModelConfig:
    n_kv = draw(st.sampled_from([1, 2]))
    n_experts = draw(st.integers(0, 5))
    return ModelConfig(
        variant=draw(st.sampled_from(["la", "dr", "dr_da"])), vocab_size=draw(st.integers(5, 40)),
        d_model=draw(st.sampled_from([8, 12, 16])), depth=draw(st.integers(1, 4)),
        n_heads=n_kv * draw(st.integers(1, 2)),
        n_kv_heads=n_kv, head_dim=draw(st.sampled_from([2, 4, 6])), seq_len=16, d_ff=draw(st.integers(1, 20)),
        n_experts=n_experts, top_k=draw(st.integers(1, n_experts)) if n_experts else 0,
        n_shared_experts=draw(st.integers(0, 2)) if n_experts else 0,
        mlp_act=draw(st.sampled_from(["swiglu", "gelu"])), tie_embeddings=draw(st.booleans()),
        da_heads=draw(st.integers(1, 2)), da_head_dim=draw(st.sampled_from([2, 4])),
        router_rank=draw(st.sampled_from([0, 2, 4])) if n_experts else 0,
        mixture=draw(st.sampled_from(["sequential", "parallel"])), da_rope=draw(st.sampled_from(DA_ROPES)),
        router_depth_rope=draw(st.booleans()),
    )
