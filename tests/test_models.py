"""The PyTorch models: decoding equals the full forward, meta-device counting works, parameter counts
match published models, MoE dispatch equals a dense reference, and balancing leaves gradients alone."""

import gc
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_configs import small_configs

from matcher.config import ModelConfig
from matcher.models import Model
from matcher.models.cache import DepthKV
from matcher.models.depth_attention import DepthAttention, depth_rotary_cos_sin
from matcher.models.expert_attention import ExpertAttention
from matcher.models.norm import apply_rotary
from matcher.plan.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(**changes) -> ModelConfig:
    """la-tiny made smaller and untied unless asked, so each test builds in milliseconds."""
    return get_preset("la-tiny").replace(**{"d_model": 32, "depth": 3, "tie_embeddings": False, **changes})


DECODE_CASES = {
    "la-moe": {},
    "dr-moe": dict(variant="dr"),
    "dr_da-moe": dict(variant="dr_da"),
    "la-dense": dict(n_experts=0, top_k=0),
    "dr-dense-gelu": dict(variant="dr", n_experts=0, top_k=0, mlp_act="gelu"),
    "dr_da-dense": dict(variant="dr_da", n_experts=0, top_k=0, da_heads=2, da_head_dim=4),
    "la-tied-gelu": dict(tie_embeddings=True, mlp_act="gelu"),
    "dr_da-shared-lowrank": dict(variant="dr_da", n_shared_experts=1, router_rank=6, da_rope="none"),
    "dr-no-router-rope": dict(variant="dr", router_depth_rope=False, n_kv_heads=1),
    "la-qk-norm-full-bias": dict(qk_norm="full", qkv_bias=True),
    "dr_da-qk-norm-head-norm-bias": dict(variant="dr_da", qk_norm="head", n_kv_heads=1, norm_bias=True),
}


@pytest.mark.parametrize("mixture", ["sequential", "parallel"])
@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_prefill_then_decode_equals_full_forward(case, mixture):
    torch.manual_seed(0)
    cfg = tiny(mixture=mixture, **DECODE_CASES[case])
    model = Model(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 11))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(batch_size=2, max_len=11)
        pieces = [model(idx[:, :4], cache=cache)]  # prefill
        pieces += [model(idx[:, t:t + 1], cache=cache) for t in range(4, 8)]  # one token at a time
        pieces.append(model(idx[:, 8:], cache=cache))  # a chunk after cached tokens
    assert cache.pos == 11
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_cache_has_one_slot_per_applied_layer_also_for_dr():
    for variant in ("la", "dr", "dr_da"):
        model = Model(tiny(variant=variant, depth=5))
        cache = model.new_cache(batch_size=3, max_len=7)
        assert cache.keys.shape == (5, 3, 2, 7, 16)  # (depth, B, n_kv_heads, max_len, head_dim)


def test_generate_is_greedy_argmax_of_the_full_forward():
    torch.manual_seed(1)
    model = Model(tiny(variant="dr_da")).eval()
    prompt = torch.randint(0, 128, (2, 5))
    out = model.generate(prompt, max_new_tokens=6)
    expected = prompt
    with torch.no_grad():
        for _ in range(6):
            expected = torch.cat((expected, model(expected)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, expected)
    stop = int(out[0, 5])  # the first generated token of sequence 0
    stopped = model.generate(prompt[:1], max_new_tokens=6, stop_token=stop)
    assert stopped.shape == (1, 6)


def test_loss_is_cross_entropy_and_ignores_masked_targets():
    torch.manual_seed(2)
    model = Model(tiny())
    idx = torch.randint(0, 128, (2, 9))
    targets = idx.roll(-1, dims=1)
    targets[:, :3] = -100
    logits, loss = model(idx, targets)
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, 128), targets[:, 3:].reshape(-1))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("variant, bf16", [("la", False), ("dr_da", False), ("dr", True), ("dr_da", True)])
def test_recompute_gives_the_same_loss_and_gradients(variant, bf16):
    torch.manual_seed(3)
    model = Model(tiny(variant=variant))
    # recomputation sums a shared layer's expert weight gradients per application; without it they are
    # summed by one GEMM (WeightGradients): equal in fp32, different bf16 roundings, so compare like with like
    weight_gradients = "per_application" if bf16 else "combined"
    idx = torch.randint(0, 128, (2, 10))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.recompute = recompute
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(idx, idx, weight_gradients=weight_gradients)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)


def test_shared_experts_are_cast_once_per_forward_under_autocast():
    """Backward keeps one bf16 copy of the shared layer's expert weights, not one per application."""
    cfg = tiny(variant="dr", depth=4)
    model = Model(cfg)
    expert_bytes = cfg.n_experts * cfg.d_model * cfg.d_ff * 2  # one bf16 matrix stack
    storages, casts = set(), []

    def pack(t):
        if t.dtype == torch.bfloat16 and t.untyped_storage().nbytes() == expert_bytes:
            storages.add(t.untyped_storage().data_ptr())
            casts.append(weakref.ref(t))
            return t.detach()  # backward's own reference to the values, so the cast itself is free to go
        return t

    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), bf16:
        model(torch.randint(0, 128, (2, 16)))
    assert len(storages) == 3  # w1, w3, w2
    gc.collect()
    assert all(cast() is None for cast in casts)  # the casts lived on only where backward saved them


@pytest.mark.parametrize("name", ["la-2b", "dr_da-2b"])
def test_meta_forward_and_backward_of_2b_presets(name):
    cfg = get_preset(name)
    with torch.device("meta"):
        model = Model(cfg)
        idx = torch.randint(0, cfg.vocab_size, (1, 64))
        logits, loss = model(idx, idx)
        loss.backward()
    assert logits.shape == (1, 64, cfg.vocab_size)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dr_holds_exactly_one_la_layer_plus_embeddings():
    cfg = tiny(variant="dr", depth=6)
    dr, la_one, la = Model(cfg), Model(cfg.replace(variant="la", depth=1)), Model(cfg.replace(variant="la"))
    outside = n_params(dr.tok_emb) + n_params(dr.lm_head) + n_params(dr.norm)
    per_layer = n_params(la.layers[0])
    assert len(dr.layers) == 1 and len(la.layers) == 6
    assert len(list(dr.modules())) == len(list(la_one.modules()))
    assert n_params(dr) == n_params(la_one) == per_layer + outside
    assert n_params(la) == 6 * per_layer + outside
    # dr_da adds depth attention (4 matrices) and its norm to the one layer
    dr_da = Model(cfg.replace(variant="dr_da", da_heads=2, da_head_dim=6))
    assert n_params(dr_da) == n_params(dr) + 4 * 32 * 2 * 6 + 32


def test_tied_embeddings_are_one_matrix():
    model = Model(tiny(tie_embeddings=True))
    assert model.lm_head.weight is model.tok_emb.weight
    assert n_params(model) == n_params(Model(tiny())) - 128 * 32


@pytest.mark.parametrize("name, expected", [("llama2-7b", 6_738_415_616), ("mixtral-8x7b", 46_702_792_704),
                                            ("olmoe-1b-7b", 6_919_161_856)])
def test_published_parameter_counts_on_meta(name, expected):
    with torch.device("meta"):
        model = Model(get_preset(name))
    assert n_params(model) == expected


def test_init_scales_residual_projections():
    torch.manual_seed(4)
    cfg = tiny(d_model=128, n_heads=4, n_kv_heads=4, d_ff=256, depth=8)
    model = Model(cfg)
    out_std = 0.02 / (2 * 8) ** 0.5
    assert abs(model.layers[0].attn.wo.weight.std().item() - out_std) < 0.1 * out_std
    assert abs(model.layers[0].ffn.experts.w2.std().item() - out_std) < 0.1 * out_std
    assert abs(model.layers[0].attn.wq.weight.std().item() - 0.02) < 0.002
    assert torch.equal(model.norm.weight, torch.ones(128))


def dense_reference(ffn: ExpertAttention, x: torch.Tensor, depth: int) -> torch.Tensor:
    """Every expert on every token, combined by gates over the top_k of score + bias (no rope, no proj)."""
    router, experts = ffn.router, ffn.experts
    scores = torch.sigmoid(x @ router.expert_keys.T)  # (N, E)
    chosen = torch.topk(scores + router.bias[depth % ffn.n_applications], router.top_k, dim=-1).indices
    mask = torch.zeros_like(scores).scatter(1, chosen, 1.0)
    gates = scores * mask / (scores * mask).sum(-1, keepdim=True)  # (N, E), zero where not selected
    h = torch.einsum("nd,edf->enf", x, experts.w1)
    h = F.silu(h) * torch.einsum("nd,edf->enf", x, experts.w3) if experts.w3 is not None else F.gelu(h)
    every = torch.einsum("enf,efd->end", h, experts.w2)  # (E, N, d)
    return torch.einsum("ne,end->nd", gates, every)


@pytest.mark.parametrize("act", ["swiglu", "gelu"])
def test_moe_dispatch_equals_dense_reference(act):
    torch.manual_seed(5)
    cfg = tiny(variant="dr", n_experts=7, top_k=3, mlp_act=act, router_depth_rope=False)
    ffn = Model(cfg).layers[0].ffn
    with torch.no_grad():
        ffn.router.bias.normal_(0, 0.05)  # the bias must change the selection but not the gates
        ffn.router.expert_keys.normal_(0, 0.5)
    x = torch.randn(2, 13, 32)
    for depth in (0, 2):
        out = ffn(x, depth).view(26, 32)
        torch.testing.assert_close(out, dense_reference(ffn, x.view(26, 32), depth), atol=1e-6, rtol=1e-5)


def test_bias_update_moves_towards_balance_and_leaves_gradients_alone():
    torch.manual_seed(6)
    cfg = tiny(variant="dr", n_experts=6, top_k=1)
    model = Model(cfg)
    router = model.layers[0].ffn.router
    with torch.no_grad():
        router.expert_keys[0] += 1.0  # expert 0 wins almost every token
    idx = torch.randint(0, 128, (4, 16))
    _, loss = model(idx, idx)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    first = model.expert_load()
    assert first.shape == (3, 6) and torch.allclose(first.sum(-1), torch.ones(3))
    load = router.load.clone()
    model.update_router_bias(0.01)
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert "bias" not in dict(model.named_parameters())
    mean = load.mean(-1, keepdim=True)
    assert torch.equal(router.bias, 0.01 * torch.sign(mean - load))
    assert torch.equal(model.expert_load(), first)  # right after an update: the window it used
    for _ in range(30):
        model(idx)
        model.update_router_bias(0.01)
    imbalance = lambda share: (share - 1 / 6).abs().sum(-1).mean()  # L1 distance from uniform
    assert imbalance(model.expert_load()) < 0.6 * imbalance(first)


def test_dense_models_have_no_balancing():
    model = Model(tiny(n_experts=0, top_k=0))
    model.update_router_bias(0.1)
    assert model.expert_load() is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=small_configs(), batch=st.integers(1, 3), seq=st.integers(1, 9))
def test_random_configs_run_forward_and_backward_on_meta_and_cpu(cfg, batch, seq):
    for device in ("meta", "cpu"):
        with torch.device(device):
            model = Model(cfg)
            idx = torch.randint(0, cfg.vocab_size, (batch, seq))
            logits, loss = model(idx, idx)
            loss.backward()
        assert logits.shape == (batch, seq, cfg.vocab_size)
        assert all(p.grad is not None for p in model.parameters())
        if device == "cpu":
            assert torch.isfinite(loss)



@pytest.mark.parametrize("depth, trained_depth", [(1, 4), (3, 4), (5, 4)])
def test_forward_reversed_depth_rope_matches_a_hand_computed_rotation(depth, trained_depth):
    """da_head_dim 4: pairs (x0, x2) and (x1, x3) at frequencies theta^0 = 1 and theta^(-2/4) = 1/100. Pair 0
    turns by the depth index d, pair 1 by the reversed index D - d (D the trained depth; d = 5 is a
    test-time depth beyond it, so D - d < 0)."""
    x0, x1, x2, x3 = 0.3, -1.2, 0.7, 2.0
    a0, a1 = depth * 1.0, (trained_depth - depth) / 100.0
    want = [x0 * math.cos(a0) - x2 * math.sin(a0), x1 * math.cos(a1) - x3 * math.sin(a1),
            x0 * math.sin(a0) + x2 * math.cos(a0), x1 * math.sin(a1) + x3 * math.cos(a1)]
    cos, sin = depth_rotary_cos_sin(depth, trained_depth, 4, 10000.0, reversed_pairs=True, device=torch.device("cpu"))
    got = apply_rotary(torch.tensor([[x0, x1, x2, x3]]), cos, sin)
    torch.testing.assert_close(got, torch.tensor([want]), atol=1e-6, rtol=1e-6)
    # forward turns both pairs by d
    cos, sin = depth_rotary_cos_sin(depth, trained_depth, 4, 10000.0, reversed_pairs=False, device=torch.device("cpu"))
    forward = apply_rotary(torch.tensor([[x0, x1, x2, x3]]), cos, sin)
    torch.testing.assert_close(forward[0, [0, 2]], got[0, [0, 2]])
    assert not torch.allclose(forward[0, [1, 3]], got[0, [1, 3]])


@pytest.mark.parametrize("trained_depth", [2, 4, 9])
def test_forward_reversed_scores_are_forward_scores_of_sign_flipped_queries_and_keys(trained_depth):
    """With queries and keys both rotated, a score depends on the difference of their angles, so the
    trained depth D cancels: (D - i) - (D - j) = j - i. forward_reversed is forward with the odd pairs
    turning the other way, R(-a) = F R(a) F with F flipping a pair's second component, so its scores are
    forward's scores of F q and F k: the same model family, which a learned projection absorbs."""
    torch.manual_seed(0)
    dim, depths = 8, 4
    q, k = torch.randn(depths, dim), torch.randn(depths, dim)

    def scores(q, k, reversed_pairs):
        rotated = [(apply_rotary(q[d:d + 1], *cs), apply_rotary(k[d:d + 1], *cs)) for d in range(depths)
                   for cs in [depth_rotary_cos_sin(d, trained_depth, dim, 10000.0, reversed_pairs=reversed_pairs,
                                                   device=torch.device("cpu"))]]
        return torch.stack([torch.stack([(qi * kj).sum() for _, kj in rotated]) for qi, _ in rotated])

    flip = torch.ones(dim)
    flip[dim // 2 + 1::2] = -1  # the second component (x[i + dim/2]) of each odd-numbered pair i
    reversed_scores = scores(q, k, True)
    torch.testing.assert_close(reversed_scores, scores(q * flip, k * flip, False), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(reversed_scores, scores(q, k, False), atol=1e-3)


def test_a_test_time_depth_keeps_the_trained_depth_of_the_reversed_index():
    cfg = tiny(variant="dr_da", da_rope="forward_reversed", depth=3)
    assert Model(cfg).layers[0].depth_attn.trained_depth == 3
    assert Model(cfg.replace(depth=7), trained_depth=3).layers[0].depth_attn.trained_depth == 3


def concatenated_prefix_reference(attn, x, depth, past):
    """Depth attention as SDPA over the concatenated keys/values so far (the form that saves O(depth^2))."""
    N = x.shape[0] * x.shape[1]
    q, k, v = (w(x).view(N, 1, attn.n_heads, attn.head_dim).transpose(1, 2) for w in (attn.wq, attn.wk, attn.wv))
    if attn.rope != "none":  # the rotation itself is checked by hand below
        cos, sin = depth_rotary_cos_sin(depth, attn.trained_depth, attn.head_dim, attn.rope_theta,
                                        reversed_pairs=attn.rope == "forward_reversed", device=x.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    past.append((k, v))
    keys, values = (torch.cat(kvs, dim=2) for kvs in zip(*past))
    y = F.scaled_dot_product_attention(q, keys, values)
    return attn.wo(y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


@pytest.mark.parametrize("heads, rope", [(1, "forward"), (3, "none"), (2, "forward_reversed")])
def test_depth_attention_equals_sdpa_over_the_concatenated_prefix(heads, rope):
    torch.manual_seed(0)
    attn = DepthAttention(tiny(variant="dr_da", da_heads=heads, da_head_dim=8, da_rope=rope))
    depth = 5
    xs = [torch.randn(2, 3, 32, requires_grad=True) for _ in range(depth)]
    grad_outs = [torch.randn(2, 3, 32) for _ in range(depth)]

    def outputs_and_grads(attend, state):
        outs, h = [], xs[0]
        for i in range(depth):
            outs.append(attend(attn, h, i, state))
            if i + 1 < depth:  # the next depth's input depends on this output, as in the model
                h = xs[i + 1] + outs[-1]
        grads = torch.autograd.grad(outs, xs + list(attn.parameters()), grad_outs)
        return [o.detach() for o in outs] + list(grads)

    got = outputs_and_grads(DepthAttention.forward, DepthKV(depth))
    want = outputs_and_grads(concatenated_prefix_reference, [])
    traced = outputs_and_grads(traced_form, DepthKV(depth))
    for a, b, c in zip(got, want, traced, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(c, b, atol=1e-6, rtol=1e-5)


def traced_form(attn, x, depth, depth_kv):
    """DepthAttention.forward as torch.compile traces it (DepthKV.attend_traced), run eagerly."""
    original = torch.compiler.is_compiling
    torch.compiler.is_compiling = lambda: True
    try:
        return attn(x, depth, depth_kv)
    finally:
        torch.compiler.is_compiling = original


def test_the_traced_depth_attention_saves_each_depths_keys_and_values_once():
    """The form torch.compile traces keeps, for backward, references to each depth's own q, k and v and no
    (depth+1)-long copy of the keys/values: every saved tensor as large as one depth's q is one of them."""
    torch.manual_seed(0)
    depth, shape = 6, (6, 2, 1, 8)  # (N, heads, 1, head_dim)
    state = DepthKV(depth)
    inputs = [[torch.randn(shape, requires_grad=True) for _ in "qkv"] for _ in range(depth)]
    saved = set()

    def pack(t):
        if t.numel() >= math.prod(shape):
            saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = [state.attend_traced(i, q, k, v) for i, (q, k, v) in enumerate(inputs)]
    assert saved == {t.untyped_storage().data_ptr() for qkv in inputs for t in qkv}
    torch.autograd.grad(sum(o.sum() for o in outs), [t for qkv in inputs for t in qkv])
    with pytest.raises(RuntimeError, match="must run in order"):
        state.attend_traced(2, *inputs[2])


def test_qk_norm_normalises_queries_and_keys_per_head_or_over_the_projection():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32)
    for kind in ("head", "full"):
        attn = Model(tiny(qk_norm=kind)).layers[0].attn
        q = attn.wq(x)
        normed = attn.q_norm(q if kind == "full" else q.view(2, 5, attn.n_heads, attn.head_dim))
        rms = normed.pow(2).mean(-1).sqrt()  # unit gains at init: unit RMS over the normalised axis
        torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-3, rtol=0)
        assert attn.q_norm.weight.shape == ((attn.n_heads * attn.head_dim,) if kind == "full" else (attn.head_dim,))
    plain, biased = Model(tiny()).layers[0].attn, Model(tiny(qkv_bias=True)).layers[0].attn
    assert plain.wq.bias is None and biased.wq.bias is not None and biased.wo.bias is None


def test_biases_start_at_zero_and_norm_biases_shift_the_output():
    model = Model(tiny(qkv_bias=True, norm_bias=True, qk_norm="head"))
    biases = {name: p for name, p in model.named_parameters() if name.endswith(".bias")}
    assert {"norm.bias", "layers.0.attn_norm.bias", "layers.0.attn.wq.bias", "layers.0.attn.q_norm.bias"} <= set(biases)
    assert all(torch.count_nonzero(p) == 0 for p in biases.values())
    norm = model.norm
    x = torch.randn(3, 32)
    with torch.no_grad():
        norm.bias.fill_(0.5)
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (32,), norm.weight, norm.eps) + 0.5)


@pytest.mark.parametrize("case", ["la-moe", "dr_da-moe", "dr-dense-gelu"])
def test_left_padded_prompts_decode_as_each_prompt_alone(case):
    """Prompts of different lengths in one batch (left padding with pad_left) give each row the logits it
    gets alone: padding is never attended to and positions count from each row's first token."""
    torch.manual_seed(2)
    model = Model(tiny(**DECODE_CASES[case])).eval()
    prompts = [torch.randint(0, 128, (n,)) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    pad_left = torch.tensor([width - len(p) for p in prompts])
    batch = torch.stack([F.pad(p, (width - len(p), 0), value=0) for p in prompts])
    with torch.no_grad():
        cache = model.new_cache(3, width + 2, pad_left=pad_left)
        first = model(batch, cache=cache)[:, -1]
        nxt = first.argmax(-1, keepdim=True)
        second = model(nxt, cache=cache)[:, -1]
        for row, prompt in enumerate(prompts):
            alone = model(torch.cat((prompt, nxt[row]))[None])  # (1, n+1, vocab)
            torch.testing.assert_close(first[row], alone[0, -2], atol=1e-5, rtol=0)
            torch.testing.assert_close(second[row], alone[0, -1], atol=1e-5, rtol=0)
    out = model.generate(batch, 4, pad_left=pad_left)
    for row, prompt in enumerate(prompts):
        assert torch.equal(out[row, width:], model.generate(prompt[None], 4)[0, len(prompt):])
