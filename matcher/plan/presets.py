"""Named model presets, one function each, in one registry keyed by a name that carries the size.

Sizes and why:
- `*-tiny`: trains on a laptop CPU in minutes on the embedded math task (byte vocabulary of 128,
  d_model 64, 4 applications). The dr/dr_da counterparts keep d_model, heads and top_k and trade the
  layers they no longer have for more experts, matched to la-tiny by `matcher plan`.
- `la-100m`: a ~100M-parameter MoE baseline for single-GPU throughput and memory checks.
- `la-1b`, `la-2b`: layer-stacked MoE baselines at depth 32 in the style of OLMoE/DeepSeek-MoE
  (fine-grained experts, top-2 of 16, GQA with 4 query heads per KV head, untied embeddings, the
  GPT-NeoX vocabulary padded to 50304). Widths 1024 and 1536 with expert widths d_model/2 put the
  totals at 0.99B and 2.02B parameters (`matcher presets` prints them).
- `dr-*`, `dr_da-*`: one shared layer applied `depth` times, with the target's d_model, heads,
  top_k and depth, and `d_ff`/`n_experts` matched to the `la-*` preset of the same size on training
  FLOPs per token, total parameters and inference memory: what `matcher plan --target la-<size>` finds
  (d_ff a multiple of 64, or 32 where 64 misses 0.5%; of 16 for tiny, whose whole expert is 64 wide).
  The router of several hundred experts costs FLOPs, so the shared layer gets narrower experts than
  la's. tests/test_presets.py re-runs the match.
- `llama2-7b`, `mixtral-8x7b`, `olmoe-1b-7b`, `qwen3-0.6b`: published dense and MoE models expressed as
  `la`; their parameter counts (6,738,415,616, 46,702,792,704, 6,919,161,856 and Qwen3-0.6B's 0.44B
  non-embedding) are tests of the cost model. OLMoE and Qwen3 need QK-norm (over the whole projection,
  and per head).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from matcher.config import ModelConfig, load_model_config
from matcher.names import Resolved, resolve

# The shape shared by every variant of a size family; d_ff and n_experts come from MATCHED.
FAMILIES: dict[str, dict] = {
    "tiny": dict(vocab_size=128, d_model=64, depth=4, n_heads=4, n_kv_heads=2, seq_len=128, top_k=2,
                 tie_embeddings=True, da_heads=1),
    "100m": dict(vocab_size=32000, d_model=512, depth=12, n_heads=8, n_kv_heads=2, seq_len=1024, top_k=2,
                 tie_embeddings=False),
    "1b": dict(vocab_size=50304, d_model=1024, depth=32, n_heads=16, n_kv_heads=4, seq_len=2048, top_k=2,
               tie_embeddings=False),
    "2b": dict(vocab_size=50304, d_model=1536, depth=32, n_heads=24, n_kv_heads=6, seq_len=2048, top_k=2,
               tie_embeddings=False),
}
# (d_ff, n_experts) of each variant, side by side: la is the baseline, dr and dr_da what
# `matcher plan --target la-<size>` finds for it (tests/test_presets.py re-runs the match).
# A third entry holds the fields the search chose as a third free variable (dr-100m: a rank-16 router,
# because no (d_ff, n_experts) on a 64- or 32-step lattice is within 0.5% of la-100m).
MATCHED: dict[str, dict[str, tuple]] = {
    "tiny": {"la": (64, 4), "dr": (64, 19), "dr_da": (48, 25)},
    "100m": {"la": (512, 8), "dr": (512, 105, {"router_rank": 16}), "dr_da": (448, 120)},
    "1b": {"la": (512, 16), "dr": (384, 753), "dr_da": (320, 902)},
    "2b": {"la": (704, 16), "dr": (608, 655), "dr_da": (544, 735)},
}


def family_preset(size: str, variant: str) -> ModelConfig:
    d_ff, n_experts, *chosen = MATCHED[size][variant]
    return ModelConfig(variant=variant, d_ff=d_ff, n_experts=n_experts, **FAMILIES[size],
                       **(chosen[0] if chosen else {}))


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    f"{variant}-{size}": functools.partial(family_preset, size, variant)
    for size, variants in MATCHED.items() for variant in variants
}


def preset(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    def register(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        PRESETS[name] = fn
        return fn

    return register


@preset("llama2-7b")
def llama2_7b() -> ModelConfig:
    return ModelConfig(variant="la", vocab_size=32000, d_model=4096, depth=32, n_heads=32, seq_len=4096,
                       d_ff=11008, n_experts=0, top_k=0, tie_embeddings=False)


@preset("mixtral-8x7b")
def mixtral_8x7b() -> ModelConfig:
    return ModelConfig(variant="la", vocab_size=32000, d_model=4096, depth=32, n_heads=32, n_kv_heads=8,
                       seq_len=32768, d_ff=14336, n_experts=8, top_k=2, tie_embeddings=False,
                       rope_theta=1e6)


def resolve_preset(typed: str) -> Resolved:
    """The canonical preset name for what the user typed (see matcher.names)."""
    return resolve(typed, PRESETS, "preset")


def get_preset(name: str) -> ModelConfig:
    """The preset's config, by any name resolve_preset accepts."""
    return PRESETS[resolve_preset(name).name]()


def load_target(spec: str) -> tuple[ModelConfig, Resolved | None]:
    """A preset name or a path to a model-config YAML file."""
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_model_config(spec), None
    resolved = resolve_preset(spec)
    return get_preset(resolved.name), resolved


@preset("olmoe-1b-7b")
def olmoe_1b_7b() -> ModelConfig:
    # allenai/OLMoE-1B-7B-0924: 64 experts of width 1024, top-8, QK-norm over all heads' width
    return ModelConfig(variant="la", vocab_size=50304, d_model=2048, depth=16, n_heads=16, seq_len=4096,
                       d_ff=1024, n_experts=64, top_k=8, tie_embeddings=False, qk_norm="full")


@preset("qwen3-0.6b")
def qwen3_0_6b() -> ModelConfig:
    # Qwen/Qwen3-0.6B: head_dim 128 wider than d_model / n_heads, per-head QK-norm, tied embeddings
    return ModelConfig(variant="la", vocab_size=151936, d_model=1024, depth=28, n_heads=16, n_kv_heads=8,
                       head_dim=128, seq_len=40960, d_ff=3072, n_experts=0, top_k=0, tie_embeddings=True,
                       qk_norm="head", rope_theta=1e6, norm_eps=1e-6)
