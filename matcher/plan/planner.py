"""Planning a sweep, the pipeline: a request (matcher.plan.request.PlanRequest) is checked into a PlanSpec
(request.validate), the target's training settings are scaled to its size, every variant is matched to
it (matcher.plan.search, with matcher.plan.alternatives for what else to try), and the plan becomes
the sweep file that records it (build_sweep).

A variant is the target with `variant` changed, the user's overrides applied (--depth, --d-model,
--top-k, --da-heads, --set key=value) and d_ff / n_experts solved by the search. With budgets
(--flops, --params) instead of a target model, the family's shape comes from --base (default la-1b):
its `la` form is matched to the budgets first and becomes the target (baseline) run; the variants
are matched to the budgets.

Costs are computed once (matcher.plan.costs): a search's Match carries every matched quantity
(search.costs_of), and a planned run's recorded costs (sweep.predict) take those of them computed at
the same settings, computing only the rest; the sweep and the printing read them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from matcher import __version__, fmt
from matcher.config import ModelConfig, TrainConfig
from matcher.cost.analytic import param_counts
from matcher.errors import ConfigError
from matcher.plan.alternatives import match_variant
from matcher.plan.costs import Computed
from matcher.plan.grid import grid_points, resolve_grids
from matcher.plan.request import TOKENS_BASES, TRAIN_PREFIX, PlanRequest, PlanSpec, validate
from matcher.plan.search import QUANTITIES, Match, MatchSpec, costs_of
from matcher.plan.sweep import Run, Sweep, SweepMeta, predict

# Chinchilla (Hoffmann et al. 2022): compute-optimal training uses ~20 tokens per parameter.
TOKENS_PER_PARAM = 20
# plan warns when embeddings (token embedding + untied LM head) exceed this share of the target's parameters
EMBEDDING_SHARE_WARNING = 0.5
# DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954) fits of the compute-optimal batch (tokens) and peak
# learning rate to the training compute C in FLOPs: B = 0.292 C^0.3271, lr = 0.3118 C^-0.125. Their C
# counts non-embedding FLOPs; ours includes the LM head, a few percent at these sizes.
BATCH_TOKENS_FIT = (0.2920, 0.3271)
LR_FIT = (0.3118, -0.1250)
EVAL_DOUBLINGS = 7  # checkpoints at total / 2^7, ..., total / 2, total: log-spaced by factors of 2
# the target's costs that set the training (batch-independent: the memory batch follows from them)
TRAINING_COSTS = ("flops", "params", "body_params")


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
        depth = self.request.depth
        name = f"{self.target_label}-vs-{'-'.join(self.variants)}" + (f"-d{depth}" if depth else "")
        if self.target_label == "budget":
            budgets = [f"{fmt.si(self.request.flops)}flops" if self.request.flops else "",
                       f"{fmt.params(self.request.params)}params" if self.request.params else ""]
            name = "-".join(["budget", *filter(None, budgets)]) + name[len("budget"):]
        return Path("sweeps") / f"{name}.yaml"


def make_plan(request: PlanRequest, progress: Callable[[str], None] = lambda text: None, *,
              tokens_basis: str = "total") -> Plan:
    """The request checked (request.validate), then planned (plan_spec). `tokens_basis` (TOKENS_BASES):
    which of the target's parameters the default tokens count."""
    return plan_spec(validate(request, tokens_basis), progress)


def plan_spec(spec: PlanSpec, progress: Callable[[str], None] = lambda text: None) -> Plan:
    """Resolve the target (with budgets: match the la baseline), fix the shared training settings from its
    costs, and match every variant to it."""
    notices = list(spec.notices)
    target_config, target_match = _target(spec, progress, notices)
    target_costs = (target_match.costs if target_match is not None
                    else costs_of(target_config, spec.match, TRAINING_COSTS))
    notices += _embedding_share_notice(target_config, spec.label, spec.match.matched)
    train, tokens_rule = _training(spec, target_costs)
    search, reference = _variant_search(spec, target_config, target_costs, train)
    target_label = "la" if spec.budgets else spec.label
    runs = [PlannedRun(target_label, "target", target_config, target_match,
                       predict(target_config, train, search.conventions, Computed(reference, search)))]
    for variant in spec.variants:
        progress(f"matching {variant} to {spec.label}")
        found, tried = match_variant(spec.shape, variant, spec.overrides, search, variant,
                                     also=tuple(v for v in spec.variants if v != variant))
        runs.append(PlannedRun(variant, "variant", found.config, found,
                               predict(found.config, train, search.conventions, Computed(found.costs, search))))
        notices += [f"{variant}: {note}" for note in (*found.notes, *tried)]
    grid = resolve_grids(spec.grid_axes, {run.label: run.config.variant for run in runs}, train)
    return Plan(request=spec.request, target_label=spec.label, variants=spec.variants, matched=search.matched,
                spec=search, train=train, seeds=spec.seeds, runs=runs, notices=notices, grid=grid,
                tokens_rule=tokens_rule)


def _target(spec: PlanSpec, progress: Callable[[str], None], notices: list[str]) -> tuple[ModelConfig, Match | None]:
    """The target run's model: the given target, or with budgets the la form of --base matched to them."""
    if not spec.budgets:
        return spec.shape, None
    progress("matching the la baseline to the budgets")
    found, tried = match_variant(spec.shape, "la", spec.overrides, spec.match, "la (baseline)",
                                 also=tuple(spec.variants))
    notices += [f"la (baseline): {note}" for note in (*found.notes, *tried)]
    return found.config, found


def _training(spec: PlanSpec, target_costs: dict[str, float]) -> tuple[TrainConfig, str]:
    """The training settings every run shares, and how the tokens were set, in words."""
    request = spec.request
    params_for_tokens = target_costs["body_params" if spec.tokens_basis == "body" else "params"]
    train = default_training(target_costs["flops"], params_for_tokens, spec.shape.seq_len,
                             tokens=request.tokens, batch=request.batch, recompute=request.recompute)
    tokens_rule = (f"{fmt.si(request.tokens)} tokens per run (--tokens)" if request.tokens is not None else
                   f"{TOKENS_PER_PARAM} tokens per {TOKENS_BASES[spec.tokens_basis].rstrip('s')} of the target, "
                   "in whole steps")
    if request.micro_batch is not None:
        if train.batch_size % request.micro_batch:
            raise ConfigError(f"--micro-batch {request.micro_batch} does not divide the batch of "
                              f"{train.batch_size} sequences; give a divisor (or --batch)")
        train = dataclasses.replace(train, micro_batch_size=request.micro_batch)
    if spec.tokenizer is not None:
        train = dataclasses.replace(train, tokenizer=spec.tokenizer.record())
    if spec.train_sets:
        train = TrainConfig.from_dict({**train.to_dict(), **spec.train_sets}, where="--set train")
    return train, tokens_rule


def _variant_search(spec: PlanSpec, target: ModelConfig, target_costs: dict[str, float],
                    train: TrainConfig) -> tuple[MatchSpec, dict[str, float]]:
    """What the variants are matched to (the budgets where given, otherwise the target run's costs), and the
    target's costs at those settings. Memory is one process's: the sequences of one forward/backward (a
    micro-batch when accumulating). The target's costs already computed are reused; the memory ones are
    computed at that batch."""
    mem_batch = train.micro_batch_size or train.batch_size
    search = dataclasses.replace(spec.match, batch=mem_batch)
    known = {q: v for q, v in target_costs.items() if q in TRAINING_COSTS}
    known.update(costs_of(target, search, [q for q in QUANTITIES if q not in known]))
    reference = {q: known[q] for q in QUANTITIES}
    search = dataclasses.replace(search, targets={**reference, **spec.budgets})
    if spec.request.max_memory_ratio is not None:
        limit_bytes = spec.request.max_memory_ratio * reference["train_memory_bytes"]
        search = dataclasses.replace(search, max_memory_bytes=limit_bytes)
    return search, reference


def _embedding_share_notice(target: ModelConfig, label: str, matched: tuple[str, ...]) -> list[str]:
    """A warning when embeddings dominate the target's parameters and only totals are matched: then
    a variant can be "matched" with a body far from the target's."""
    params = param_counts(target)
    share = params.embedding / params.total
    if share <= EMBEDDING_SHARE_WARNING or any(q.startswith("body_") for q in matched):
        return []
    body = ",".join(dict.fromkeys({"flops": "body_flops", "params": "body_params"}.get(q, q) for q in matched))
    return [f"embeddings are {share:.0%} of {label}'s {fmt.params(params.total)} parameters (vocabulary "
            f"{target.vocab_size:,}): a Δ on totals hides the body's (non-embedding) Δ; match the body with "
            f"--match {body}"]


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
