"""`matcher eval RUN_DIR`: score a run's saved model checkpoints (one per eval point) on benchmark tasks,
at the trained depth or (dr, dr_da) at other test-time depths; print a table or JSON rows and store
them in the run folder's evals.jsonl, where `matcher compare` reads them."""

from __future__ import annotations

import json
from pathlib import Path

from matcher.errors import ConfigError, RunError


def parse_depths(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        depths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--depth {text}: give comma-separated integers, e.g. --depth 8,16,32") from None
    if not depths or any(d < 1 for d in depths):
        raise ConfigError(f"--depth {text}: depths must be positive integers, e.g. --depth 8,16,32")
    return list(dict.fromkeys(depths))


def _run_dirs(path: Path) -> list[Path]:
    if (path / "run.yaml").is_file():
        return [path]
    if path.is_dir():
        runs = sorted(d for d in path.iterdir() if (d / "run.yaml").is_file())
        if runs:
            return runs
    raise RunError(f"{path}: not a run folder (no run.yaml) nor a sweep's results folder; give "
                   "results/<sweep>/<run> or results/<sweep>")


def public_row(row: dict) -> dict:
    """A row as printed: the per-item outcomes stay in evals.jsonl."""
    return {key: value for key, value in row.items() if key not in ("outcomes", "event")}


def eval_point_line(row: dict) -> str:
    scores = ", ".join(f"{metric} {value:.4f}" for metric, value in row["scores"].items() if value is not None)
    return (f"eval: {row['run']} step {row['step']} ({row['tokens']:,} tokens), depth {row['depth']}, "
            f"{row['task']} (n {row['n']}): {scores or 'no scores'}")


def scored_count(row: dict) -> str:
    """The n column: the items scored, and how many of them were cut to the context."""
    text = str(row["n"])
    if row.get("truncated"):
        text += f" ({row['truncated']} truncated)"
    return text


def eval_command(run_dir: str | Path, tasks: list[str], *, step: int | None = None, all_steps: bool = False,
                 depth: str | None = None, as_json: bool = False, device: str | None = None,
                 truncate: str | None = None, console=None) -> list:
    from rich.table import Table

    from matcher import console as consoles
    from matcher.console import escape
    from matcher.run.evaluate import evaluate_run

    if step is not None and all_steps:
        raise ConfigError("give --step N or --all-steps, not both")
    depths = parse_depths(depth)
    console = console or consoles.out()
    rows = []
    paths = _run_dirs(Path(run_dir))
    with consoles.Activity(f"eval: {len(paths)} run(s)") as activity:
        # in a log, a line per eval point as it is scored (on a terminal, the table below shows them)
        on_row = None if consoles.live(activity.console) else lambda row: activity.console.print(
            eval_point_line(row), markup=False, soft_wrap=True)
        for path in paths:
            rows += evaluate_run(path, tasks, step=step, all_steps=all_steps, depths=depths, device=device,
                                 truncate=truncate, on_score=activity.update, on_row=on_row)
    if as_json:
        console.file.write(json.dumps([public_row(row) for row in rows], indent=2) + "\n")
        return rows
    table = Table(title="matcher eval", caption="95% intervals: Wilson for accuracies, bootstrap over items for "
                  "loss and bpb. Stored in each run's evals.jsonl.")
    for header in ("run", "task", "step", "tokens", "depth", "n", "metric", "score", "95% interval"):
        table.add_column(header, justify="left" if header in ("run", "task", "metric") else "right")
    for row in rows:
        for metric, value in row["scores"].items():
            interval = row["intervals"].get(metric)
            shown = "-" if value is None else f"{value:.4f}"
            span = "-" if not interval else f"{interval[0]:.4f} - {interval[1]:.4f}"
            table.add_row(escape(row["run"]), escape(row["task"]), str(row["step"]), f"{row['tokens']:,}",
                          str(row["depth"]), scored_count(row), escape(metric), shown, span)
    console.print(table)
    return rows
