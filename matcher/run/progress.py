"""What `matcher run` shows: a progress bar per run (tokens, loss, accuracy, tokens/s, ETA) fed by
the run's metrics lines, and the sweep summary table at the end."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from matcher import fmt
from matcher.console import LogLines, escape, live
from matcher.run.contract import Outcome
from matcher.run.rundir import split_complete


@dataclass
class RunSummary:
    run: str
    state: Outcome
    tokens: int = 0
    eval_accuracy: float | None = None
    tokens_per_s: float | None = None
    note: str | None = None  # why it was skipped, failed or stopped


class SweepProgress:
    """One bar per run; `record(run, line)` takes a metrics line (dict) as the trainer writes it. Where
    the console does not redraw in place (a pipe, a batch job's log), plain lines instead: one per run
    and interval (tokens, loss, tokens/s, ETA), one per eval point, and one when a run starts and ends."""

    def __init__(self, console: Console, total_tokens: dict[str, int]):
        self.totals = total_tokens
        self.lines = None if live(console) else {run: LogLines(console) for run in total_tokens}
        self.progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
            TextColumn("{task.fields[tokens]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[accuracy]}"), TextColumn("{task.fields[speed]} tok/s"),
            TimeRemainingColumn(), console=console, transient=False, disable=self.lines is not None)
        self.tasks = {}
        for run, total in total_tokens.items():
            self.tasks[run] = self.progress.add_task(run, total=total, start=False,
                                                     tokens=f"0/{fmt.si(total)}", loss="-", accuracy="-",
                                                     speed="-")

    def __enter__(self) -> SweepProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def start(self, run: str) -> None:
        self.progress.start_task(self.tasks[run])
        if self.lines is not None:
            self.lines[run].print(f"{run}: started, {fmt.si(self.totals[run])} tokens to train")

    def record(self, run: str, line: dict[str, Any]) -> None:
        if self.lines is not None:
            self._log(run, line)
            return
        task = self.tasks[run]
        fields: dict[str, Any] = {}
        if "tokens" in line:
            fields["tokens"] = f"{fmt.si(line['tokens'])}/{fmt.si(self.totals[run])}"
        if line.get("train_loss") is not None:
            fields["loss"] = f"{line['train_loss']:.3f}"
        if line.get("eval_accuracy") is not None:
            fields["accuracy"] = f"{line['eval_accuracy']:.1%}"
        if line.get("tokens_per_s") is not None:
            fields["speed"] = fmt.si(line["tokens_per_s"])
        self.progress.update(task, completed=line.get("tokens", 0), **fields)

    def _log(self, run: str, line: dict[str, Any]) -> None:
        lines, tokens, total = self.lines[run], line.get("tokens"), self.totals[run]
        at = f"step {line.get('step', '-')}, {fmt.si(tokens)}/{fmt.si(total)} tokens"
        if line.get("event") == "eval":
            scores = [f"{name} {line[key]:{spec}}" for name, key, spec in (
                ("accuracy", "eval_accuracy", ".1%"), ("loss", "eval_loss", ".3f"), ("bpb", "eval_bpb", ".3f"))
                if isinstance(line.get(key), int | float)]
            lines.print(f"{run}: eval at {at}: {', '.join(scores) or 'no scores'}")
        elif line.get("event") == "train" and lines.due():
            speed = line.get("tokens_per_s")
            left = (total - tokens) / speed if speed and isinstance(tokens, int) else None
            loss = line.get("train_loss")
            lines.print(f"{run}: {at} ({(tokens or 0) / max(total, 1):.0%}), loss "
                        f"{'-' if loss is None else f'{loss:.3f}'}, {fmt.si(speed)} tokens/s, ETA {fmt.duration(left)}")

    def end(self, run: str, state: Outcome) -> None:
        self.progress.update(self.tasks[run], description=f"{run} [{state}]")  # the column reads no markup
        self.progress.stop_task(self.tasks[run])
        if self.lines is not None:
            self.lines[run].print(f"{run}: {state}")


class MetricsTail:
    """New complete lines of a metrics.jsonl written by another process. A resumed run cuts the file
    back first and writes on from there; the tail notices (the last line it read is no longer where it
    was, even when the file has grown past that point again) and starts over from the top. A line that
    is not JSON is skipped: the tail feeds progress bars, and a launcher must not stop for them."""

    def __init__(self, path: Path):
        self.path, self.offset, self.last_line = path, 0, b""

    def new_records(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as handle:
                start = self.offset - len(self.last_line)
                handle.seek(start)
                if size < self.offset or handle.read(len(self.last_line)) != self.last_line:
                    self.offset, self.last_line = 0, b""
                    handle.seek(0)
                data = handle.read(max(size - self.offset, 0))
        except FileNotFoundError:
            return []
        lines, _ = split_complete(data)
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        used = data.rfind(b"\n") + 1
        if used:
            self.offset += used
            self.last_line = data[data.rfind(b"\n", 0, used - 1) + 1:used]
        return records


def summary_table(sweep_name: str, summaries: list[RunSummary]) -> Table:
    table = Table(title=f"sweep {escape(sweep_name)}")
    for column in ("run", "state", "tokens", "final accuracy", "tokens/s", "note"):
        numeric = column in ("tokens", "final accuracy", "tokens/s")
        table.add_column(column, justify="right" if numeric else "left")
    colours = {"finished": "green", "failed": "red", "interrupted": "yellow", "locked": "yellow"}
    for s in summaries:
        colour = colours.get(s.state)
        state = f"[{colour}]{s.state}[/]" if colour else s.state
        accuracy = "-" if s.eval_accuracy is None else f"{s.eval_accuracy:.1%}"
        table.add_row(escape(s.run), state, fmt.si(s.tokens), accuracy, fmt.si(s.tokens_per_s), escape(s.note or ""))
    return table
