"""The model config: one typed dataclass with the field names of the design contract, the same names
in YAML. Importing this module does not import torch.

`la`, `dr` and `dr_da` are values of `variant`; everything else is shared, so the three variants are
configurations of the same code (models/) and the same cost formulas (matcher/cost/analytic.py).
"""

# Function-local imports: yaml, loaded when a file is read or written; the CLI imports this module at start-up (the
# plan options are built from its dataclasses).

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from matcher.console import notice
from matcher.errors import ConfigError

VARIANTS = ("la", "dr", "dr_da")
# Beyond these a config is a typo, not a model (and per-application cost sums would run for hours).
MAX_DEPTH = 1 << 14
MAX_SIZE = 1 << 24
MLP_ACTS = ("swiglu", "gelu")
MIXTURES = ("sequential", "parallel")
QK_NORMS = ("none", "head", "full")
# depth attention's rotary encoding of the depth index d (design.md "Depth position in DA")
DA_ROPES = ("none", "forward", "forward_reversed")
# train.lr_mult's groups; which parameters each holds: models/model.py Model.lr_groups
LR_GROUPS = ("shared_block", "experts", "embeddings")
# Fields of other decoders' configs (Hugging Face names) that matcher's model cannot express, and why:
# every layer here runs full causal attention with plain K/V heads and the same FFN kind.
OUT_OF_SCOPE = {
    "kv_lora_rank": "multi-head latent attention (MLA, DeepSeek-V2/V3)",
    "q_lora_rank": "multi-head latent attention (MLA, DeepSeek-V2/V3)",
    "sliding_window": "sliding-window attention (Mistral, Gemma, Qwen2 with use_sliding_window)",
    "first_k_dense_replace": "a mixed dense/MoE stack (DeepSeek's first dense layers)",
    "moe_layer_freq": "a mixed dense/MoE stack (MoE every n-th layer)",
    "decoder_sparse_step": "a mixed dense/MoE stack (Qwen-MoE's decoder_sparse_step)",
    "mlp_only_layers": "a mixed dense/MoE stack (dense layers listed by index)",
}
DASHBOARDS = ("tensorboard", "wandb")  # train.dashboards (matcher.run.dashboards)


@dataclass(kw_only=True)
class ModelConfig:
    variant: str = "la"  # la: `depth` distinct layers; dr: one shared layer applied `depth` times; dr_da: dr + DA
    vocab_size: int  # tokens in the vocabulary (embedding rows; LM-head columns)
    d_model: int  # width of the residual stream
    depth: int  # number of layer applications (= distinct layers for `la`)
    n_heads: int  # sequence-attention query heads
    n_kv_heads: int | None = None  # sequence-attention key/value heads (GQA); None: = n_heads
    head_dim: int | None = None  # per-head width; None: d_model // n_heads
    seq_len: int  # training context length (tokens)
    d_ff: int  # hidden width of ONE expert (or of the dense MLP when n_experts == 0)
    n_experts: int = 0  # routed experts per MoE layer; 0: a dense MLP of width d_ff, no router
    top_k: int = 0  # experts selected per token (0 for a dense MLP)
    n_shared_experts: int = 0  # always-active experts of width d_ff beside the routed ones
    mlp_act: str = "swiglu"  # swiglu (3 matrices per expert) or gelu (2 matrices)
    tie_embeddings: bool = False  # LM head shares the token-embedding matrix
    da_heads: int = 1  # depth-attention heads (used by dr_da only)
    da_head_dim: int | None = None  # depth-attention head width; None: = head_dim
    router_rank: int = 0  # 0: router query is the normalised state; r > 0: a rank-r projection first
    mixture: str = "sequential"  # sequential: SA, DA, EA each pre-norm residual; parallel: all read one norm
    rope_theta: float = 10000.0  # RoPE base over token positions
    # depth attention's rotary encoding of the depth index d: none; forward (every rotary pair by d);
    # forward_reversed (the even-numbered pairs 0, 2, ... by d, the odd-numbered ones by D - d, D the trained
    # depth). Older files' true/false read as forward/none, with a note.
    da_rope: str = "forward"
    router_depth_rope: bool = True  # router query rotated by the depth index (no parameters)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    # RMSNorm of queries and keys before rotary: none; head (Qwen3: one gain of head_dim shared by all heads);
    # full (OLMoE: one gain over all heads' width, n_heads*head_dim for q, n_kv_heads*head_dim for k)
    qk_norm: str = "none"
    qkv_bias: bool = False  # biases on the query, key and value projections (Qwen2); none on the output
    norm_bias: bool = False  # a learned bias in every norm beside its gain (LayerNorm-style)

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None and _is_int(self.d_model) and _is_int(self.n_heads) and self.n_heads > 0:
            if self.d_model % self.n_heads:  # a floor here would silently shrink the attention
                raise ConfigError(f"d_model ({self.d_model}) is not a multiple of n_heads ({self.n_heads}): "
                                  "choose heads that divide it, or give head_dim explicitly")
            self.head_dim = self.d_model // self.n_heads
        if self.da_head_dim is None:
            self.da_head_dim = self.head_dim
        self.validate()

    # Derived quantities used by the models and the cost formulas alike.
    @property
    def has_depth_attention(self) -> bool:
        return self.variant == "dr_da"

    @property
    def n_unique_layers(self) -> int:
        return self.depth if self.variant == "la" else 1

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and what to do about it."""
        _check_types(self)
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.mlp_act not in MLP_ACTS:
            raise ConfigError(f"mlp_act must be one of {', '.join(MLP_ACTS)}, got {self.mlp_act!r}")
        if self.mixture not in MIXTURES:
            raise ConfigError(f"mixture must be one of {', '.join(MIXTURES)}, got {self.mixture!r}")
        if self.qk_norm not in QK_NORMS:
            raise ConfigError(f"qk_norm must be one of {', '.join(QK_NORMS)}, got {self.qk_norm!r}")
        if self.da_rope not in DA_ROPES:
            raise ConfigError(f"da_rope must be one of {', '.join(DA_ROPES)}, got {self.da_rope!r}")
        for name in ("vocab_size", "d_model", "depth", "n_heads", "n_kv_heads", "head_dim", "seq_len",
                     "d_ff", "da_heads", "da_head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("n_experts", "top_k", "n_shared_experts", "router_rank"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_at_most(self, MAX_DEPTH, ("depth",))
        _check_at_most(self, MAX_SIZE, ("vocab_size", "d_model", "n_heads", "n_kv_heads", "head_dim", "seq_len",
                                        "d_ff", "n_experts", "top_k", "n_shared_experts", "da_heads", "da_head_dim",
                                        "router_rank"))
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads}) for GQA"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for rotary position encoding, got {self.head_dim}")
        if self.has_depth_attention and self.da_rope != "none" and self.da_head_dim % 2:
            raise ConfigError(f"da_head_dim must be even when da_rope is on ({self.da_rope}), got "
                              f"{self.da_head_dim}; use an even da_head_dim or da_rope: none")
        if self.n_experts == 0:
            if self.top_k:
                raise ConfigError(f"top_k is {self.top_k} but n_experts is 0 (a dense MLP): set top_k: 0")
            if self.n_shared_experts:
                raise ConfigError("n_shared_experts needs routed experts: set n_experts > 0 or n_shared_experts: 0")
            if self.router_rank:
                raise ConfigError("router_rank needs routed experts: set n_experts > 0 or router_rank: 0")
        else:
            if not 1 <= self.top_k <= self.n_experts:
                raise ConfigError(
                    f"top_k must be between 1 and n_experts ({self.n_experts}), got {self.top_k}"
                )
            if self.router_depth_rope and (self.router_rank or self.d_model) % 2:
                raise ConfigError("the router query width must be even for router_depth_rope: "
                                  "use an even router_rank/d_model or router_depth_rope: false")
        if not (self.rope_theta > 0 and math.isfinite(self.rope_theta)):
            raise ConfigError(f"rope_theta must be a positive number, got {self.rope_theta}")
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"norm_eps must be in (0, 1), got {self.norm_eps}")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied and validated. Derived defaults (head_dim, n_kv_heads,
        da_head_dim) are kept as they were unless changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "model config") -> ModelConfig:
        return from_mapping(cls, data, where)

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        """A mapping as older files wrote it, in today's values: da_rope was a bool (true: forward)."""
        if isinstance(data.get("da_rope"), bool):
            value = "forward" if data["da_rope"] else "none"
            _note_once(f"da_rope: {str(data['da_rope']).lower()} (a file from before da_rope took "
                       f"{' | '.join(DA_ROPES)}) is read as da_rope: {value}; write that to silence this note")
            data = {**data, "da_rope": value}
        return data


@cache
def _note_once(text: str) -> None:
    """A note about an older file, once per process however many runs or files repeat it."""
    notice(text)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return (_is_int(value) or isinstance(value, float))
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(
            _type_ok(v, typing.get_args(annotation)[0]) for v in value
        )
    if origin is dict:
        return isinstance(value, dict)
    return True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending (micro-batches and process counts that split a batch, KV-head counts
    that split the query heads)."""
    return [m for m in range(1, n + 1) if n % m == 0]


def largest_divisors(n: int, most: int = 8) -> str:
    """The largest `most` divisors of n, for a message that says which would fit."""
    return ", ".join(map(str, divisors(n)[-most:]))


def _check_at_most(obj: Any, limit: int, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(obj, name) > limit:
            raise ConfigError(f"{name} must be at most {limit:,}, got {getattr(obj, name):,}")


def _check_types(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not _type_ok(value, hints[f.name]):
            raise ConfigError(
                f"{f.name} must be {_type_name(hints[f.name])}, got {value!r} ({type(value).__name__})"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name} must be a finite number, got {value!r}")


def field_problems(cls: type, data: Any, where: str) -> tuple[list[str], Any]:
    """The one check of a mapping against dataclass `cls` (model configs, sweep files, run.yaml): every
    unknown key (with the closest field name), missing required field and mistyped value, each as
    "<where>.<field>: <problem>"; when there are none, the object, or the first problem its own
    validation finds as "<where>: <problem>"."""
    problems, obj = _check_mapping(cls, data)
    return [f"{where}.{key}: {problem}" if key else f"{where}: {problem}" for key, problem in problems], obj


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, or raise one ConfigError naming `where` once and listing
    every problem that field_problems finds."""
    problems, obj = _check_mapping(cls, data)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(f"{key}: {problem}" if key else problem
                                                   for key, problem in problems))
    return obj


def _check_mapping(cls: type, data: Any) -> tuple[list[tuple[str | None, str]], Any]:
    if not isinstance(data, dict):
        return [(None, f"expected a mapping of field: value, got {type(data).__name__}")], None
    if hasattr(cls, "upgrade"):
        data = cls.upgrade(data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems: list[tuple[str | None, str]] = [(key, unknown_key(key, fields)) for key in data if key not in fields]
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append((name, "missing (required)"))
        elif not _type_ok(data[name], hints[name]):
            problems.append((name, f"must be {_type_name(hints[name])}, got {data[name]!r} "
                                   f"({type(data[name]).__name__})"))
    if problems:
        return problems, None
    try:
        return [], cls(**data)
    except ConfigError as err:
        return [(None, str(err))], None


def unknown_key(key: Any, known: Iterable[str]) -> str:
    """What to say of a key that is not a field: the closest field, or all of them."""
    known = list(known)
    if key in OUT_OF_SCOPE and "d_model" in known:
        return (f"{OUT_OF_SCOPE[key]} is out of scope: matcher's model has full causal attention with plain "
                "K/V heads and the same FFN (all MoE or all dense) in every layer; MLA, sliding-window attention "
                "and mixed dense/MoE stacks cannot be expressed, so drop the field (and compare a model without it)")
    close = difflib.get_close_matches(str(key), known, n=1)
    return f"unknown field (did you mean {close[0]!r}?)" if close else f"unknown field; valid: {', '.join(known)}"


def read_yaml(path: str | Path, missing: str = "give an existing YAML file") -> Any:
    """Parse a YAML file; a missing file (`missing` says what to do), a syntax error or a key given twice
    in one mapping (YAML loaders keep the last silently) is one ConfigError with the line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; {missing}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_keys_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{at}: not valid YAML ({problem}); fix it there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file; give a YAML config file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror}); check the path and its permissions") from None


def _unique_keys_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                # keys written here; those brought in by a merge key (<<: *defaults) may be overridden
                written = [key_node for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"]
                seen = set()
                for key_node in written:
                    if not isinstance(key_node, yaml.ScalarNode):
                        raise yaml.constructor.ConstructorError(
                            None, None, "a mapping key must be a plain value, not a list or mapping",
                            key_node.start_mark)
                    key = self.construct_object(key_node, deep=deep)
                    duplicate = key in seen
                    seen.add(key)
                    if duplicate:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} appears twice in one mapping; keep one", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config file: the fields at top level, or under a `model:` key."""
    data = read_yaml(path, missing="give a preset name (`matcher presets` lists them) or a model-config YAML path")
    if isinstance(data, dict) and set(data) == {"model"}:
        data = data["model"]
    return ModelConfig.from_dict(data, where=str(path))


def dump_yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


LOSS_ON = ("all", "answers")
TOKENIZER_KEYS = ("path", "hash", "vocab_size")


def _check_data(data: Any) -> None:
    if isinstance(data, dict):
        if not data:
            raise ConfigError("data: a mixture needs at least one `path: weight`")
        for source, weight in data.items():
            if not isinstance(source, str) or source == "":
                raise ConfigError(f"data: a mixture's keys are data paths (or math), got {source!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                    math.isfinite(weight) and weight > 0):
                raise ConfigError(f"data: the weight of {source} must be a positive number, got {weight!r}")
    elif data == "":
        raise ConfigError("data must be math, math-latent, a folder of `matcher data encode`, or a mixture "
                          "{path: weight}")


def _checked_lr_mult(lr_mult: dict) -> dict[str, float]:
    """train.lr_mult with every group, each a positive finite number (missing groups 1.0)."""
    for group, mult in lr_mult.items():
        if group not in LR_GROUPS:
            raise ConfigError(f"lr_mult.{group}: {unknown_key(group, LR_GROUPS)}")
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not (math.isfinite(mult) and mult > 0):
            raise ConfigError(f"lr_mult.{group} must be a positive number (the group's LR is lr times it), "
                              f"got {mult!r}")
    return {group: float(lr_mult.get(group, 1.0)) for group in LR_GROUPS}


def _check_tokenizer(tokenizer: Any) -> None:
    if isinstance(tokenizer, dict):
        unknown = [k for k in tokenizer if k not in TOKENIZER_KEYS]
        if unknown:
            raise ConfigError(f"tokenizer.{unknown[0]}: {unknown_key(unknown[0], TOKENIZER_KEYS)}")
        if not isinstance(tokenizer.get("path"), str) or not tokenizer["path"]:
            raise ConfigError("tokenizer: a mapping needs `path` (the tokenizer.json); plan with --tokenizer PATH")
        if "hash" in tokenizer and not isinstance(tokenizer["hash"], str):
            raise ConfigError(f"tokenizer.hash must be a string, got {tokenizer['hash']!r}")
        if "vocab_size" in tokenizer and not (_is_int(tokenizer["vocab_size"]) and tokenizer["vocab_size"] > 0):
            raise ConfigError(f"tokenizer.vocab_size must be a positive integer, got {tokenizer['vocab_size']!r}")
    elif tokenizer == "":
        raise ConfigError("tokenizer must be char or the path of a tokenizer.json")


@dataclass(kw_only=True)
class TrainConfig:
    """How one run trains. Runs of one sweep share `tokens_per_step` so their curves are comparable."""

    total_tokens: int  # training budget in tokens
    batch_size: int  # sequences per optimizer step (over all devices)
    # sequences per forward/backward on one device; gradients of batch_size / (processes x this) such
    # micro-batches are accumulated into one step (the same update, less activation memory). 0: one pass.
    micro_batch_size: int = 0
    seq_len: int  # tokens per training sequence
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak (end of the decay phase)
    warmup_fraction: float = 0.05  # share of steps in linear warmup
    decay_fraction: float = 0.2  # share of steps in the final (linear) decay of warmup-stable-decay
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    balance_rate: float = 1e-3  # step of the auxiliary-loss-free expert-bias update
    seed: int = 0
    # seed of the training data's order (which rows each step reads); None: `seed`. Fix it to give every
    # seed of a sweep the same data, so that seeds differ only in their initial weights
    data_seed: int | None = None
    # "math" (embedded generator; "math-latent": final values only, no chain), a folder of `matcher data
    # encode` (or a legacy .bin shard), or a mixture {path: weight, ...} sampled by weight
    data: str | dict = "math"
    data_steps: int = 3  # reasoning steps in generated math problems
    # "char" (the built-in character tokenizer) or {path, hash[, vocab_size]} of a tokenizer.json, as
    # `matcher plan --tokenizer` records it (matcher.data.tokenizer.tokenizer_for reads it)
    tokenizer: str | dict = "char"
    loss_on: str = "all"  # all: every token is a target; answers: only the loss-masked answer tokens
    eval_data: str = "math"  # "math" (held-out generated problems; "math-latent": final values only) or a JSONL path
    eval_examples: int = 64  # problems scored at each checkpoint
    eval_tokens: list[int] = field(default_factory=list)  # token checkpoints; empty: log-spaced
    n_evals: int = 8  # number of log-spaced checkpoints when eval_tokens is empty
    # model checkpoints (safetensors, one per eval point, for `matcher eval`) kept: 0 all, N the newest N
    keep_checkpoints: int = 0
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16
    # learning-rate multipliers per parameter group (every group's LR is the scheduled LR times its
    # multiplier; missing groups 1.0). Each parameter is in exactly one group (Model.lr_groups):
    # embeddings: the token embedding and the LM head (one matrix when tied); experts: the routed experts'
    # weights and the always-active shared experts'; shared_block: every other parameter, that is the
    # layer's sequence and depth attention, router, norms and dense MLP (dr/dr_da: the one shared layer;
    # la: its `depth` distinct layers) and the final norm
    lr_mult: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LR_GROUPS, 1.0))
    compile: bool = False  # torch.compile the model
    recompute: str = "none"  # activation recomputation: none | full
    # where metric lines also go, besides metrics.jsonl (the source of truth): tensorboard, wandb
    dashboards: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("total_tokens", "batch_size", "seq_len", "eval_examples", "n_evals", "data_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        _check_at_most(self, MAX_SIZE, ("batch_size", "seq_len", "eval_examples", "n_evals", "data_steps"))
        _check_at_most(self, 1 << 60, ("total_tokens",))
        if self.keep_checkpoints < 0:
            raise ConfigError(f"keep_checkpoints must be >= 0 (0 keeps every eval point's), "
                              f"got {self.keep_checkpoints}")
        if self.micro_batch_size < 0 or self.micro_batch_size > self.batch_size:
            raise ConfigError(f"micro_batch_size must be between 0 (no accumulation) and batch_size "
                              f"{self.batch_size}, got {self.micro_batch_size}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ConfigError(f"micro_batch_size {self.micro_batch_size} does not divide batch_size "
                              f"{self.batch_size}; use one of {largest_divisors(self.batch_size)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        self.lr_mult = _checked_lr_mult(self.lr_mult)
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1) (AdamW's moment decay), got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip", "balance_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        for name in ("min_lr_ratio", "warmup_fraction", "decay_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.warmup_fraction + self.decay_fraction > 1:
            raise ConfigError("warmup_fraction + decay_fraction must be at most 1")
        _check_data(self.data)
        _check_tokenizer(self.tokenizer)
        if self.loss_on not in LOSS_ON:
            raise ConfigError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {self.loss_on!r}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.recompute not in ("none", "full"):
            raise ConfigError(f"recompute must be none or full, got {self.recompute!r}")
        for name in self.dashboards:
            if name not in DASHBOARDS:
                close = difflib.get_close_matches(name, DASHBOARDS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"dashboards: unknown dashboard {name!r}{hint}; valid: {', '.join(DASHBOARDS)}")
        if len(set(self.dashboards)) != len(self.dashboards):
            raise ConfigError(f"dashboards lists one twice: {self.dashboards}")
        if any(t <= 0 for t in self.eval_tokens) or list(self.eval_tokens) != sorted(set(self.eval_tokens)):
            raise ConfigError("eval_tokens must be positive and strictly increasing")
        if not self.eval_tokens and self.n_evals > self.total_steps:
            raise ConfigError(f"n_evals {self.n_evals} is more eval points than the run's {self.total_steps} steps "
                              f"(total_tokens {self.total_tokens:,} / {self.tokens_per_step:,} per step); use "
                              f"n_evals <= {self.total_steps} or more total_tokens")

    @property
    def stream_seed(self) -> int:
        """The seed of the training data's order."""
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        return max(1, self.total_tokens // self.tokens_per_step)

    @property
    def budget_tokens(self) -> int:
        """The tokens the run trains on in all: total_tokens rounded to whole steps."""
        return self.total_steps * self.tokens_per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "train config") -> TrainConfig:
        return from_mapping(cls, data, where)
