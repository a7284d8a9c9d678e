"""`matcher cost` and `matcher presets`: the analytic cost model beside the measured one."""

# Function-local imports: the measured counter (torch), only with --measure.

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from matcher import fmt
from matcher.config import ModelConfig
from matcher.console import escape, notice, out
from matcher.cost.analytic import FLOP_COMPONENTS, PARAM_COMPONENTS, Conventions, cost_report
from matcher.plan.presets import PRESETS, load_target

BODY = "body (no LM head)"  # the row of body (non-embedding) forward FLOPs
MEMORY_ROWS = (("weights_bytes", "weights"), ("gradients_bytes", "gradients"),
               ("optimizer_bytes", "optimizer"), ("activations_bytes", "activations"))


def describe_config(cfg: ModelConfig) -> str:
    moe = (f"{cfg.n_experts} experts x d_ff {cfg.d_ff}, top-{cfg.top_k}"
           + (f" + {cfg.n_shared_experts} shared" if cfg.n_shared_experts else "")
           if cfg.is_moe else f"dense MLP d_ff {cfg.d_ff}")
    da = f", DA {cfg.da_heads}x{cfg.da_head_dim}" if cfg.has_depth_attention else ""
    return (f"{cfg.variant}: depth {cfg.depth} ({cfg.n_unique_layers} unique), d_model {cfg.d_model}, "
            f"{cfg.n_heads}/{cfg.n_kv_heads} heads x {cfg.head_dim}{da}, {moe}, {cfg.mlp_act}, "
            f"vocab {cfg.vocab_size}{', tied' if cfg.tie_embeddings else ''}, {cfg.mixture}")


def measure_all(cfg: ModelConfig, conv: Conventions, batch: int, seq_len: int, counters: list[str]) -> dict[str, Any]:
    """The measured counterparts of the analytic report (imports torch)."""
    from matcher.cost import measured as measure

    measured: dict[str, Any] = {"params": measure.measured_params(cfg), "flops": {}}
    for counter in counters:
        measured["flops"][counter] = measure.measured_forward_flops(
            cfg, seq_len=seq_len, batch=1, causal_half=conv.causal_half, counter=counter)
    measured["memory"] = measure.measured_training_memory(
        cfg, batch=batch, seq_len=seq_len, recompute=conv.recompute, activation_dtype=conv.activation_dtype)
    return measured


def cost_command(target: str, batch: int, seq_len: int | None, conv: Conventions, measured: bool,
                 counters: list[str], as_json: bool) -> dict[str, Any]:
    cfg, resolved = load_target(target)
    if resolved:
        notice(resolved.notice)
    report = cost_report(cfg, conv, batch=batch, seq_len=seq_len)
    result: dict[str, Any] = {"target": resolved.name if resolved else target, "analytic": report.to_dict()}
    if measured:
        result["measured"] = measure_all(cfg, conv, batch, report.seq_len, counters)
    if as_json:
        out().print_json(json.dumps(result))
    else:
        print_cost_tables(result, report)
    return result


def _row(label: str, analytic: float, measured: float | None, show) -> list[str]:
    diff = fmt.rel_diff(measured, analytic)
    style = "" if diff is None or abs(diff) <= 1e-3 else "[red]"
    return [label, show(analytic), show(measured) if measured is not None else "-",
            f"{style}{fmt.percent(diff, 3)}"]


def print_cost_tables(result: dict[str, Any], report) -> None:
    console = out()
    measured = result.get("measured")
    console.print(f"[bold]{escape(result['target'])}[/]  {escape(describe_config(report.config))}")
    console.print(f"batch {report.batch} x seq_len {report.seq_len}")

    params = Table(title="Parameters (unique)", title_justify="left")
    for col in ("component", "analytic", "measured (meta module)", "diff"):
        params.add_column(col, justify="left" if col == "component" else "right")
    mp = measured["params"] if measured else {}
    for name in PARAM_COMPONENTS:
        value = report.params.by_component[name]
        if value or mp.get(name):
            params.add_row(*_row(name, value, mp.get(name), fmt.count))
    params.add_row(*_row("[bold]total", report.params.total, mp.get("total"), fmt.count))
    measured_body = mp["total"] - mp.get("embedding", 0) - mp.get("lm_head", 0) if mp else None
    params.add_row(*_row("body (non-embedding)", report.params.non_embedding, measured_body, fmt.count))
    params.add_row("embedding share of the total", f"{report.params.embedding / report.params.total:.1%}",
                   "", "")
    params.add_row("active per token", fmt.count(report.params.active), "", "")
    params.add_row("applied (all depths)", fmt.count(report.params.applied), "", "")
    console.print(params)

    flops = Table(title="Forward FLOPs per token", title_justify="left")
    flops.add_column("component")
    flops.add_column("analytic", justify="right")
    counters = list(measured["flops"]) if measured else []
    for counter in counters:
        label = "FlopCounterMode (meta)" if counter == "torch" else "fvcore (x2 MACs)"
        flops.add_column(label, justify="right")
        flops.add_column("diff", justify="right")
    fwd = report.forward_flops_per_token
    for name in (*FLOP_COMPONENTS, "total", BODY):
        value = {"total": sum(fwd.values()), BODY: report.body_train_flops_per_token / 3}.get(name, fwd.get(name))
        if not value and name not in ("total", BODY):
            continue
        row = [f"[bold]{name}" if name == "total" else name, fmt.si(value)]
        for counter in counters:
            counted = measured["flops"][counter]
            got = counted.get("total", 0) - counted.get("lm_head", 0) if name == BODY else counted.get(name)
            row += _row("", value, got, fmt.si)[2:]
        flops.add_row(*row)
    console.print(flops)
    console.print(f"training FLOPs per token (3 x forward): [bold]{fmt.si(report.train_flops_per_token)}[/]"
                  f"   body: {fmt.si(report.body_train_flops_per_token)}"
                  f"   per sequence: {fmt.si(report.train_flops_per_sequence)}"
                  f"   hardware (recompute {report.conventions.recompute}): "
                  f"{fmt.si(report.hardware_flops_per_token)}")

    mem = Table(title=f"Training memory (batch {report.batch} x {report.seq_len} tokens)", title_justify="left")
    for col in ("quantity", "analytic", "measured", "diff"):
        mem.add_column(col, justify="left" if col == "quantity" else "right")
    mm = measured["memory"] if measured else {}
    m = report.memory
    for field, key in MEMORY_ROWS:
        mem.add_row(*_row(key, getattr(m, field), mm.get(key), fmt.bytes_))
    mem.add_row(*_row("[bold]training total", m.training_bytes,
                      sum(mm[k] for _, k in MEMORY_ROWS) if mm else None, fmt.bytes_))
    mem.add_row("inference SA KV cache", fmt.bytes_(m.sa_kv_cache_bytes), "", "")
    mem.add_row("inference DA cache (token in flight)", fmt.bytes_(m.da_cache_bytes), "", "")
    console.print(mem)
    console.print("[dim]conventions:[/]")
    for line in report.conventions.describe():
        console.print(f"[dim]  - {escape(line)}[/]")


def presets_command(as_json: bool) -> list[dict[str, Any]]:
    rows = []
    for name, make in PRESETS.items():
        report = cost_report(make(), Conventions(), batch=1)
        cfg = report.config
        rows.append({"name": name, "variant": cfg.variant, "depth": cfg.depth, "d_model": cfg.d_model,
                     "d_ff": cfg.d_ff, "n_experts": cfg.n_experts, "top_k": cfg.top_k,
                     "total_params": report.params.total, "active_params": report.params.active,
                     "train_flops_per_token": report.train_flops_per_token,
                     "train_memory_bytes_per_sequence": report.memory.training_bytes,
                     "inference_cache_bytes_per_sequence": report.memory.inference_cache_bytes})
    if as_json:
        out().print_json(json.dumps(rows))
        return rows
    table = Table(title="Presets (training memory and caches for one sequence of seq_len tokens)")
    for col in ("preset", "variant", "depth", "d_model", "d_ff", "experts", "params", "active",
                "train FLOPs/token", "train memory", "KV+DA cache"):
        table.add_column(col, justify="left" if col in ("preset", "variant") else "right")
    for r in rows:
        experts = f"{r['n_experts']} (top-{r['top_k']})" if r["n_experts"] else "dense"
        table.add_row(r["name"], r["variant"], str(r["depth"]), str(r["d_model"]), str(r["d_ff"]), experts,
                      fmt.params(r["total_params"]), fmt.params(r["active_params"]),
                      fmt.si(r["train_flops_per_token"]), fmt.bytes_(r["train_memory_bytes_per_sequence"]),
                      fmt.bytes_(r["inference_cache_bytes_per_sequence"]))
    out().print(table)
    return rows
