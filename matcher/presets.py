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
  FLOPs per token and total parameters: what `matcher plan --target la-<size>` finds (d_ff a multiple
  of 64; of 16 for tiny, whose whole expert is 64 wide). The router of several hundred experts costs
  FLOPs, so the shared layer gets narrower experts than la's. tests/test_presets.py re-runs the match.
- `llama2-7b`, `mixtral-8x7b`: published dense and MoE models expressed as `la`; their parameter
  counts (6,738,415,616 and 46,702,792,704) are tests of the cost model.
"""

from __future__ import annotations

from collections.abc import Callable

from matcher.config import ModelConfig
from matcher.names import Resolved, resolve

PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def preset(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    def register(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        PRESETS[name] = fn
        return fn

    return register


def _tiny(**changes) -> ModelConfig:
    base = dict(variant="la", vocab_size=128, d_model=64, depth=4, n_heads=4, n_kv_heads=2, seq_len=128,
                d_ff=64, n_experts=4, top_k=2, tie_embeddings=True, da_heads=1)
    return ModelConfig(**{**base, **changes})


@preset("la-tiny")
def la_tiny() -> ModelConfig:
    return _tiny()


@preset("dr-tiny")
def dr_tiny() -> ModelConfig:
    return _tiny(variant="dr", d_ff=64, n_experts=19)


@preset("dr_da-tiny")
def dr_da_tiny() -> ModelConfig:
    return _tiny(variant="dr_da", d_ff=48, n_experts=25)


def _m100(**changes) -> ModelConfig:
    base = dict(variant="la", vocab_size=32000, d_model=512, depth=12, n_heads=8, n_kv_heads=2, seq_len=1024,
                d_ff=512, n_experts=8, top_k=2, tie_embeddings=False)
    return ModelConfig(**{**base, **changes})


@preset("la-100m")
def la_100m() -> ModelConfig:
    return _m100()


@preset("dr-100m")
def dr_100m() -> ModelConfig:
    return _m100(variant="dr", d_ff=512, n_experts=104)


@preset("dr_da-100m")
def dr_da_100m() -> ModelConfig:
    return _m100(variant="dr_da", d_ff=448, n_experts=120)


def _b(width: int, **changes) -> ModelConfig:
    base = dict(variant="la", vocab_size=50304, d_model=width, depth=32, n_heads=width // 64, n_kv_heads=width // 256,
                seq_len=2048, n_experts=16, top_k=2, tie_embeddings=False)
    return ModelConfig(**{**base, **changes})


@preset("la-1b")
def la_1b() -> ModelConfig:
    return _b(1024, d_ff=512)


@preset("dr-1b")
def dr_1b() -> ModelConfig:
    return _b(1024, variant="dr", d_ff=384, n_experts=753)


@preset("dr_da-1b")
def dr_da_1b() -> ModelConfig:
    return _b(1024, variant="dr_da", d_ff=320, n_experts=902)


@preset("la-2b")
def la_2b() -> ModelConfig:
    return _b(1536, d_ff=704)


@preset("dr-2b")
def dr_2b() -> ModelConfig:
    return _b(1536, variant="dr", d_ff=576, n_experts=699)


@preset("dr_da-2b")
def dr_da_2b() -> ModelConfig:
    return _b(1536, variant="dr_da", d_ff=512, n_experts=788)


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
    return PRESETS[resolve_preset(name).name]()


def load_target(spec: str) -> tuple[ModelConfig, Resolved | None]:
    """A preset name or a path to a model-config YAML file."""
    from pathlib import Path

    from matcher.config import load_model_config

    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_model_config(spec), None
    resolved = resolve_preset(spec)
    return PRESETS[resolved.name](), resolved
