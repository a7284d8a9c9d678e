"""`matcher sweep validate` and `matcher sweep show`."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from matcher import fmt
from matcher.console import escape, out
from matcher.plan.sweep import load_sweep


def validate_command(path: Path) -> None:
    sweep = load_sweep(path)  # every problem, with its place in the file, in one error
    out().print("[green]ok[/] " + escape(f"{path}: {len(sweep.runs)} runs, target {sweep.meta.target}, "
                                          f"matched on {', '.join(sweep.meta.matched)}"))


def show_command(path: Path) -> None:
    sweep = load_sweep(path)
    meta = sweep.meta
    console = out()
    console.print(f"[bold]{escape(sweep.name)}[/]: " + escape(f"target {meta.target}, variants "
                                                              f"{', '.join(meta.variants)}, matched on "
                                                              f"{', '.join(meta.matched)}"))
    console.print("[dim]" + escape(f"written {meta.created} by matcher {meta.tool_version}: {meta.command}") + "[/]")
    table = Table()
    for col in ("run", "role", "variant", "depth", "d_model", "d_ff", "experts", "params", "train FLOPs/token",
                "train memory", "tokens", "batch x seq", "seed"):
        table.add_column(col, justify="left" if col in ("run", "role", "variant") else "right")
    for run in sweep.runs:
        m, t, p = run.model, run.train, run.predicted
        experts = f"{m.n_experts} (top-{m.top_k})" if m.n_experts else "dense"
        table.add_row(escape(run.name), escape(run.role), m.variant, str(m.depth), str(m.d_model), str(m.d_ff), experts,
                      fmt.params(p.get("total_params")), fmt.si(p.get("train_flops_per_token")),
                      fmt.bytes_(p.get("train_memory_bytes")), fmt.si(t.total_tokens),
                      f"{t.batch_size} x {t.seq_len}", str(t.seed))
    console.print(table)
