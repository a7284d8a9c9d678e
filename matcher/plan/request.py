"""A `matcher plan` request and its one validation: the request (what was asked, one field per option,
its defaults) becomes a PlanSpec (what the planner works from: parsed, loaded and checked) in `validate`,
the one place where a request is checked. The command line's help text is matcher.commands.plan's; the
pipeline is request -> validate -> matcher.plan.planner.make_plan (search, plan) -> build_sweep.
"""

# Function-local imports: the presets module (load_target), the tokenizer and yaml, loaded when a request
# is validated; the CLI imports this module at start-up for the plan options.

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matcher.config import MAX_SIZE, VARIANTS, ModelConfig, TrainConfig, divisors
from matcher.cost.analytic import Conventions
from matcher.cost.gpu_hours import DEFAULT_GPU, DEFAULT_MFU, check_mfu, device
from matcher.errors import ConfigError
from matcher.names import Resolved, file_name, resolve
from matcher.plan.grid import parse_grid
from matcher.plan.search import (
    AUTO_ALIGN_FLOOR,
    DEFAULT_MATCHED,
    THIRD_VARIABLES,
    MatchSpec,
    check_matched,
    current_names,
    renamed_notice,
)

FREE_FIELDS = ("d_ff", "n_experts")
DEFAULT_ALIGN = 64  # d_ff alignment: tensor-core and kernel friendly widths
# The default tolerance: 0.5%, which the automatic lattice (d_ff multiples of 64, then 32) and third free
# variable reach; a target whose expert is narrower than 4 x 32 (la-tiny's is 64 wide) cannot be
# resolved on such a lattice and keeps 2%, as do budgets (--flops/--params), whose la baseline repeats
# every lattice step in each of its layers.
DEFAULT_TOLERANCE = 0.005
NARROW_TOLERANCE = 0.02
# which of the target's parameters the default tokens count (matcher.plan.planner.TOKENS_PER_PARAM)
TOKENS_BASES = {"total": "total parameters", "body": "body (non-embedding) parameters"}


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """Fields of the variants that differ from the target (None: the target's)."""

    depth: int | None = None
    d_model: int | None = None
    top_k: int | None = None
    da_heads: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # --set key=value, applied last

    def changes(self) -> dict[str, Any]:
        named = {"depth": self.depth, "d_model": self.d_model, "top_k": self.top_k, "da_heads": self.da_heads}
        return {**{k: v for k, v in named.items() if v is not None}, **self.fields}


@dataclass(kw_only=True)
class PlanRequest:
    """Everything `matcher plan` can be asked, with its defaults: one field per command-line option (the
    flag is --FIELD, or metadata["flag"]; the help text is matcher.commands.plan's)."""

    target: str | None = None
    variants: str = "dr,dr_da"
    flops: float | None = None
    params: float | None = None
    align: int | None = None
    match: str = ",".join(DEFAULT_MATCHED)
    free: str | None = None
    inference_batch: int = 1
    inference_context: int | None = None
    max_memory_ratio: float | None = None
    tolerance: float | None = None
    tokens: float | None = None
    batch: int | None = None
    micro_batch: int | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    ladder: str | None = None
    seeds: str = "0"
    grid: list[str] | None = None
    base: str = "la-1b"
    depth: int | None = None
    d_model: int | None = None
    top_k: int | None = None
    da_heads: int | None = None
    set_fields: list[str] | None = field(default=None, metadata={"flag": "--set"})
    tokenizer: str | None = None
    gpu: str = DEFAULT_GPU
    mfu: float = DEFAULT_MFU
    causal_half: bool = False
    recompute: str = "none"
    activation_dtype: str = "bf16"

    def __post_init__(self) -> None:
        for name in ("flops", "params", "tokens", "max_memory_ratio", "tolerance"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite positive number, got {value}")
        if self.tokens is not None:
            self.tokens = round(self.tokens)  # a count, given as 1.5e6 on the command line
        device(self.gpu)
        check_mfu(self.mfu)

    @property
    def conventions(self) -> Conventions:
        return Conventions(causal_half=self.causal_half, recompute=self.recompute,
                           activation_dtype=self.activation_dtype)

    def command_line(self) -> str:
        """The canonical command that plans this sweep again: every option that differs from its
        default (and --base whenever budgets make it the family's shape)."""
        parts = ["matcher plan"]
        budgets = self.flops is not None or self.params is not None
        for option in dataclasses.fields(self):
            value, flag = getattr(self, option.name), option_flag(option)
            if value == option.default and not (option.name == "base" and budgets):
                continue
            if isinstance(value, bool):
                parts.append(flag)
            elif isinstance(value, list):
                parts += [f"{flag} {item}" for item in value]
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
        return " ".join(parts)


def option_flag(option: dataclasses.Field) -> str:
    return option.metadata.get("flag") or "--" + option.name.replace("_", "-")




TRAIN_PREFIX = "train."
# training settings that another option gives, so that a run's model and training agree
TRAIN_SET_ELSEWHERE = {"seq_len": "--seq-len (the model's context and the training one are one setting)",
                       "seed": "--seeds"}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs: any ModelConfig field but `variant`, values read as YAML scalars
    (`train.FIELD=VALUE` items are parse_train_set's)."""
    items = [item for item in items or [] if not item.strip().startswith(TRAIN_PREFIX)]
    if not items:
        return {}

    names = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "variant"]
    parsed = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key == "variant":
            raise ConfigError("--set variant=...: the variants come from --variants")
        if key == "seq_len":  # shadowed by train.seq_len: a variant-only context would not be trained on
            raise ConfigError("--set seq_len: the context is shared by the model and the training of every run; "
                              "use --seq-len")
        _check_known(key, names, prefix="", what="field", valid="Valid fields")
        parsed[key] = _yaml_1_2_float(_yaml_value(item, raw, "the value is not a YAML scalar"))
    return parsed


def _check_known(key: str, names: list[str], *, prefix: str, what: str, valid: str) -> None:
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
        raise ConfigError(f"--set {prefix}{key}: unknown {what}{hint}. {valid}: {', '.join(names)}")


def _yaml_value(item: str, raw: str, problem: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {item}: {problem}") from None


def parse_train_set(items: list[str]) -> dict[str, Any]:
    """`--set train.FIELD=VALUE` pairs: any TrainConfig field, values read as YAML (a mixture may be
    given as a flow mapping: train.data={a: 1, b: 2}); checked by TrainConfig like the sweep file."""

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    parsed = {}
    for item in items or []:
        if not item.strip().startswith(TRAIN_PREFIX):
            continue
        key, sep, raw = item.strip()[len(TRAIN_PREFIX):].partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes train.FIELD=VALUE, got {item!r}")
        if key in TRAIN_SET_ELSEWHERE:
            raise ConfigError(f"--set train.{key}: give it with {TRAIN_SET_ELSEWHERE[key]}")
        _check_known(key, names, prefix=TRAIN_PREFIX, what="training setting", valid="Valid")
        value = _yaml_value(item, raw, "the value is not valid YAML")
        parsed[key] = _yaml_1_2_float(value) if not isinstance(value, (dict, list)) else value
    return parsed


def _yaml_1_2_float(value: Any) -> Any:
    """PyYAML follows YAML 1.1, which reads 5e5 (no dot) as a string; YAML 1.2 and users read a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_variants(text: str) -> tuple[list[str], list[str]]:
    """Canonical variant names and the notices for names typed differently."""
    names, notices = [], []
    for typed in (part.strip() for part in text.split(",")):
        if not typed:
            continue
        resolved = resolve(typed, VARIANTS, "variant")
        if resolved.notice:
            notices.append(resolved.notice)
        if resolved.name not in names:
            names.append(resolved.name)
    if not names:
        raise ConfigError(f"--variants needs at least one of {', '.join(VARIANTS)}")
    return names, notices


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds takes distinct non-negative integers such as 0,1,2, got {text!r}")
    return seeds


def parse_match(text: str) -> tuple[tuple[str, ...], list[str]]:
    """--match as quantities in the user's order (checked by search.check_matched, the one check), and
    a notice when old names (search.RENAMED) were given."""
    current, old = current_names(part.strip().lower() for part in text.split(",") if part.strip())
    matched = tuple(dict.fromkeys(current))
    check_matched(matched)
    return matched, [renamed_notice("--match", old, "use the current names")] if old else []


def parse_free(text: str) -> tuple[set[str], str | None]:
    """--free: which of d_ff and n_experts stay free (the others are held) and the third free variable."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FREE_FIELDS and n not in THIRD_VARIABLES]
    thirds = [n for n in names if n in THIRD_VARIABLES]
    if unknown or len(thirds) > 1 or not any(n in FREE_FIELDS for n in names):
        raise ConfigError(f"--free takes d_ff and/or n_experts and at most one third variable of "
                          f"{', '.join(THIRD_VARIABLES)}, such as d_ff,n_experts,router_rank; got {text!r}")
    return {n for n in FREE_FIELDS if n not in names}, (thirds[0] if thirds else None)




def variant_config(target: ModelConfig, variant: str, overrides: Overrides) -> tuple[ModelConfig, set[str]]:
    """The variant's config before the search, and the free variables the user held with --set."""
    changes = overrides.changes()
    if isinstance(changes.get("d_model"), int) and changes["d_model"] > MAX_SIZE:  # before the head search
        raise ConfigError(f"{variant}: d_model must be at most {MAX_SIZE:,}, got {changes['d_model']:,}")
    if "d_model" in changes and not {"n_heads", "head_dim"} & set(overrides.fields):
        changes.update(_heads_for(target, changes["d_model"], "n_kv_heads" in overrides.fields))
    if isinstance(changes.get("top_k"), int) and target.is_moe and "n_experts" not in changes:
        changes["n_experts"] = max(target.n_experts, changes["top_k"])
    try:
        cfg = target.replace(variant=variant, **changes)
    except ConfigError as err:
        raise ConfigError(f"{variant} with the overrides ({_flags(changes)}): {err}") from None
    return cfg, {name for name in FREE_FIELDS if name in overrides.fields}


def _heads_for(target: ModelConfig, d_model: int, kv_given: bool) -> dict[str, int]:
    """A new width keeps the head width and the query heads per KV head (the attention shape)."""
    if d_model % target.head_dim:
        raise ConfigError(f"--d-model {d_model} is not a multiple of the head width {target.head_dim}; "
                          "choose a multiple or give --set n_heads=... --set head_dim=...")
    n_heads = d_model // target.head_dim
    if kv_given:
        return {"n_heads": n_heads}
    # the most KV heads that divide n_heads without more query heads per KV head than the target's
    per_kv = target.n_heads // target.n_kv_heads
    n_kv_heads = max(d for d in divisors(n_heads) if d == 1 or d * per_kv <= n_heads)
    return {"n_heads": n_heads, "n_kv_heads": n_kv_heads}


def _flags(changes: dict[str, Any]) -> str:
    """Overrides as the options that give them (--depth 16, --set router_rank=64)."""
    options = {option.name: option for option in dataclasses.fields(PlanRequest)}
    return " ".join(f"{option_flag(options[k])} {v}" if k in options else f"--set {k}={v}"
                    for k, v in changes.items())


def default_align(target: ModelConfig) -> int:
    """64, or for a target whose expert is narrower than 4 x 64 the largest power of two <= d_ff / 4:
    la-tiny's whole expert is 64 wide, so a 64-step lattice could not resolve its FLOPs."""
    if target.d_ff >= 4 * DEFAULT_ALIGN:
        return DEFAULT_ALIGN
    return max(1, 2 ** int(math.log2(max(1, target.d_ff // 4))))


@dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """A checked request: what the planner works from. `shape` is the target model (or, with budgets, the
    family's shape from --base), with --seq-len and the vocabulary applied."""

    request: PlanRequest  # as asked: the sweep's command line, --gpu/--mfu, the default sweep path
    label: str  # the target's name, or "budget"
    variants: list[str]  # those matched (with budgets, without the la baseline)
    seeds: list[int]
    grid_axes: list
    budgets: dict[str, float]  # quantity -> budget (--flops, --params); empty with a target
    shape: ModelConfig
    overrides: Overrides
    match: MatchSpec  # the variants' search, before the target's costs and the memory batch are known
    tokenizer: Any  # --tokenizer loaded (matcher.data.tokenizer), or None
    train_sets: dict[str, Any]  # --set train.FIELD=VALUE, tokenizer aside
    tokens_basis: str  # TOKENS_BASES
    notices: list[str]


def validate(request: PlanRequest, tokens_basis: str = "total") -> PlanSpec:
    """The request checked and resolved: every option parsed, the target loaded, the vocabulary and the
    search's tolerance and lattice fixed. Every error a request can hold is raised here (the micro-batch,
    which must divide the batch the target's compute sets, aside)."""
    variants, notices = parse_variants(request.variants)
    seeds = parse_seeds(request.seeds)
    grid_axes = [parse_grid(text) for text in request.grid or []]
    matched, match_notices = parse_match(request.match)
    notices += match_notices
    budgets = _budgets(request, matched)
    shape, resolved = _load_shape(request, budgets)
    if resolved and resolved.notice:
        notices.append(resolved.notice)
    train_sets = parse_train_set(request.set_fields or [])
    tokenizer = _plan_tokenizer(request.tokenizer, train_sets.pop("tokenizer", None))
    shape = _vocabulary(request, shape, tokenizer, notices)
    match = _search_spec(request, shape, matched, budgets)
    if budgets:
        variants = [v for v in variants if v != "la"]
        if not variants:
            raise ConfigError("with budgets, la is the baseline (the target run): give --variants dr and/or dr_da")
    label = "budget" if budgets else resolved.name if resolved else file_name(Path(request.target).stem)
    overrides = Overrides(depth=request.depth, d_model=request.d_model, top_k=request.top_k,
                          da_heads=request.da_heads, fields=parse_set(request.set_fields or []))
    return PlanSpec(request=request, label=label, variants=variants, seeds=seeds, grid_axes=grid_axes,
                    budgets=budgets, shape=shape, overrides=overrides, match=match, tokenizer=tokenizer,
                    train_sets=train_sets, tokens_basis=tokens_basis, notices=notices)


def _budgets(request: PlanRequest, matched: tuple[str, ...]) -> dict[str, float]:
    """--flops/--params, checked against --target and --match."""
    budgets = {q: v for q, v in (("flops", request.flops), ("params", request.params)) if v is not None}
    if budgets and request.target is not None:
        raise ConfigError("give either --target or budgets (--flops/--params), not both")
    if not budgets and request.target is None:
        raise ConfigError("give --target (a preset such as la-2b, or a model-config YAML) or budgets "
                          "(--flops/--params)")
    if any(v <= 0 for v in budgets.values()):
        raise ConfigError("--flops and --params must be positive")
    if request.max_memory_ratio is not None and request.max_memory_ratio <= 0:
        raise ConfigError(f"--max-memory-ratio must be positive, got {request.max_memory_ratio:g}")
    memories = [q for q in matched if q.endswith("_memory")]
    if budgets and memories and request.match != PlanRequest.match:
        raise ConfigError(f"{', '.join(memories)} cannot be matched to budgets: give --target, "
                          f"or drop {', '.join(memories)} from --match")
    return budgets


def _load_shape(request: PlanRequest, budgets: dict[str, float]) -> tuple[ModelConfig, Resolved | None]:
    from matcher.plan.presets import load_target  # the preset table imports every preset's module

    shape, resolved = load_target(request.base if budgets else request.target)
    if request.seq_len is not None:
        shape = shape.replace(seq_len=request.seq_len)
    return shape, resolved


def _vocabulary(request: PlanRequest, shape: ModelConfig, tokenizer: Any, notices: list[str]) -> ModelConfig:
    """The shape with --vocab-size or the tokenizer's vocabulary: embeddings are parameters, so the
    vocabulary is fixed before matching."""
    if tokenizer is not None and request.vocab_size is not None:
        raise ConfigError("--tokenizer fixes the vocabulary (padded to a multiple of 64): drop --vocab-size")
    if request.vocab_size is not None:
        shape = shape.replace(vocab_size=request.vocab_size)
    if tokenizer is not None:
        from matcher.data.tokenizer import padded_vocab

        shape = shape.replace(vocab_size=padded_vocab(tokenizer.vocab_size))
        notices.append(f"vocabulary: the {tokenizer.describe()} has {tokenizer.vocab_size:,} tokens; every run's "
                       f"vocab_size is {shape.vocab_size:,} (padded to a multiple of 64)")
    return shape


def _search_spec(request: PlanRequest, shape: ModelConfig, matched: tuple[str, ...],
                 budgets: dict[str, float]) -> MatchSpec:
    """The search's settings: the lattice, the tolerance, the free variables; with budgets, the budgets
    are the targets and only the budgeted quantities are matched."""
    tolerance = request.tolerance
    if tolerance is None:  # budgets: la's lattice steps repeat in each of its `depth` layers, too coarse for 0.5%
        fine = default_align(shape) >= AUTO_ALIGN_FLOOR and not budgets
        tolerance = DEFAULT_TOLERANCE if fine else NARROW_TOLERANCE
    held_free, third = parse_free(request.free) if request.free is not None else (set(), None)
    spec = MatchSpec(matched=matched, align=request.align if request.align is not None else default_align(shape),
                     conventions=request.conventions, seq_len=shape.seq_len, tolerance=tolerance,
                     inference_batch=request.inference_batch, inference_context=request.inference_context,
                     third=third, auto=request.align is None and request.free is None, held=frozenset(held_free))
    if budgets:
        spec = dataclasses.replace(spec, targets=budgets,
                                   matched=tuple(q for q in matched if q in budgets) or tuple(budgets))
    return spec


def _plan_tokenizer(option: str | None, from_set: Any):
    """The tokenizer of --tokenizer (or --set train.tokenizer=PATH), loaded; None: keep the target's vocabulary."""
    from matcher.data.tokenizer import load_tokenizer

    if from_set is not None and not isinstance(from_set, str):
        raise ConfigError("--set train.tokenizer takes char or the path of a tokenizer.json (or use --tokenizer)")
    if option is not None and from_set is not None and option != from_set:
        raise ConfigError(f"--tokenizer {option} and --set train.tokenizer={from_set} disagree; give one")
    spec = option if option is not None else from_set
    return None if spec is None else load_tokenizer(spec)
