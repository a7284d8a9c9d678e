"""What the planner tries when a variant's search (matcher.plan.search) misses its tolerance; the one place
that decides it:
- without --align and --free (MatchSpec.auto): the lattice halved down to AUTO_ALIGN_FLOOR, then each
  third free variable worth trying; the match's notes say what was chosen, a failure what was tried;
- with a lattice the user fixed: a match looser than CLOSE_RESIDUAL gets the finer lattice, tried;
- when the search fails: the single overrides under which it succeeds (each one tried, for every variant
  of the plan).
Every suggestion printed is a search that was run and met the tolerance."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from matcher.config import ModelConfig
from matcher.errors import ConfigError, MatchError
from matcher.plan.request import Overrides, variant_config
from matcher.plan.search import (
    AUTO_ALIGN_FLOOR,
    THIRD_VARIABLES,
    Match,
    MatchSpec,
    finish,
    listing,
    match_lattice,
    match_third,
    worst_residual,
)
from matcher.plan.search import match as search_match

CLOSE_RESIDUAL = 0.005  # a match looser than this on a 64-aligned lattice gets a hint to refine it
SUGGESTIONS = 3  # at most this many overrides are suggested, one of each kind


def match_variant(shape: ModelConfig, variant: str, overrides: Overrides, spec: MatchSpec, label: str,
                  also: tuple[str, ...] = ()) -> tuple[Match, list[str]]:
    """The variant's match and the notices of what else was tried (a finer lattice that matches closer)."""
    found = _match_or_explain(shape, variant, overrides, spec, label, also=also)
    hint = _finer_align_hint(shape, variant, overrides, spec, found)
    return found, [hint] if hint else []


def match(base: ModelConfig, spec: MatchSpec, held: Iterable[str] = (), label: str | None = None) -> Match:
    """The search (matcher.plan.search.match); with spec.auto, what else it tries when the tolerance is
    missed (_match_auto), and a failure that says what was tried."""
    if not spec.auto or spec.third is not None:
        return search_match(base, spec, held, label)
    spec.check()
    label = label or base.variant
    found, tried = _match_auto(base, spec, set(held) | spec.held, label)
    return finish(found, spec, label, tried=tried)


def _match_auto(base: ModelConfig, spec: MatchSpec, held: set[str], label: str) -> tuple[Match, str]:
    """The lattice spec.align, halved while the tolerance is missed (down to AUTO_ALIGN_FLOOR), then each
    third free variable (_third_candidates) on the coarsest of those lattices that meets the tolerance
    with it. The first point that meets the tolerance (with a note of why it was chosen), else the best
    point seen; and what was tried, in words."""
    found = match_lattice(base, spec, held, label)
    evaluations = found.evaluations
    if worst_residual(found) <= spec.tolerance or "d_ff" not in found.free and "n_experts" not in found.free:
        return found, f"d_ff multiples of {spec.align}"
    tried = [f"d_ff a multiple of {found.align}: {listing(found)}"]
    best, aligns, align = found, [spec.align], spec.align
    while "d_ff" in found.free and align // 2 >= AUTO_ALIGN_FLOOR and align % 2 == 0:
        align //= 2
        aligns.append(align)
        finer = match_lattice(base, dataclasses.replace(spec, align=align), held, label)
        evaluations += finer.evaluations
        if worst_residual(finer) < worst_residual(best):
            best = finer
        if worst_residual(finer) <= spec.tolerance:
            note = (f"lattice: d_ff a multiple of {align}, because with {spec.align} the best point was off by "
                    f"{worst_residual(found):.2%} (tolerance {spec.tolerance:.1%})")
            return dataclasses.replace(finer, evaluations=evaluations, notes=finer.notes + (note,)), ""
        tried.append(f"a multiple of {align}: {listing(finer)}")
    thirds = _third_candidates(base, best, held, spec.tolerance)
    for third in thirds:
        for align in aligns:  # the coarsest lattice that meets the tolerance with this variable
            try:
                scanned = match_third(base, dataclasses.replace(spec, align=align), held, label, third)
            except MatchError:
                continue
            evaluations += scanned.evaluations
            if worst_residual(scanned) <= spec.tolerance:
                note = (f"third free variable {third} = {getattr(scanned.config, third)} (the target's "
                        f"{getattr(base, third)}), d_ff a multiple of {align}: with d_ff and n_experts alone the "
                        f"best was {'; '.join(tried)}; {THIRD_VARIABLES[third]}")
                return dataclasses.replace(scanned, evaluations=evaluations, notes=scanned.notes + (note,)), ""
            if worst_residual(scanned) < worst_residual(best):
                best = scanned
    multiples = ", ".join(map(str, aligns))
    variables = f"the third free variables {', '.join(thirds)}" if thirds else "no third free variable (none applies)"
    return dataclasses.replace(best, evaluations=evaluations), f"d_ff multiples of {multiples} and {variables}"


def _third_candidates(base: ModelConfig, found: Match, held: set[str], tolerance: float) -> list[str]:
    """Third free variables worth trying, most useful first: n_kv_heads when inference memory (which
    holds the SA KV cache) misses the tolerance, then the low-rank router (fine steps), then top_k."""
    off = {q for q in found.solved if abs(found.residuals[q]) > tolerance}
    order = []
    if "inference_memory_bytes" in off:
        order.append("n_kv_heads")
    if base.is_moe:
        order += ["router_rank", "top_k"]
    return [name for name in order if name not in held]


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


def _candidates(base: ModelConfig, overrides: Overrides, spec: MatchSpec,
                held: set[str], label: str) -> list[tuple[str, Overrides, MatchSpec]]:
    """Single changes (memory limit, top_k, depth, d_model, a low-rank router, align), the smallest change
    of each kind first: (the flag that gives it, the overrides with it, the search settings with it)."""
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
    return candidates


def _suggestions(shape: ModelConfig, base: ModelConfig, held: set[str], variant: str, overrides: Overrides,
                 spec: MatchSpec, label: str, limit: int = SUGGESTIONS, also: tuple[str, ...] = ()) -> list[str]:
    """The candidates (_candidates) under which the match succeeds for `variant` and each variant in
    `also`, at most one of each kind."""
    found: list[str] = []
    for flag, changed, changed_spec in _candidates(base, overrides, spec, held, label):
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
