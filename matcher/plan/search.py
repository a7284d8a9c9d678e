"""Matching one variant to a target: the d_ff and n_experts whose costs equal the target's.

Free variables: d_ff = k * align (k >= 1) and n_experts = E (E >= top_k; absent for a dense MLP).
Costs are computed by matcher.cost.analytic at lattice points only, so the search never re-derives a formula.
Every cost grows monotonically in each variable, so a 1-D problem "cost(x) = target" has one root
of its continuous relaxation (the piecewise-linear interpolation of the lattice values), bracketed by
two neighbouring integers. We find that bracket with our own galloping bisection rather than
scipy.optimize's brentq: brentq would need a continuous d_ff that a config cannot hold, and importing
scipy.optimize takes 0.8-1 s on a 2-core machine (`python -X importtime`), more than the whole
analytic `matcher plan` may take.

Pairing: d_ff is the compute knob (every token runs top_k experts of width d_ff), n_experts the
capacity knob (parameters and memory grow with it while FLOPs only grow through the router). The
descent is Gauss-Seidel on that square system: hold n_experts and solve d_ff on FLOPs, hold d_ff and
solve n_experts on the capacity quantities, keep the better integer neighbour of each root, repeat
until neither moves. It contracts while the router's FLOPs stay below about twice the experts'
(the cross sensitivities are then smaller than the paired ones); past that the router alone eats
the FLOP budget, the two quantities cannot both be matched, and the tolerance check says so.

Objective (the final choice and every integer pick): the residual of a quantity is
cost / target - 1; a point is scored by (max |residual|, sum of squared residuals) over the solved
quantities, compared in that order: no matched quantity is worse than it has to be, and the sum
of squares breaks ties. With a fixed d_ff each residual is affine in n_experts, so the objective
is convex in n_experts and its integer minimum is a neighbour of the root of
max(residual) + min(residual). The final step scans d_ff over +-NEIGHBOURHOOD_STEPS aligned steps
of the descent's point and, for each, takes that best n_experts: the best point of the final
neighbourhood.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from matcher import fmt
from matcher.config import ModelConfig, divisors
from matcher.cost.analytic import Conventions, forward_flops_per_token, inference_memory_bytes, memory, param_counts
from matcher.errors import ConfigError, MatchError
from matcher.plan.costs import compute

QUANTITIES = ("flops", "params", "inference_memory_bytes", "train_memory_bytes", "body_flops", "body_params")
QUANTITY_LABELS = {"flops": "training FLOPs per token", "params": "total parameters",
                   "inference_memory_bytes": "inference memory (weights + SA KV + DA caches)",
                   "train_memory_bytes": "training memory per step",
                   "body_flops": "body (non-embedding) training FLOPs per token",
                   "body_params": "body (non-embedding) parameters"}
# A quantity has one name from --match to a sweep's YAML (meta.matched, predicted) and run.yaml to JSON. The
# names it had before: sweeps, run folders and command lines written with them still load, with a notice.
RENAMED = {"memory": "train_memory_bytes", "train_memory": "train_memory_bytes",
           "training_memory_bytes": "train_memory_bytes", "inference_memory": "inference_memory_bytes"}
DEFAULT_MATCHED = ("flops", "params", "inference_memory_bytes")
COMPUTE = ("flops", "body_flops")  # the quantities d_ff is paired with; n_experts takes the others
# Third free variables (--free d_ff,n_experts,<one of these>) and why each helps: d_ff and n_experts
# move FLOPs and parameters in coarse steps (a d_ff step of 32 is ~0.3% of la-2b's FLOPs), and neither
# moves the SA KV cache, which depth and n_kv_heads fix.
THIRD_VARIABLES = {
    "router_rank": "a low-rank router moves FLOPs and parameters in steps of 16 x (d_model + n_experts) "
                   "per layer, far finer than d_ff's lattice",
    "n_kv_heads": "the SA KV cache grows with n_kv_heads, which d_ff and n_experts cannot change",
    "top_k": "experts per token move FLOPs without moving parameters",
}
AUTO_ALIGN_FLOOR = 32  # the automatic lattice choice never goes below d_ff multiples of 32
NEIGHBOURHOOD_STEPS = 2  # the final scan covers d_ff +- this many aligned steps
MAX_STEPS = 50  # the descent converges in a handful of steps; this only stops a cycle
_LARGEST = 1 << 40  # no lattice coordinate goes beyond this (d_ff of 2^46 is no model)


@dataclass(frozen=True, kw_only=True)
class MatchSpec:
    """What to match and under which conventions."""

    targets: dict[str, float] = field(default_factory=dict)  # quantity -> the target's value
    matched: tuple[str, ...] = ("flops", "params")  # quantities to match, in the user's order
    align: int = 64  # d_ff is a multiple of this (tensor-core and kernel friendly)
    conventions: Conventions = field(default_factory=Conventions)
    batch: int = 1  # sequences per training step (training memory)
    seq_len: int | None = None  # tokens per sequence (FLOPs, memory); None: the config's
    max_memory_bytes: float | None = None  # hard limit on training memory per step
    tolerance: float = 0.02  # a solved residual beyond this means the target cannot be matched
    inference_batch: int = 1  # sequences decoded at once (inference memory)
    inference_context: int | None = None  # tokens of context per sequence (inference memory); None: seq_len
    third: str | None = None  # a third free variable (THIRD_VARIABLES), scanned around the 2-D search
    # choose the lattice (align, halved down to AUTO_ALIGN_FLOOR) and a third free variable when the
    # tolerance is not met otherwise; each choice is noted in the match
    auto: bool = False
    held: frozenset[str] = frozenset()  # d_ff / n_experts left out of --free: kept at the base's values

    def check(self) -> None:
        check_matched(self.matched)
        missing = [q for q in self.matched if q not in self.targets]
        if missing:
            raise MatchError(f"no target value for {', '.join(missing)}: give a --target model "
                             f"or drop {', '.join(missing)} from --match")
        if self.align < 1:
            raise MatchError(f"--align must be a positive integer, got {self.align}")


def check_matched(matched: tuple[str, ...]) -> None:
    """The one check of --match: a non-empty subset of QUANTITIES (aliases resolved before)."""
    unknown = [q for q in matched if q not in QUANTITIES]
    if unknown or not matched:
        raise MatchError(f"--match takes a comma-separated subset of {', '.join(QUANTITIES)}, "
                         f"got {','.join(matched) or 'nothing'}")


def current_names(names: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """`names` with the old names of RENAMED replaced by the current ones, and {old: current} of those
    replaced (for the one notice that says what to rename)."""
    names = list(names)
    return [RENAMED.get(n, n) for n in names], {n: RENAMED[n] for n in names if n in RENAMED}


def renamed_notice(where: str, old: dict[str, str], fix: str) -> str:
    """The one notice for old names read as current ones."""
    listing = ", ".join(f"{name} -> {current}" for name, current in old.items())
    return f"{where}: old name(s) read as the current ones ({listing}); {fix}"


def costs_of(cfg: ModelConfig, spec: MatchSpec, quantities: Iterable[str] = QUANTITIES) -> dict[str, float]:
    """The matched quantities of one config (matcher.plan.costs), as floats: residuals and the plan's JSON
    read counts, bytes and FLOPs alike."""
    return {q: float(value) for q, value in compute(cfg, spec, quantities).items()}


def residuals_of(costs: dict[str, float], targets: dict[str, float]) -> dict[str, float]:
    return {q: costs[q] / targets[q] - 1.0 for q in costs if q in targets}


def objective(residuals: dict[str, float], quantities: Iterable[str]) -> tuple[float, float]:
    """(max |residual|, sum of squared residuals) over `quantities`; smaller is better."""
    values = [residuals[q] for q in quantities]
    return max(abs(r) for r in values), sum(r * r for r in values)


@dataclass(frozen=True)
class Match:
    config: ModelConfig  # the matched variant
    costs: dict[str, float]  # every quantity (QUANTITIES)
    residuals: dict[str, float]  # cost / target - 1, for every quantity with a target
    solved: tuple[str, ...]  # the quantities the free variables were solved for
    free: tuple[str, ...]  # the free variables: d_ff and/or n_experts
    steps: int  # outer iterations of the descent
    evaluations: int  # distinct configurations whose costs were computed
    converged: bool  # the descent stopped because neither variable moved
    notes: tuple[str, ...] = ()  # what the user should know (held variables, unmatched quantities)
    align: int = 64  # the d_ff lattice the match was made on


class _Lattice:
    """Costs at lattice points (k, E) -> d_ff = k * align, n_experts = E, memoised and counted."""

    def __init__(self, base: ModelConfig, spec: MatchSpec, quantities: tuple[str, ...], align: int):
        self.base, self.spec, self.quantities, self.align = base, spec, quantities, align
        self.cache: dict[tuple[int, int], dict[str, float]] = {}

    def config(self, k: int, experts: int) -> ModelConfig:
        # A lattice point is valid whenever the base config is (d_ff > 0 and n_experts >= top_k are
        # guaranteed by the bounds), so the search skips re-validating each of the hundreds it visits;
        # the chosen point is rebuilt with full validation.
        cfg = copy.copy(self.base)
        cfg.d_ff = k * self.align
        cfg.n_experts = experts
        return cfg

    def costs(self, k: int, experts: int) -> dict[str, float]:
        key = (k, experts)
        if key not in self.cache:
            self.cache[key] = costs_of(self.config(k, experts), self.spec, self.quantities)
        return self.cache[key]

    def residuals(self, k: int, experts: int) -> dict[str, float]:
        return residuals_of(self.costs(k, experts), self.spec.targets)

    def fits_memory(self, k: int, experts: int) -> bool:
        limit = self.spec.max_memory_bytes
        return limit is None or self.costs(k, experts)["train_memory_bytes"] <= limit


def bracket_root(g: Callable[[int], float], lo: int, hi: int | None, start: int) -> tuple[int, int]:
    """Integers (a, a + 1) around the root of the increasing function g on [lo, hi] (g(a) <= 0 < g(a + 1)),
    or (lo, lo) / (hi, hi) when g has no sign change there. Gallops from `start`, then bisects, so a
    root near the start costs a few evaluations."""
    upper = _LARGEST if hi is None else hi
    x = min(max(start, lo), upper)
    if g(x) <= 0:
        step = 1
        while True:
            y = min(x + step, upper)
            if y == x:
                return x, x
            if g(y) > 0:
                a, b = x, y
                break
            x, step = y, 2 * step
    else:
        step = 1
        while True:
            y = max(x - step, lo)
            if y == x:
                return x, x
            if g(y) <= 0:
                a, b = y, x
                break
            x, step = y, 2 * step
    while b - a > 1:
        mid = (a + b) // 2
        if g(mid) <= 0:
            a = mid
        else:
            b = mid
    return a, b


def _balance(residuals: dict[str, float], quantities: tuple[str, ...]) -> float:
    """max + min of the residuals: increasing in either variable, zero where max |residual| is
    smallest along that variable (a single quantity: its residual)."""
    values = [residuals[q] for q in quantities]
    return max(values) + min(values)


class _Search:
    def __init__(self, base: ModelConfig, spec: MatchSpec, groups: dict[str, tuple[str, ...]]):
        self.spec = spec
        self.groups = groups  # variable ("k" or "E") -> the quantities it is solved for
        self.solved = tuple(q for q in spec.matched if q in groups["k"] + groups["E"])
        needed = set(self.solved) | ({"train_memory_bytes"} if spec.max_memory_bytes is not None else set())
        # A held d_ff is kept exactly, even off the alignment: its lattice has step 1 and never moves.
        align = spec.align if groups["k"] else 1
        self.lattice = _Lattice(base, spec, tuple(q for q in QUANTITIES if q in needed), align)
        self.min_experts = base.top_k if groups["E"] else base.n_experts
        self.start = (max(1, round(base.d_ff / align)), max(base.n_experts, self.min_experts))

    def max_k(self, experts: int, start: int) -> int | None:
        """The largest k that fits the memory limit at this n_experts (None: no limit)."""
        if self.spec.max_memory_bytes is None:
            return None
        limit = self.spec.max_memory_bytes
        return bracket_root(lambda k: self.lattice.costs(k, experts)["train_memory_bytes"] - limit, 1, None, start)[0]

    def max_experts(self, k: int, start: int) -> int | None:
        """The largest n_experts that fits the memory limit at this k (None: no limit)."""
        if self.spec.max_memory_bytes is None:
            return None
        limit = self.spec.max_memory_bytes
        over = lambda e: self.lattice.costs(k, e)["train_memory_bytes"] - limit
        return bracket_root(over, self.min_experts, None, start)[0]

    def solve(self, variable: str, k: int, experts: int, quantities: tuple[str, ...]) -> int:
        """The integer neighbour of the relaxed root that is best for `quantities`, the other variable
        held (within the memory limit; the current point fits it)."""
        if variable == "k":
            at = lambda x: self.lattice.residuals(x, experts)
            lo, hi, start = 1, self.max_k(experts, k), k
        else:
            at = lambda x: self.lattice.residuals(k, x)
            lo, hi, start = self.min_experts, self.max_experts(k, experts), experts
        a, b = bracket_root(lambda x: _balance(at(x), quantities), lo, hi, start)
        return min((a, b), key=lambda x: objective(at(x), quantities))

    def feasible_start(self) -> tuple[int, int]:
        """The start point (the target's d_ff and n_experts), lowered into the memory limit."""
        k, experts = self.start
        if self.lattice.fits_memory(k, experts):
            return k, experts
        if self.groups["E"]:
            experts = max(self.min_experts, self.max_experts(k, self.min_experts))
        if not self.lattice.fits_memory(k, experts):
            k = self.max_k(experts, 1)
        return k, experts

    def descend(self) -> tuple[int, int, int, bool]:
        k, experts = self.feasible_start()
        for step in range(1, MAX_STEPS + 1):
            new_k, new_experts = k, experts
            if self.groups["k"]:
                new_k = self.solve("k", k, experts, self.groups["k"])
            if self.groups["E"]:
                new_experts = self.solve("E", new_k, experts, self.groups["E"])
            if (new_k, new_experts) == (k, experts):
                return k, experts, step, True
            k, experts = new_k, new_experts
        return k, experts, MAX_STEPS, False

    def best_experts(self, k: int, experts: int) -> int | None:
        """The n_experts best for all solved quantities at this k (None: nothing fits the memory limit)."""
        if not self.groups["E"]:
            return experts if self.lattice.fits_memory(k, experts) else None
        if not self.lattice.fits_memory(k, self.min_experts):
            return None
        return self.solve("E", k, experts, self.solved)

    def polish(self, k: int, experts: int) -> tuple[int, int]:
        """The best point of the final neighbourhood: d_ff within +-NEIGHBOURHOOD_STEPS aligned steps,
        each with its best n_experts."""
        ks = range(max(1, k - NEIGHBOURHOOD_STEPS), k + NEIGHBOURHOOD_STEPS + 1) if self.groups["k"] else [k]
        candidates = []
        for j in ks:
            e = self.best_experts(j, experts)
            if e is not None:
                candidates.append((objective(self.lattice.residuals(j, e), self.solved), j, e))
        return min(candidates)[1:]


def _groups(base: ModelConfig, spec: MatchSpec,
            held: set[str]) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Which quantities each free variable is solved for, and notes on what is not free or not solved."""
    free_k = "d_ff" not in held
    free_e = base.is_moe and "n_experts" not in held
    compute_bound = tuple(q for q in spec.matched if q in COMPUTE)
    capacity = tuple(q for q in spec.matched if q not in COMPUTE)
    groups = {"k": compute_bound if free_k else (), "E": capacity if free_e else ()}
    # A variable whose partner is held takes the partner's quantities when it has none of its own.
    if free_k and not groups["k"] and not free_e:
        groups["k"] = capacity
    if free_e and not groups["E"] and not free_k:
        groups["E"] = compute_bound
    notes = []
    if not base.is_moe:
        notes.append("dense MLP (n_experts 0): only d_ff is free")
    for name, variable, is_free in (("d_ff", "k", free_k), ("n_experts", "E", free_e)):
        if name in held:
            notes.append(f"{name} held at {getattr(base, name)} (set explicitly)")
        elif is_free and not groups[variable]:
            notes.append(f"{name} kept at the target's {getattr(base, name)}: no quantity of --match "
                         "is paired with it")
    solved = groups["k"] + groups["E"]
    unsolved = [q for q in spec.matched if q not in solved]
    if unsolved:
        free = [name for name, variable in (("d_ff", "k"), ("n_experts", "E")) if groups[variable]]
        notes.append(f"{', '.join(unsolved)} not matched, only reported: {' and '.join(free) or 'nothing'} "
                     f"{'is' if len(free) == 1 else 'are'} free, matched to {', '.join(solved) or 'nothing'}")
    return groups, notes


def _amount(quantity: str, value: float) -> str:
    return {"flops": fmt.si, "params": fmt.params, "inference_memory_bytes": fmt.bytes_,
            "train_memory_bytes": fmt.bytes_, "body_flops": fmt.si, "body_params": fmt.params}[quantity](value)


def _check_reachable(search: _Search, base: ModelConfig, label: str) -> None:
    """Raise when a target lies below what the smallest configuration already costs (every cost
    grows with both variables, so nothing smaller exists)."""
    spec = search.spec
    smallest = search.lattice.config(1 if search.groups["k"] else search.start[0], search.min_experts)
    where = f"d_ff {smallest.d_ff}" + (f", n_experts {smallest.n_experts}" if base.is_moe else "")
    limit = spec.max_memory_bytes
    if limit is not None:
        need = costs_of(smallest, spec, ("train_memory_bytes",))["train_memory_bytes"]
        if need > limit:
            raise MatchError(
                f"{label}: training memory cannot be kept under the limit of {_amount('train_memory_bytes', limit)}: "
                f"its smallest config ({where}) already needs {_amount('train_memory_bytes', need)} "
                f"({need / limit - 1:+.1%}; fixed part: {_fixed_part(smallest, spec, 'train_memory_bytes')})")
    costs = costs_of(smallest, spec, search.solved)
    for q in search.solved:
        if costs[q] > spec.targets[q]:
            raise MatchError(
                f"{label}: {QUANTITY_LABELS[q]} cannot be matched: its smallest config ({where}) already "
                f"has {_amount(q, costs[q])}, {costs[q] / spec.targets[q] - 1:+.1%} over the target's "
                f"{_amount(q, spec.targets[q])} (fixed part: {_fixed_part(smallest, spec, q)})")


def _fixed_part(cfg: ModelConfig, spec: MatchSpec, quantity: str) -> str:
    """Where the smallest config's cost goes, largest shares first, for an error message."""
    seq_len = cfg.seq_len if spec.seq_len is None else spec.seq_len
    if quantity in ("params", "body_params"):
        parts = dict(param_counts(cfg).by_component)
        parts["embedding"] += parts.pop("lm_head")
        if quantity == "body_params":
            del parts["embedding"]
    elif quantity in ("flops", "body_flops"):
        parts = forward_flops_per_token(cfg, spec.conventions, seq_len)
        if quantity == "body_flops":
            del parts["lm_head"]
    elif quantity == "inference_memory_bytes":
        context = seq_len if spec.inference_context is None else spec.inference_context
        report = memory(cfg, spec.inference_batch, seq_len, spec.conventions, context=context)
        weights = inference_memory_bytes(cfg, spec.inference_batch, context, spec.conventions)
        parts = {"weights": weights - report.inference_cache_bytes, "SA KV cache": report.sa_kv_cache_bytes,
                 "DA cache": report.da_cache_bytes}
    else:
        report = memory(cfg, spec.batch, seq_len, spec.conventions)
        parts = {"weights, gradients and optimizer": report.training_bytes - report.activations_bytes,
                 "activations": report.activations_bytes}
    total = sum(parts.values())
    top = sorted(((value, name) for name, value in parts.items() if value >= total / 100), reverse=True)[:4]
    return ", ".join(f"{name} {value / total:.0%}" for value, name in top)


def match(base: ModelConfig, spec: MatchSpec, held: Iterable[str] = (), label: str | None = None) -> Match:
    """Match `base` (the variant with everything but the free variables set) to `spec.targets` on the
    spec.align lattice. `held`: free variables the user fixed ("d_ff", "n_experts"); they keep base's values.

    With spec.third, that variable is scanned (third_values) and the 2-D search run at each value; the
    best point wins. What else is tried when the tolerance is missed (spec.auto) is
    matcher.plan.alternatives'."""
    spec.check()
    label = label or base.variant
    held = set(held) | spec.held
    if spec.third is not None:
        return finish(match_third(base, spec, held, label, spec.third), spec, label)
    return finish(match_lattice(base, spec, held, label), spec, label)


def worst_residual(found: Match) -> float:
    return max((abs(found.residuals[q]) for q in found.solved), default=0.0)


def listing(found: Match) -> str:
    return ", ".join(f"{q} {found.residuals[q]:+.2%}" for q in found.solved)


def third_values(base: ModelConfig, third: str) -> list[int]:
    """The values a third free variable is scanned over, the target's first (so ties keep it):
    router_rank 0 (full rank) or a multiple of 16 up to d_model / 2; n_kv_heads a divisor of n_heads;
    top_k from 1 to twice the target's."""
    if third not in THIRD_VARIABLES:
        raise MatchError(f"--free takes d_ff, n_experts and at most one of {', '.join(THIRD_VARIABLES)}, "
                         f"got {third}")
    if third in ("router_rank", "top_k") and not base.is_moe:
        raise MatchError(f"--free {third}: a dense MLP (n_experts 0) has no router; drop {third} from --free")
    if third == "router_rank":
        values = [0, *range(16, base.d_model // 2 + 1, 16)]
    elif third == "n_kv_heads":
        values = divisors(base.n_heads)
    else:
        values = list(range(1, 2 * base.top_k + 1))
    current = getattr(base, third)
    return [current, *(v for v in values if v != current)]


def match_third(base: ModelConfig, spec: MatchSpec, held: set[str], label: str, third: str) -> Match:
    """The 2-D search at every value of `third`; the best point over all of them (ties: the earlier
    value, so the target's own value wins a tie)."""
    plain = dataclasses.replace(spec, third=None, auto=False)
    best, evaluations = None, 0
    for value in third_values(base, third):
        changes = {third: value}
        if third == "top_k" and base.is_moe:
            changes["n_experts"] = max(base.n_experts, value)
        try:
            candidate = base.replace(**changes)
            found = match_lattice(candidate, plain, held, label)
        except (MatchError, ConfigError):
            continue
        evaluations += found.evaluations
        if best is None or objective(found.residuals, found.solved) < objective(best.residuals, best.solved):
            best = found
    if best is None:
        raise MatchError(f"{label}: no value of {third} gives a configuration that reaches the targets")
    free = tuple(dict.fromkeys((*best.free, third)))
    return dataclasses.replace(best, free=free, evaluations=evaluations)


def finish(found: Match, spec: MatchSpec, label: str, tried: str | None = None) -> Match:
    """The tolerance check: a solved quantity beyond it is an error that gives each gap and, where
    nothing else was `tried` (matcher.plan.alternatives), the variable that would close it."""
    worst = [q for q in found.solved if abs(found.residuals[q]) > spec.tolerance]
    if not worst:
        return found
    config = found.config
    cause = "under the memory limit" if spec.max_memory_bytes is not None else "together"
    closers = [name for name in _closers(worst, config) if name not in found.free]
    if tried is not None:
        hint = f"; the search tried {tried}"
    elif closers:
        hint = (f"; a third free variable would close the gap: --free {','.join(found.free[:2])},{closers[0]} "
                f"({THIRD_VARIABLES[closers[0]]})")
    else:
        hint = ""
    raise MatchError(f"{label}: {' and '.join(QUANTITY_LABELS[q] for q in worst)} cannot be matched "
                     f"{cause}: the best config (d_ff {config.d_ff}, n_experts {config.n_experts}) has "
                     f"{listing(found)} (tolerance {spec.tolerance:.1%}){hint}")


def _closers(worst: list[str], config: ModelConfig) -> list[str]:
    order = ["n_kv_heads"] if "inference_memory_bytes" in worst else []
    return order + (["router_rank", "top_k"] if config.is_moe else [])


def match_lattice(base: ModelConfig, spec: MatchSpec, held: set[str], label: str) -> Match:
    """The bivariate coordinate descent on the spec.align lattice (no tolerance check)."""
    groups, notes = _groups(base, spec, held)
    search = _Search(base, spec, groups)
    _check_reachable(search, base, label)
    k, experts, steps, converged = search.descend()
    k, experts = search.polish(k, experts)
    if not converged:
        notes.append(f"the descent did not settle in {MAX_STEPS} steps; the best point near where it stopped "
                     "was taken")
    config = base.replace(d_ff=k * search.lattice.align, n_experts=experts)
    costs = costs_of(config, spec)
    residuals = residuals_of(costs, spec.targets)
    free = tuple(name for name, variable in (("d_ff", "k"), ("n_experts", "E")) if groups[variable])
    return Match(config=config, costs=costs, residuals=residuals, solved=search.solved, free=free,
                 steps=steps, evaluations=len(search.lattice.cache), converged=converged, notes=tuple(notes),
                 align=search.lattice.align)


def brute_force(base: ModelConfig, spec: MatchSpec, d_ff_values: Iterable[int],
                n_experts_values: Iterable[int]) -> tuple[int, int, int]:
    """The reference for the search: every (d_ff, n_experts) pair scored by the same objective over
    spec.matched, within the memory limit. Returns (d_ff, n_experts, evaluations)."""
    quantities = tuple(q for q in QUANTITIES if q in spec.matched
                       or (q == "train_memory_bytes" and spec.max_memory_bytes is not None))
    lattice = _Lattice(base, spec, quantities, align=1)
    experts_values = list(n_experts_values)
    best = None
    for d_ff in d_ff_values:
        for experts in experts_values:
            if lattice.fits_memory(d_ff, experts):
                score = (objective(lattice.residuals(d_ff, experts), spec.matched), d_ff, experts)
                best = score if best is None else min(best, score)
    if best is None:
        raise MatchError("no scanned point fits the memory limit")
    return best[1], best[2], len(lattice.cache)
