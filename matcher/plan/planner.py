"""Planning a sweep: the target, the variants matched to it (matcher.plan.search), shared training
settings scaled to the target's size, and the sweep file that records them.

A variant is the target with `variant` changed, the user's overrides applied (--depth, --d-model,
--top-k, --da-heads, --set key=value) and d_ff / n_experts solved by the search. With budgets
(--flops, --params) instead of a target model, the family's shape comes from --base (default la-1b):
its `la` form is matched to the budgets first and becomes the target (baseline) run; the variants
are matched to the budgets.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matcher import __version__, fmt
from matcher.config import MAX_SIZE, VARIANTS, ModelConfig, TrainConfig, divisors
from matcher.cost.analytic import Conventions
from matcher.cost.gpu_hours import DEFAULT_GPU, DEFAULT_MFU, DEVICES, check_mfu, device
from matcher.errors import ConfigError, MatchError
from matcher.names import file_name, resolve
from matcher.plan.grid import grid_points, parse_grid, resolve_grids
from matcher.plan.search import (
    AUTO_ALIGN_FLOOR,
    DEFAULT_MATCHED,
    THIRD_VARIABLES,
    Match,
    MatchSpec,
    check_matched,
    costs_of,
    current_names,
    match,
    renamed_notice,
)
from matcher.plan.sweep import Run, Sweep, SweepMeta, predict

DEFAULT_ALIGN = 64  # d_ff alignment: tensor-core and kernel friendly widths
# The default tolerance: 0.5%, which the automatic lattice (d_ff multiples of 64, then 32) and third free
# variable reach; a target whose expert is narrower than 4 x 32 (la-tiny's is 64 wide) cannot be
# resolved on such a lattice and keeps 2%, as do budgets (--flops/--params), whose la baseline repeats
# every lattice step in each of its layers.
DEFAULT_TOLERANCE = 0.005
NARROW_TOLERANCE = 0.02
FREE_FIELDS = ("d_ff", "n_experts")
# Chinchilla (Hoffmann et al. 2022): compute-optimal training uses ~20 tokens per parameter.
TOKENS_PER_PARAM = 20
# which of the target's parameters TOKENS_PER_PARAM counts: a plain plan keeps the total (its sweeps stay
# as they were); a ladder counts the body, as the scaling-law papers do (Kaplan et al. 2020 fit to
# non-embedding parameters), so that one vocabulary over rungs of growing size does not skew the rule
TOKENS_BASES = {"total": "total parameters", "body": "body (non-embedding) parameters"}
# plan warns when embeddings (token embedding + untied LM head) exceed this share of the target's parameters
EMBEDDING_SHARE_WARNING = 0.5
# DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954) fits of the compute-optimal batch (tokens) and peak
# learning rate to the training compute C in FLOPs: B = 0.292 C^0.3271, lr = 0.3118 C^-0.125. Their C
# counts non-embedding FLOPs; ours includes the LM head, a few percent at these sizes.
BATCH_TOKENS_FIT = (0.2920, 0.3271)
LR_FIT = (0.3118, -0.1250)
EVAL_DOUBLINGS = 7  # checkpoints at total / 2^7, ..., total / 2, total: log-spaced by factors of 2


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


def default_training(train_flops_per_token: float, params_for_tokens: float, seq_len: int, *,
                     tokens: int | None = None, batch: int | None = None,
                     recompute: str = "none") -> TrainConfig:
    """Training settings shared by every run of a sweep (equal tokens per step, so the curves are
    comparable), scaled to the target:
    - total tokens: TOKENS_PER_PARAM x the target's parameters (total, or body for a ladder: see
      TOKENS_BASES), 2 significant digits;
    - batch: the power of two of sequences closest to DeepSeek's compute-optimal batch in tokens;
    - peak LR: DeepSeek's compute-optimal LR, 2 significant digits (all runs share the compute C,
      so they share the LR);
    - eval checkpoints: log-spaced by factors of 2 up to the end, on step boundaries."""
    total = tokens if tokens is not None else _round_significant(TOKENS_PER_PARAM * params_for_tokens, 2)
    compute_flops = train_flops_per_token * total
    if batch is None:
        batch_tokens = BATCH_TOKENS_FIT[0] * compute_flops ** BATCH_TOKENS_FIT[1]
        batch = 2 ** max(0, round(math.log2(max(1.0, batch_tokens / seq_len))))
    step_tokens = batch * seq_len
    total = max(step_tokens, round(total / step_tokens) * step_tokens)
    lr = _round_significant(LR_FIT[0] * compute_flops ** LR_FIT[1], 2)
    evals = sorted({max(step_tokens, round(total / 2**i / step_tokens) * step_tokens)
                    for i in range(EVAL_DOUBLINGS + 1)})
    return TrainConfig(total_tokens=int(total), batch_size=batch, seq_len=seq_len, lr=lr, eval_tokens=evals,
                       recompute=recompute)


def _round_significant(value: float, digits: int) -> float | int:
    scale = 10 ** (math.floor(math.log10(abs(value))) - digits + 1)
    rounded = round(value / scale) * scale
    return int(rounded) if rounded >= 1 else float(f"{rounded:.{digits}g}")


def _option(default: Any, help: str, flag: str | None = None, **limits: Any) -> Any:
    """A `matcher plan` option: declared once, here; the CLI is built from these fields and the sweep's
    recorded command line is rebuilt from them."""
    return field(default=default, metadata={"help": help, "flag": flag, **limits})


@dataclass(kw_only=True)
class PlanRequest:
    """Everything `matcher plan` can be asked, with its defaults: one field per command-line option."""

    target: str | None = _option(None, "Target: preset name or model-config YAML.")
    variants: str = _option("dr,dr_da", "Comma-separated variants to match: la, dr, dr_da.")
    flops: float | None = _option(None, "Budget instead of --target: training FLOPs per token.")
    params: float | None = _option(None, "Budget instead of --target: total parameters.")
    align: int | None = _option(None, "d_ff is a multiple of this (default 64; d_ff/4 for targets narrower "
                                "than 256).", min=1)
    match: str = _option(",".join(DEFAULT_MATCHED), "Quantities to match: flops, params, inference_memory_bytes "
                         "(weights + SA KV + DA caches), train_memory_bytes (one step at the micro-batch), body_flops, "
                         "body_params (non-embedding: without the token embedding and LM head).")
    free: str | None = _option(None, "Free variables: d_ff,n_experts and optionally one of router_rank, "
                               "n_kv_heads, top_k (default: chosen by the search when needed).")
    inference_batch: int = _option(1, "Sequences decoded at once, for inference memory.", min=1)
    inference_context: int | None = _option(None, "Context tokens per sequence, for inference memory "
                                            "(default: seq_len).", min=1)
    max_memory_ratio: float | None = _option(None, "Hard limit: training memory at most R x the target's.")
    tolerance: float | None = _option(None, "Largest residual that counts as matched (default 0.5%; 2% for "
                                      "targets whose expert is narrower than 128 and for budgets).", min=0)
    tokens: float | None = _option(None, "Training tokens per run (default 20 x the target's parameters).",
                                   min=1)
    batch: int | None = _option(None, "Sequences per step (default: scaled to compute).", min=1)
    micro_batch: int | None = _option(None, "Sequences per forward on one GPU: gradient accumulation (same "
                                      "steps, less memory).", min=1)
    seq_len: int | None = _option(None, "Tokens per sequence (default: the target's).", min=1)
    vocab_size: int | None = _option(None, "Vocabulary of the target and variants (default: the target's).",
                                     min=1)
    ladder: str | None = _option(None, "Instead of --target: comma-separated targets, smallest first (such as "
                                 "la-100m,la-1b,la-2b): one sweep per rung and a ladder manifest.")
    seeds: str = _option("0", "Comma-separated seeds; several give runs <variant>-s<seed>.")
    grid: list[str] | None = _option(None, "A hyperparameter grid, repeatable: train.FIELD=V1,V2,... (xM: M x the "
                                     "plan's value, such as train.lr=x0.33,x1,x3); VARIANT:train.FIELD=... for "
                                     "one variant. Runs are the product of the grids and --seeds, named "
                                     "<variant>-lr1e-3[-s0].")
    base: str = _option("la-1b", "Shape of the family when budgets are given.")
    depth: int | None = _option(None, "Variants' depth (default: the target's).", min=1)
    d_model: int | None = _option(None, "Variants' width; keeps the head width.", min=1)
    top_k: int | None = _option(None, "Variants' experts per token.", min=1)
    da_heads: int | None = _option(None, "Depth-attention heads (dr_da).", min=1)
    set_fields: list[str] | None = _option(None, "Any model field of the variants: key=value (setting d_ff "
                                           "or n_experts holds it); train.FIELD=VALUE: a training setting of "
                                           "every run (data, eval_data, lr, loss_on, ...).", flag="--set")
    tokenizer: str | None = _option(None, "A Hugging Face tokenizer.json (or char): every run's vocab_size is "
                                    "its size padded to a multiple of 64, set before matching.")
    gpu: str = _option(DEFAULT_GPU, f"Device for the GPU-hours before launch: {', '.join(DEVICES)} (peak dense "
                       "bf16 from the vendor's datasheet).")
    mfu: float = _option(DEFAULT_MFU, "Assumed model FLOPs utilization for the GPU-hours: the share of the "
                         "device's peak the training reaches.")
    causal_half: bool = _option(False, "Halve sequence-attention score FLOPs (causal mask).",
                                flag="--causal-half")
    recompute: str = _option("none", "Activation recomputation in training: none | full.")
    activation_dtype: str = _option("bf16", "Saved activations: bf16 (GPU autocast) | fp32.")

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
    def overrides(self) -> Overrides:
        return Overrides(depth=self.depth, d_model=self.d_model, top_k=self.top_k, da_heads=self.da_heads,
                         fields=parse_set(self.set_fields or []))

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
    return option.metadata["flag"] or "--" + option.name.replace("_", "-")


@dataclass(frozen=True)
class PlannedRun:
    label: str  # run group: the target's name or the variant
    role: str  # target | variant
    config: ModelConfig
    match: Match | None  # None for a target model (it is the reference, not matched)
    predicted: dict[str, float]  # sweep.predict under the plan's training settings


@dataclass
class Plan:
    request: PlanRequest
    target_label: str  # preset name, config file stem, or "budget"
    variants: list[str]
    matched: tuple[str, ...]
    spec: MatchSpec  # what the variants were matched to
    train: TrainConfig  # shared by every run (the seed aside)
    seeds: list[int]
    runs: list[PlannedRun]  # the target first
    notices: list[str]
    grid: dict[str, dict[str, list]] = field(default_factory=dict)  # label -> {train field: values}
    tokens_rule: str = ""  # how train.total_tokens was set, in words (sweep meta)

    @property
    def target(self) -> PlannedRun:
        return self.runs[0]

    def grid_points(self, label: str) -> list:
        """The grid points of one run group (one point, with no settings, without a grid)."""
        return grid_points(self.grid.get(label, {}))

    @property
    def n_runs(self) -> int:
        """Runs of the sweep: every run group's grid points x seeds."""
        return sum(len(self.grid_points(run.label)) for run in self.runs) * len(self.seeds)

    def default_path(self) -> Path:
        depth = self.request.overrides.depth
        name = f"{self.target_label}-vs-{'-'.join(self.variants)}" + (f"-d{depth}" if depth else "")
        if self.target_label == "budget":
            budgets = [f"{fmt.si(self.request.flops)}flops" if self.request.flops else "",
                       f"{fmt.params(self.request.params)}params" if self.request.params else ""]
            name = "-".join(["budget", *filter(None, budgets)]) + name[len("budget"):]
        return Path("sweeps") / f"{name}.yaml"


def make_plan(request: PlanRequest, progress: Callable[[str], None] = lambda text: None, *,
              tokens_basis: str = "total") -> Plan:
    """Resolve the target, fix the shared training settings, and match every variant. `tokens_basis`
    (TOKENS_BASES): which of the target's parameters the default tokens count."""
    from matcher.plan.presets import load_target

    variants, notices = parse_variants(request.variants)
    seeds = parse_seeds(request.seeds)
    grid_axes = [parse_grid(text) for text in request.grid or []]
    matched, match_notices = parse_match(request.match)
    notices += match_notices
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
    shape, resolved = load_target(request.base if budgets else request.target)
    if resolved and resolved.notice:
        notices.append(resolved.notice)
    if request.seq_len is not None:
        shape = shape.replace(seq_len=request.seq_len)
    train_sets = parse_train_set(request.set_fields or [])
    tokenizer = _plan_tokenizer(request.tokenizer, train_sets.pop("tokenizer", None))
    if tokenizer is not None and request.vocab_size is not None:
        raise ConfigError("--tokenizer fixes the vocabulary (padded to a multiple of 64): drop --vocab-size")
    if request.vocab_size is not None:
        shape = shape.replace(vocab_size=request.vocab_size)
    if tokenizer is not None:  # the embeddings are parameters: the vocabulary is fixed before matching
        from matcher.data.tokenizer import padded_vocab

        shape = shape.replace(vocab_size=padded_vocab(tokenizer.vocab_size))
        notices.append(f"vocabulary: the {tokenizer.describe()} has {tokenizer.vocab_size:,} tokens; every run's "
                       f"vocab_size is {shape.vocab_size:,} (padded to a multiple of 64)")
    align = request.align if request.align is not None else default_align(shape)
    conv = request.conventions
    tolerance = request.tolerance
    if tolerance is None:  # budgets: la's lattice steps repeat in each of its `depth` layers, too coarse for 0.5%
        fine = default_align(shape) >= AUTO_ALIGN_FLOOR and not budgets
        tolerance = DEFAULT_TOLERANCE if fine else NARROW_TOLERANCE
    held_free, third = parse_free(request.free) if request.free is not None else (set(), None)
    spec = MatchSpec(matched=matched, align=align, conventions=conv, seq_len=shape.seq_len,
                     tolerance=tolerance, inference_batch=request.inference_batch,
                     inference_context=request.inference_context, third=third,
                     auto=request.align is None and request.free is None, held=frozenset(held_free))

    if budgets:
        memories = [q for q in matched if q.endswith("_memory")]
        if memories and request.match != PlanRequest.match:
            raise ConfigError(f"{', '.join(memories)} cannot be matched to budgets: give --target, "
                              f"or drop {', '.join(memories)} from --match")
        label, target_label = "budget", "la"
        matched = tuple(q for q in matched if q in budgets) or tuple(budgets)
        spec = dataclasses.replace(spec, targets=budgets, matched=matched)
        progress("matching the la baseline to the budgets")
        target_match = _match_or_explain(shape, "la", request.overrides, spec, "la (baseline)",
                                         also=tuple(v for v in variants if v != "la"))
        target_config = target_match.config
        notices += [f"la (baseline): {note}" for note in target_match.notes]
        variants = [v for v in variants if v != "la"]
        if not variants:
            raise ConfigError("with budgets, la is the baseline (the target run): "
                              "give --variants dr and/or dr_da")
    else:
        label = target_label = resolved.name if resolved else file_name(Path(request.target).stem)
        target_config, target_match = shape, None
    target_costs = costs_of(target_config, spec, ("flops", "params", "body_params"))
    notices += _embedding_share_notice(target_config, label, spec.matched)
    params_for_tokens = target_costs["body_params" if tokens_basis == "body" else "params"]
    train = default_training(target_costs["flops"], params_for_tokens, shape.seq_len,
                             tokens=request.tokens, batch=request.batch, recompute=conv.recompute)
    tokens_rule = (f"{fmt.si(request.tokens)} tokens per run (--tokens)" if request.tokens is not None else
                   f"{TOKENS_PER_PARAM} tokens per {TOKENS_BASES[tokens_basis].rstrip('s')} of the target, "
                   "in whole steps")
    if request.micro_batch is not None:
        if train.batch_size % request.micro_batch:
            raise ConfigError(f"--micro-batch {request.micro_batch} does not divide the batch of "
                              f"{train.batch_size} sequences; give a divisor (or --batch)")
        train = dataclasses.replace(train, micro_batch_size=request.micro_batch)
    if tokenizer is not None:
        train = dataclasses.replace(train, tokenizer=tokenizer.record())
    if train_sets:
        train = TrainConfig.from_dict({**train.to_dict(), **train_sets}, where="--set train")
    # Variants are matched to the budgets where given, otherwise to the target run's costs. Memory is
    # one process's: the sequences of one forward/backward (a micro-batch when accumulating).
    mem_batch = train.micro_batch_size or train.batch_size
    reference = costs_of(target_config, dataclasses.replace(spec, batch=mem_batch))
    spec = dataclasses.replace(spec, batch=mem_batch, targets={**reference, **budgets})
    if request.max_memory_ratio is not None:
        spec = dataclasses.replace(spec, max_memory_bytes=request.max_memory_ratio * reference["train_memory_bytes"])

    target_predicted = predict(target_config, train, conv)
    runs = [PlannedRun(target_label, "target", target_config, target_match, target_predicted)]
    for variant in variants:
        progress(f"matching {variant} to {label}")
        found = _match_or_explain(shape, variant, request.overrides, spec, variant,
                                  also=tuple(v for v in variants if v != variant))
        runs.append(PlannedRun(variant, "variant", found.config, found, predict(found.config, train, conv)))
        notices += [f"{variant}: {note}" for note in found.notes]
        hint = _finer_align_hint(shape, variant, request.overrides, spec, found)
        if hint:
            notices.append(f"{variant}: {hint}")
    grid = resolve_grids(grid_axes, {run.label: run.config.variant for run in runs}, train)
    return Plan(request=request, target_label=label, variants=variants, matched=spec.matched, spec=spec,
                train=train, seeds=seeds, runs=runs, notices=notices, grid=grid, tokens_rule=tokens_rule)


def _embedding_share_notice(target: ModelConfig, label: str, matched: tuple[str, ...]) -> list[str]:
    """A warning when embeddings dominate the target's parameters and only totals are matched: then
    a variant can be "matched" with a body far from the target's."""
    from matcher.cost.analytic import param_counts

    params = param_counts(target)
    share = params.embedding / params.total
    if share <= EMBEDDING_SHARE_WARNING or any(q.startswith("body_") for q in matched):
        return []
    body = ",".join(dict.fromkeys({"flops": "body_flops", "params": "body_params"}.get(q, q) for q in matched))
    return [f"embeddings are {share:.0%} of {label}'s {fmt.params(params.total)} parameters (vocabulary "
            f"{target.vocab_size:,}): a Δ on totals hides the body's (non-embedding) Δ; match the body with "
            f"--match {body}"]


def _plan_tokenizer(option: str | None, from_set: Any):
    """The tokenizer of --tokenizer (or --set train.tokenizer=PATH), loaded; None: keep the target's vocabulary."""
    from matcher.data.tokenizer import load_tokenizer

    if from_set is not None and not isinstance(from_set, str):
        raise ConfigError("--set train.tokenizer takes char or the path of a tokenizer.json (or use --tokenizer)")
    if option is not None and from_set is not None and option != from_set:
        raise ConfigError(f"--tokenizer {option} and --set train.tokenizer={from_set} disagree; give one")
    spec = option if option is not None else from_set
    return None if spec is None else load_tokenizer(spec)


CLOSE_RESIDUAL = 0.005  # a match looser than this on a 64-aligned lattice gets a hint to refine it


def _finer_align_hint(shape: ModelConfig, variant: str, overrides: Overrides, spec: MatchSpec,
                      found: Match) -> str | None:
    """When the lattice is too coarse for a close match (worst matched |residual| above 0.5%), what
    halving --align would give. d_ff steps of `align` move FLOPs by a fixed amount; the best lattice
    point can be off by half a step whatever the search does."""
    worst = max(abs(found.residuals[q]) for q in found.solved) if found.solved else 0.0
    if (spec.auto or spec.third or worst <= CLOSE_RESIDUAL or spec.align % 2 or spec.align < 16
            or "d_ff" not in found.free):
        return None
    finer = dataclasses.replace(spec, align=spec.align // 2)
    try:
        base, held = variant_config(shape, variant, overrides)
        refined = match(base, finer, held, variant)
    except MatchError:
        return None
    better = max(abs(refined.residuals[q]) for q in refined.solved)
    if better >= worst:
        return None
    listing = ", ".join(f"{q} {refined.residuals[q]:+.2%}" for q in refined.solved)
    return (f"the closest point with d_ff a multiple of {spec.align} is off by {worst:.2%}; --align "
            f"{finer.align} gives d_ff {refined.config.d_ff}, n_experts {refined.config.n_experts} ({listing})")


def _match_or_explain(shape: ModelConfig, variant: str, overrides: Overrides, spec: MatchSpec,
                      label: str, also: tuple[str, ...] = ()) -> Match:
    """Run the search; when it fails, add the single overrides that would make it succeed, for this
    variant and for the other variants `also` of the plan (the flags apply to every one of them)."""
    base, held = variant_config(shape, variant, overrides)
    try:
        return match(base, spec, held, label)
    except MatchError as err:
        hints = _suggestions(shape, base, held, variant, overrides, spec, label, also=also)
        tail = (f"Possible with {' or '.join(hints)}." if hints
                else "No single override tried makes it possible.")
        raise MatchError(f"{err}. {tail}") from None


def _suggestions(shape: ModelConfig, base: ModelConfig, held: set[str], variant: str, overrides: Overrides,
                 spec: MatchSpec, label: str, limit: int = 3, also: tuple[str, ...] = ()) -> list[str]:
    """Single changes (memory limit, top_k, depth, d_model, a low-rank router, align) under which the
    match succeeds for `variant` and each variant in `also`, the smallest change of each kind first."""
    candidates: list[tuple[str, Overrides, MatchSpec]] = []
    if spec.max_memory_bytes is not None:
        try:
            unlimited = match(base, dataclasses.replace(spec, max_memory_bytes=None), held, label)
            ratio = math.ceil(unlimited.costs["train_memory_bytes"] / spec.targets["train_memory_bytes"] * 1000) / 1000
            limit_bytes = ratio * spec.targets["train_memory_bytes"]
            candidates.append((f"--max-memory-ratio {ratio:.3f}", overrides,
                               dataclasses.replace(spec, max_memory_bytes=limit_bytes)))
        except MatchError:
            pass
    for top_k in range(base.top_k - 1, 0, -1):
        candidates.append((f"--top-k {top_k}", dataclasses.replace(overrides, top_k=top_k), spec))
    for depth in (base.depth * 3 // 4, base.depth // 2, base.depth // 4, base.depth * 2):
        if depth >= 1 and depth != base.depth:
            candidates.append((f"--depth {depth}", dataclasses.replace(overrides, depth=depth), spec))
    step = base.head_dim * max(1, base.n_heads // base.n_kv_heads)  # keeps whole KV groups
    for d_model in (base.d_model - step, base.d_model * 3 // 4 // step * step,
                    base.d_model // 2 // step * step):
        if d_model >= step and d_model != base.d_model:
            candidates.append((f"--d-model {d_model}", dataclasses.replace(overrides, d_model=d_model), spec))
    if base.is_moe and not base.router_rank:
        for rank in (base.d_model // 16, base.d_model // 64):
            if rank >= 2 and rank % 2 == 0:
                low_rank = dataclasses.replace(overrides, fields={**overrides.fields, "router_rank": rank})
                candidates.append((f"--set router_rank={rank}", low_rank, spec))
    for align in (spec.align // 2, spec.align // 4):
        if align >= 8:
            candidates.append((f"--align {align}", overrides, dataclasses.replace(spec, align=align)))
    found: list[str] = []
    for flag, changed, changed_spec in candidates:
        kind = flag.split()[0]
        if any(hint.split()[0] == kind for hint in found):
            continue
        try:
            for name, name_label in ((variant, label), *((other, other) for other in also)):
                candidate, candidate_held = variant_config(shape, name, changed)
                match(candidate, changed_spec, candidate_held, name_label)
        except (MatchError, ConfigError):
            continue
        found.append(flag)
        if len(found) == limit:
            break
    return found


def build_sweep(plan: Plan, created: str | None = None) -> Sweep:
    """The sweep file's content: one run per (target or variant) x grid point x seed, grouped by label
    and grid point (a group's runs differ only in seed)."""
    conv = plan.spec.conventions
    runs = []
    for planned in plan.runs:
        for point in plan.grid_points(planned.label):
            group = "-".join(filter(None, (planned.label, point.suffix)))
            # neither the seed nor a gridded setting changes a predicted cost (batch and context are not gridded)
            point_train = dataclasses.replace(plan.train, **point.settings)
            for seed in plan.seeds:
                name = group if len(plan.seeds) == 1 else f"{group}-s{seed}"
                runs.append(Run(name=name, group=group, role=planned.role, model=planned.config,
                                train=dataclasses.replace(point_train, seed=seed), predicted=dict(planned.predicted)))
    meta = SweepMeta(
        target=plan.target_label, variants=[r.label for r in plan.runs if r.role == "variant"],
        matched=list(plan.matched), conventions=conv.to_dict(), tool_version=__version__,
        command=plan.request.command_line(),
        created=created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        description=_describe(plan), tolerance=plan.spec.tolerance,
        solved={r.label: list(r.match.solved) for r in plan.runs if r.match is not None},
        memory_batch=plan.spec.batch, inference_batch=plan.spec.inference_batch,
        inference_context=plan.spec.inference_context or plan.train.seq_len,
        grid={label: {f"{TRAIN_PREFIX}{name}": values for name, values in grid.items()}
              for label, grid in plan.grid.items()},
        tokens_rule=plan.tokens_rule, gpu=plan.request.gpu, assumed_mfu=plan.request.mfu)
    return Sweep(meta=meta, runs=runs)


def _describe(plan: Plan) -> str:
    matched = [
        f"{run.label}: d_ff {run.config.d_ff} (a multiple of {run.match.align}), n_experts "
        f"{run.config.n_experts}"
        + "".join(f", {name} {getattr(run.config, name)}" for name in run.match.free[2:]) + ", "
        + ", ".join(f"{q} {r:+.3%}" for q, r in run.match.residuals.items() if q in plan.matched)
        for run in plan.runs if run.match is not None
    ]
    head = f"matched to {plan.target_label} on {', '.join(plan.matched)}"
    if "inference_memory_bytes" in plan.matched:
        head += (f" (inference memory: {plan.spec.inference_batch} x "
                 f"{plan.spec.inference_context or plan.train.seq_len} tokens)")
    return "; ".join([head, *matched])
