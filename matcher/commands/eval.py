"""`matcher eval RUN_DIR`: score a run's saved model checkpoints (one per eval point) on benchmark tasks,
at the trained depth or (dr, dr_da) at other test-time depths; print a table or JSON rows and store
them in the run folder's evals.jsonl, where `matcher compare` reads them. `--show N` prints the first N
wrong items from the samples files (those just scored, or without --task those stored at the step)."""

# Function-local imports: the evaluator (torch), loaded when the command runs, not when the CLI starts.

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from matcher import console as consoles
from matcher.console import escape
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


def depth_shown(row: dict) -> str:
    """The row's depth; at a test-time depth of da_rope forward_reversed, with the reversed index, which still
    counts from the trained depth D."""
    if "da_rope_reversed_index" in row:
        return f"{row['depth']} (reversed index {row['da_rope_reversed_index']})"
    return str(row["depth"])


def eval_point_line(row: dict) -> str:
    scores = ", ".join(f"{metric} {value:.4f}" for metric, value in row["scores"].items() if value is not None)
    return (f"eval: {row['run']} step {row['step']} ({row['tokens']:,} tokens), depth {depth_shown(row)}, "
            f"{row['task']} (n {row['n']}): {scores or 'no scores'}")


def scored_count(row: dict) -> str:
    """The n column: the items scored (of how many, where a limit applies), and how many were cut to the
    context."""
    text = str(row["n"]) + (f" of {row['n_total']}" if row.get("n_total") else "")
    if row.get("truncated"):
        text += f" ({row['truncated']} truncated)"
    return text


def wrong_samples(samples: list[dict]) -> list[dict]:
    """The samples the task's first metric (acc, or gsm8k's strict) scored wrong; bpb has no decision."""
    return [s for s in samples if s.get("correct") and not next(iter(s["correct"].values()))]


def show_wrong(console, run_path: Path, step: int, files: list[tuple[str, Path]], count: int) -> None:
    """The first `count` wrong items of each samples file, with the gold and what the model answered."""
    from matcher.run.evaluate import read_samples

    for label, path in files:
        wrong = wrong_samples(read_samples(path))
        table = Table(title=Text(f"{run_path.name} {label} at step {step}: {len(wrong)} wrong, the first "
                                 f"{min(count, len(wrong))}"))
        for header in ("item", "gold", "answered", "output"):
            table.add_column(header)
        for s in wrong[:count]:
            if "loglikelihoods" in s:  # mc: the choice picked, and every choice's log-likelihood
                answered = str(next(iter(s["picked"].values())))
                output = " ".join(f"{ll:.2f}" for ll in s["loglikelihoods"])
            else:
                answered = json.dumps(s.get("extracted"), ensure_ascii=False)
                output = s.get("generation", "")
            gold = s["gold"] if isinstance(s["gold"], str) else json.dumps(s["gold"])
            table.add_row(Text(s["id"]), Text(gold[-40:]), Text(answered), Text(repr(output)[:160]))
        console.print(table)


def _stored_samples(run_path: Path, step: int | None) -> tuple[int, list[tuple[str, Path]]]:
    """The step (default: the last with samples) and its samples files, by task label."""
    folder = run_path / "evals"
    steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    if step is None and steps:
        step = steps[-1]
    if step not in steps:
        where = "" if step is None else f" at step {step}"
        raise RunError(f"{run_path}: no stored samples{where} (evals/<step>/*.samples.jsonl); score the step "
                       "first: matcher eval RUN --step N --task ...")
    files = sorted((folder / str(step)).glob("*.samples.jsonl*"))
    return step, [(samples_label(p), p.with_name(p.name.removesuffix(".gz"))) for p in files]


def samples_label(path: Path) -> str:
    """How a samples file is named in --show: its task (and depth), and its setting's id where the file
    name has one (matcher.run.evaluate.samples_path; files of older versions have none)."""
    name = path.name.split(".samples.jsonl")[0]
    label, _, setting_id = name.rpartition(".")
    if label and len(setting_id) == 8 and all(c in "0123456789abcdef" for c in setting_id):
        return f"{label} (setting {setting_id})"
    return name


def eval_command(run_dir: str | Path, tasks: list[str], *, step: int | None = None, all_steps: bool = False,
                 depth: str | None = None, as_json: bool = False, device: str | None = None,
                 truncate: str | None = None, show: int | None = None, console=None) -> list:
    from matcher.run.evaluate import evaluate_run, samples_path

    if step is not None and all_steps:
        raise ConfigError("give --step N or --all-steps, not both")
    if show is not None and as_json:
        raise ConfigError("--show prints tables; give it or --json, not both")
    depths = parse_depths(depth)
    console = console or consoles.out()
    if show is not None and not tasks:  # what was scored before: nothing is scored again
        for path in _run_dirs(Path(run_dir)):
            shown_step, files = _stored_samples(path, step)
            show_wrong(console, path, shown_step, files, show)
        return []
    scored = []  # (run folder, row)
    paths = _run_dirs(Path(run_dir))
    with consoles.Activity(f"eval: {len(paths)} run(s)") as activity:
        # in a log, a line per eval point as it is scored (on a terminal, the table below shows them)
        on_row = None if consoles.live(activity.console) else lambda row: activity.console.print(
            eval_point_line(row), markup=False, soft_wrap=True)
        for path in paths:
            scored += [(path, row) for row in evaluate_run(
                path, tasks, step=step, all_steps=all_steps, depths=depths, device=device, truncate=truncate,
                on_score=activity.update, on_progress=activity.progress, on_row=on_row)]
    rows = [row for _, row in scored]
    if show is not None:
        for path, row in scored:
            stored = samples_path(path, row["step"], row["setting"])
            show_wrong(console, path, row["step"], [(samples_label(stored), stored)], show)
    if as_json:
        console.file.write(json.dumps([public_row(row) for row in rows], indent=2) + "\n")
        return rows
    table = Table(title="matcher eval", caption="95% intervals: Wilson for accuracies, bootstrap over items for "
                  "loss and bpb. setting: the eval setting's id (`matcher compare --eval-setting`; the whole "
                  "setting is in --json). Stored in each run's evals.jsonl.")
    for header in ("run", "task", "setting", "step", "tokens", "depth", "n", "metric", "score", "95% interval"):
        table.add_column(header, justify="left" if header in ("run", "task", "setting", "metric") else "right")
    for row in rows:
        for metric, value in row["scores"].items():
            interval = row["intervals"].get(metric)
            shown = "-" if value is None else f"{value:.4f}"
            span = "-" if not interval else f"{interval[0]:.4f} - {interval[1]:.4f}"
            table.add_row(escape(row["run"]), escape(row["task"]), row["setting"].split(" ", 1)[0],
                          str(row["step"]), f"{row['tokens']:,}",
                          depth_shown(row), scored_count(row), escape(metric), shown, span)
    console.print(table)
    return rows
