"""`matcher plan`: match the variants to the target, check the chosen configs on the real modules,
print the comparison and write the sweep. Its options are in matcher/commands/plan_options.py."""

# Function-local imports: the measured counter (torch), only with --measure.

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.table import Table

from matcher import fmt
from matcher.atomic import write_text_atomic
from matcher.config import dump_yaml
from matcher.console import Activity, escape, notice, out
from matcher.cost.analytic import forward_flops_per_token, param_counts
from matcher.cost.gpu_hours import device
from matcher.data.math_task import MATH_DATA
from matcher.data.overlap import sweep_overlap_warnings
from matcher.errors import MatcherError
from matcher.plan.ladder import Ladder, manifest, plan_ladder
from matcher.plan.launch import LaunchCost, launch_cost
from matcher.plan.planner import Plan, build_sweep, make_plan
from matcher.plan.request import PlanRequest
from matcher.plan.search import NEIGHBOURHOOD_STEPS
from matcher.plan.sweep import check_before_writing, write_sweep

MEASURE_RTOL = 1e-3  # analytic and measured counts of the chosen configs must agree to 0.1%


def plan_command(request: PlanRequest, out_path: Path | None, force: bool, dry_run: bool, as_json: bool,
                 measure: bool) -> dict[str, Any]:
    if request.ladder is not None:
        return ladder_command(request, out_path, force, dry_run, as_json, measure)
    with Activity("planning") as status:
        plan = make_plan(request, progress=status.update)
        checks = None
        if measure:
            status.update("measured check: building the chosen configs on the meta device")
            checks = measured_check(plan)
    launch = launch_cost(plan, request.gpu, request.mfu)
    for line in plan.notices + repeat_notices(launch):
        notice(line)
    sweep = build_sweep(plan)
    for line in sweep_overlap_warnings(sweep):
        notice(line)
    path = out_path or plan.default_path()
    check_before_writing(sweep, path)  # a dry run fails where the real one would
    if not dry_run:
        write_sweep(sweep, path, force=force)
    result = plan_result(plan, launch, checks, path, written=not dry_run)
    if as_json:
        out().print_json(json.dumps(result))
    else:
        print_plan(plan, launch, checks, path, written=not dry_run)
    return result


def measured_check(plan: Plan) -> list[dict[str, Any]]:
    """Parameters and forward FLOPs per token of every chosen (matched) config, counted on the real
    module (meta device) beside the analytic values; a difference above MEASURE_RTOL is an error,
    because then the match was made on numbers the models do not have. The modules are counted at depths
    1-3 and extrapolated exactly (measured.measured_costs_from_three_depths). A given target model is not
    re-counted here (`matcher cost <target>` does)."""
    from matcher.cost import measured as measure

    conv, seq_len = plan.spec.conventions, plan.train.seq_len
    rows = []
    for run in (run for run in plan.runs if run.match is not None):
        cfg = run.config
        flops = sum(forward_flops_per_token(cfg, conv, seq_len).values())
        counted_params, counted_flops = measure.measured_costs_from_three_depths(
            cfg, seq_len=seq_len, batch=1, causal_half=conv.causal_half)
        measured_flops, measured_params = counted_flops["total"], counted_params["total"]
        params = param_counts(cfg).total
        rows.append({"run": run.label, "params": params, "measured_params": measured_params,
                     "params_diff": fmt.rel_diff(measured_params, params),
                     "forward_flops_per_token": flops, "measured_forward_flops_per_token": measured_flops,
                     "flops_diff": fmt.rel_diff(measured_flops, flops)})
    bad = [f"{r['run']} {name} {fmt.percent(r[key], 3)}" for r in rows
           for name, key in (("parameters", "params_diff"), ("forward FLOPs", "flops_diff"))
           if abs(r[key]) > MEASURE_RTOL]
    if bad:
        raise MatcherError(f"measured check failed: {', '.join(bad)} between matcher.cost.analytic and the real "
                           f"modules (limit {MEASURE_RTOL:.1%}); the sweep was not written. "
                           "`matcher cost <config>` shows the components")
    return rows


def plan_result(plan: Plan, launch: LaunchCost, checks: list[dict[str, Any]] | None, path: Path,
                written: bool) -> dict[str, Any]:
    reference = plan.target.predicted
    runs = []
    for run in plan.runs:
        p = run.predicted
        row = {"label": run.label, "role": run.role, "model": run.config.to_dict(), "predicted": p,
               "memory_ratio": p["train_memory_bytes"] / reference["train_memory_bytes"],
               "inference_cache_ratio": _ratio(p["inference_cache_bytes"],
                                               reference["inference_cache_bytes"])}
        if run.match is not None:
            m = run.match
            row.update(costs=m.costs, residuals=m.residuals, solved=list(m.solved), free=list(m.free),
                       steps=m.steps, evaluations=m.evaluations, converged=m.converged, notes=list(m.notes),
                       align=m.align)
        runs.append(row)
    return {"launch": launch.to_dict(), "target": plan.target_label, "variants": plan.variants,
            "matched": list(plan.matched),
            "targets": plan.spec.targets, "align": plan.spec.align, "tolerance": plan.spec.tolerance,
            "memory_matched": memory_matched(plan), "train": plan.train.to_dict(),
            "seeds": plan.seeds, "runs": runs, "measured": checks, "sweep": path.as_posix(),
            "written": written, "command": plan.request.command_line()}


def _ratio(value: float, reference: float) -> float | None:
    return value / reference if reference else None


def memory_matched(plan: Plan) -> str:
    """Which memory the plan matched, in words, with the batch and context it was matched at."""
    train = plan.train
    named = []
    if "inference_memory_bytes" in plan.matched:
        context = plan.spec.inference_context or train.seq_len
        named.append(f"inference memory (weights {plan.spec.conventions.inference_weight_dtype} + SA KV + DA "
                     f"caches, {plan.spec.inference_batch} x {context} tokens)")
    if "train_memory_bytes" in plan.matched:
        named.append(f"training memory (one step of {plan.spec.batch} x {train.seq_len} tokens)")
    return "; ".join(named) or "none (memory is reported, not matched)"


def print_plan(plan: Plan, launch: LaunchCost, checks: list[dict[str, Any]] | None, path: Path,
               written: bool) -> None:
    console = out()
    console.print(f"[bold]plan[/]: {escape(', '.join(plan.variants))} matched to [bold]{escape(plan.target_label)}[/] "
                  f"on {', '.join(plan.matched)} within {plan.spec.tolerance:.1%}")
    console.print(f"memory matched: {memory_matched(plan)}", markup=False)
    print_runs(plan)
    print_body_and_totals(plan)
    train = plan.train
    held = (f"micro-batches of {train.micro_batch_size} x {train.seq_len} tokens on one process, batch "
            f"{train.batch_size}" if train.micro_batch_size else f"batch {train.batch_size} x {train.seq_len} tokens")
    console.print(f"Δ = cost / target - 1; memory and caches as multiples of the target's (training: {held}; "
                  f"inference: one sequence of {train.seq_len})", markup=False)
    console.print("[dim]search: coordinate descent (d_ff on FLOPs, n_experts on params and memory), then the "
                  f"best point within d_ff +-{NEIGHBOURHOOD_STEPS} aligned steps; score: max |Δ| over the "
                  "matched quantities, ties by the sum of Δ²; d_ff (/N): d_ff a multiple of N; the lattice and "
                  "any third free variable chosen are in the notices above[/]")
    console.print(f"training (every run): {fmt.si(train.total_tokens)} tokens, {train.batch_size} x "
                  f"{train.seq_len} tokens per step ({train.total_steps} steps), peak lr {train.lr:g}, "
                  f"evals at {', '.join(fmt.si(t) for t in train.eval_tokens)} tokens, data {train.data}, "
                  f"tokenizer {train.tokenizer['path'] if isinstance(train.tokenizer, dict) else train.tokenizer} "
                  f"(vocab_size {plan.target.config.vocab_size:,}), "
                  f"seeds {', '.join(map(str, plan.seeds))}", markup=False)  # data and tokenizer: user paths
    print_launch_cost(launch)
    if checks:
        print_measured_check(checks)
    console.print("[dim]conventions:[/]")
    for line in plan.spec.conventions.describe():
        console.print(f"[dim]  - {escape(line)}[/]")
    runs = plan.n_runs
    if written:
        console.print(f"wrote [bold]{escape(path.as_posix())}[/] ({runs} runs); "
                      f"check it with `matcher sweep show {escape(path.as_posix())}`")
    else:
        console.print(f"dry run: would write {path.as_posix()} ({runs} runs)", markup=False)


def print_runs(plan: Plan) -> None:
    """Each run's shape and its costs beside the target's."""
    reference = plan.target.predicted
    table = Table()
    for col in ("run", "role", "depth", "d_ff", "experts", "params", "Δ params", "train FLOPs/token",
                "Δ FLOPs", "Δ inference mem", "train memory", "KV+DA cache", "steps", "evals"):
        table.add_column(col, justify="left" if col in ("run", "role") else "right")
    for run in plan.runs:
        m, p, cfg = run.match, run.predicted, run.config
        residuals = m.residuals if m is not None else {}
        experts = f"{cfg.n_experts} (top-{cfg.top_k})" if cfg.is_moe else "dense"
        d_ff = f"{cfg.d_ff} (/{m.align})" if m else str(cfg.d_ff)
        table.add_row(
            escape(run.label), escape(run.role), str(cfg.depth), d_ff, experts,
            fmt.params(p["total_params"]), fmt.percent(residuals.get("params")),
            fmt.si(p["train_flops_per_token"]), fmt.percent(residuals.get("flops")),
            fmt.percent(residuals.get("inference_memory_bytes")),
            fmt.ratio(p["train_memory_bytes"] / reference["train_memory_bytes"]),
            fmt.ratio(_ratio(p["inference_cache_bytes"], reference["inference_cache_bytes"])),
            str(m.steps) if m else "-", str(m.evaluations) if m else "-")
    out().print(table)


def print_measured_check(checks: list[dict[str, Any]]) -> None:
    measured = Table(title="Measured check (real modules on the meta device)", title_justify="left")
    for col in ("run", "params", "measured", "diff", "forward FLOPs/token", "measured", "diff"):
        measured.add_column(col, justify="left" if col == "run" else "right")
    for r in checks:
        measured.add_row(escape(r["run"]), fmt.count(r["params"]), fmt.count(r["measured_params"]),
                         fmt.percent(r["params_diff"], 3), fmt.si(r["forward_flops_per_token"], digits=6),
                         fmt.si(r["measured_forward_flops_per_token"], digits=6),
                         fmt.percent(r["flops_diff"], 3))
    out().print(measured)


def print_body_and_totals(plan: Plan) -> None:
    """Totals beside the body (non-embedding) costs, each with its Δ to the target: with a large
    vocabulary the embeddings dominate the totals, and a small Δ there can hide a large one in the body."""
    table = Table(title="Body (non-embedding: no token embedding or LM head) and totals", title_justify="left")
    for col in ("run", "params", "Δ params", "body params", "Δ body params", "FLOPs/token", "Δ FLOPs",
                "body FLOPs/token", "Δ body FLOPs"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for run in plan.runs:
        p, residuals = run.predicted, run.match.residuals if run.match is not None else {}
        table.add_row(escape(run.label), fmt.params(p["total_params"]), fmt.percent(residuals.get("params")),
                      fmt.params(p["body_params"]), fmt.percent(residuals.get("body_params")),
                      fmt.si(p["train_flops_per_token"]), fmt.percent(residuals.get("flops")),
                      fmt.si(p["body_train_flops_per_token"]), fmt.percent(residuals.get("body_flops")))
    out().print(table)


def print_launch_cost(launch: LaunchCost) -> None:
    """GPU-hours per run group and for the sweep, and the data each run reads against what is on disk."""
    console = out()
    table = Table(title=f"Compute before launch: {launch.gpu} at MFU {launch.mfu:g} (--gpu, --mfu)",
                  title_justify="left")
    for col in ("group", "runs", "tokens per run", "train FLOPs per run", "GPU-hours per run", "GPU-hours"):
        table.add_column(col, justify="left" if col == "group" else "right")
    for group in launch.groups:
        table.add_row(escape(group.group), str(group.runs), fmt.si(group.tokens_per_run),
                      f"{group.train_flops_per_run:.3g}", f"{group.gpu_hours_per_run:.3g}",
                      f"{group.gpu_hours_per_run * group.runs:.3g}")
    table.add_row("[bold]sweep", str(sum(g.runs for g in launch.groups)), "", "", "",
                  f"[bold]{launch.total_gpu_hours:.3g}")
    console.print(table)
    console.print(f"GPU-hours = model FLOPs (3 x forward) / ({launch.peak_flops / 1e12:,.0f} TFLOP/s peak dense bf16 "
                  f"x MFU {launch.mfu:g}); peak: {device(launch.gpu).source}", markup=False)
    for supply in launch.data:
        if supply.tokens_on_disk is None:
            held = ("generated on the fly: never repeats" if supply.source in MATH_DATA
                    else "no token count readable on disk (matcher sweep validate checks the data)")
            console.print(f"data {supply.source}: each run reads {fmt.si(supply.tokens_needed)} tokens; {held}",
                          markup=False)
            continue
        line = (f"data {supply.source}: each run reads {fmt.si(supply.tokens_needed)} tokens of the "
                f"{fmt.si(supply.tokens_on_disk)} on disk ({supply.epochs:.2g} epochs)")
        console.print(line, markup=False)


def repeat_notices(launch: LaunchCost) -> list[str]:
    """A notice for each data source that a run would read more than once."""
    return [f"{supply.source} holds {fmt.si(supply.tokens_on_disk)} training tokens and each run reads "
            f"{fmt.si(supply.tokens_needed)}: the data repeats {supply.epochs:.2g} times; encode more data "
            "or plan fewer --tokens" for supply in launch.data if supply.epochs is not None and supply.epochs > 1]


def ladder_command(request: PlanRequest, out_path: Path | None, force: bool, dry_run: bool, as_json: bool,
                   measure: bool) -> dict[str, Any]:
    """`matcher plan --ladder`: one sweep per rung beside a ladder manifest (--out names the manifest)."""
    with Activity("planning the ladder") as status:
        ladder = plan_ladder(request, progress=status.update)
        checks = [measured_check(plan) for plan in ladder.plans] if measure else [None] * len(ladder.plans)
    path = out_path or ladder.default_path()
    sweep_paths = [ladder.sweep_path(plan, path.parent) for plan in ladder.plans]
    existing = [p for p in [path, *sweep_paths] if p.exists()]
    if existing and not force and not dry_run:
        raise MatcherError(f"{', '.join(p.as_posix() for p in existing)} exist; pass --force to overwrite them "
                           "or --out to write the ladder elsewhere")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    launches = [launch_cost(plan, request.gpu, request.mfu) for plan in ladder.plans]
    for plan, launch in zip(ladder.plans, launches):
        for line in plan.notices + repeat_notices(launch):
            notice(f"{plan.target_label}: {line}")
    data = manifest(ladder, sweep_paths, created)
    sweeps = [build_sweep(plan, created) for plan in ladder.plans]
    for sweep, sweep_path in zip(sweeps, sweep_paths):  # every rung, before any is written
        check_before_writing(sweep, sweep_path)
    if not dry_run:
        path.parent.mkdir(parents=True, exist_ok=True)
        for sweep, sweep_path in zip(sweeps, sweep_paths):
            write_sweep(sweep, sweep_path, force=True)
        write_text_atomic(path, "# matcher ladder: one sweep per rung under one rule set.\n" + dump_yaml(data))
    result = {**data, "manifest": path.as_posix(), "written": not dry_run,
              "plans": [plan_result(plan, launch, check, sweep_path, not dry_run)
                        for plan, launch, check, sweep_path in zip(ladder.plans, launches, checks, sweep_paths)]}
    if as_json:
        out().print_json(json.dumps(result))
    else:
        print_ladder(ladder, data, sweep_paths, path, dry_run)
    return result


def print_ladder(ladder: Ladder, data: dict[str, Any], sweep_paths: list[Path], path: Path, dry_run: bool) -> None:
    console = out()
    rules = data["rules"]
    console.print("[bold]ladder[/]: " + escape(
                  f"{', '.join(ladder.plans[0].variants)} matched to {', '.join(ladder.rungs)} on "
                  f"{', '.join(data['matched'])}; one vocabulary ({rules['vocab_size']}), "
                  f"{rules['tokens_per_param']} tokens per target {rules['tokens_per_param_counts'].rstrip('s')}, "
                  "batch and lr from the compute fits"))
    table = Table()
    for col in ("rung", "params", "train FLOPs", "tokens", "batch", "lr", "worst |Δ|", "sweep"):
        table.add_column(col, justify="left" if col in ("rung", "sweep") else "right")
    for rung, plan, sweep_path in zip(data["rungs"], ladder.plans, sweep_paths):
        worst = max(abs(run.match.residuals[q]) for run in plan.runs[1:] for q in run.match.solved)
        table.add_row(escape(rung["target"]), fmt.params(rung["total_params"]), f"{rung['train_flops']:.3g}",
                      fmt.si(rung["total_tokens"]), str(rung["batch_size"]), f"{rung['lr']:g}",
                      fmt.percent(worst), escape(sweep_path.as_posix()))
    console.print(table)
    verb = "wrote" if not dry_run else "dry run: would write"
    console.print(f"{verb} [bold]{escape(path.as_posix())}[/] and {len(sweep_paths)} sweeps beside it")
