"""The two consoles every command prints to (results on stdout; notices, warnings and errors on stderr)
and the one place that renders a message.

A message is rendered once: its text is plain (a path, a run name or an exception's text may hold
`[/` or `[bold]`, which must print as written, not as markup), and it is never hard-wrapped, so a log
or a pipe gets it on one line and a terminal wraps it itself."""

# Function-local imports: rich's console, text and progress bars, loaded on the first output, not when the CLI
# starts.

from __future__ import annotations

import math
import os
import sys
import threading
import time
from functools import cache

from matcher import fmt
from matcher.errors import ConfigError


@cache
def out():
    from rich.console import Console

    # Piped output (logs, README examples): tables laid out at 150 columns instead of 80, and lines
    # longer than that (a long path) left whole.
    terminal = sys.stdout.isatty()
    return Console(highlight=False, width=None if terminal else 150, soft_wrap=not terminal)


@cache
def err():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def escape(text: object) -> str:
    """`text` for a string that rich reads as markup (a table cell, a line with [bold] parts)."""
    from rich.markup import escape as escape_markup

    return escape_markup(str(text))


def _message(label: str, style: str, text: object, console) -> None:
    from rich.text import Text

    (console or err()).print(Text.assemble((label, style), " ", str(text)), soft_wrap=True)


def error(text: object, console=None) -> None:
    """`error: TEXT` on stderr: what went wrong and what to do."""
    _message("error:", "bold red", text, console)


def warning(text: object, console=None) -> None:
    """`warning: TEXT` on stderr: a result may not mean what it seems to."""
    _message("warning:", "yellow", text, console)


def notice(text: object | None, console=None) -> None:
    """`note: TEXT` on stderr: a choice made for the user, or how to go on."""
    if text:
        _message("note:", "yellow", text, console)


# Progress. On a terminal: rich bars and spinners, redrawn in place. Anywhere else (a pipe, nohup, a
# Slurm or CI log, TERM=dumb): plain lines, one per interval, so a log shows that a long job is alive.
PROGRESS_INTERVAL_ENV = "MATCHER_PROGRESS_INTERVAL_S"
PROGRESS_INTERVAL_S = 30.0


def progress_interval_s() -> float:
    """Seconds between plain progress lines: MATCHER_PROGRESS_INTERVAL_S, or 30 when it is unset or empty."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return PROGRESS_INTERVAL_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(f"{PROGRESS_INTERVAL_ENV}={text}: the seconds between progress lines in a log must be a "
                          f"number >= 0 (such as {PROGRESS_INTERVAL_S:g}, the default; 0 prints every update); "
                          "set it to one or unset it")
    return seconds


def live(console) -> bool:
    """Whether `console` redraws in place (bars, spinners) rather than taking plain lines."""
    return console.is_interactive


class LogLines:
    """Plain progress lines on `console`: `due()` is true for the first call and then once every
    interval (MATCHER_PROGRESS_INTERVAL_S, default 30 s)."""

    def __init__(self, console, interval_s: float | None = None):
        self.console, self.clock = console, time.monotonic
        self.interval_s = progress_interval_s() if interval_s is None else interval_s
        self.started = self.clock()
        self.last: float | None = None

    def due(self) -> bool:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            return False
        self.last = now
        return True

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


class Activity:
    """What a step that has no counter is doing (`update(text)`): a spinner on a terminal; in a log, a
    line for each new text and, while it lasts, the same text with the time so far once every interval."""

    def __init__(self, text: str, console=None):
        self.console, self.text = console or err(), text

    def __enter__(self) -> Activity:
        if live(self.console):
            self.status = self.console.status(self.text, spinner="dots")
            self.status.__enter__()
            return self
        self.status, self.lines, self.done = None, LogLines(self.console), threading.Event()
        self.lines.due()
        self.lines.print(self.text)
        self.ticker = threading.Thread(target=self._tick, name="matcher-progress", daemon=True)
        self.ticker.start()
        return self

    def _tick(self) -> None:
        while not self.done.wait(max(self.lines.interval_s, 0.05)):
            if self.lines.due():
                self.lines.print(f"{self.text} ({fmt.duration(self.lines.elapsed_s())} so far)")

    def update(self, text: str) -> None:
        """A new step: on the spinner, or a line of its own in a log."""
        self.text = text
        if self.status is not None:
            self.status.update(text)
        else:
            self.lines.print(text)

    def progress(self, text: str) -> None:
        """How far the step has come (such as items done of all): on the spinner, or in a log the line of
        the next interval, so that frequent counts print at most once per interval."""
        self.text = text
        if self.status is not None:
            self.status.update(text)
        elif self.lines.due():
            self.lines.print(text)

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)
        else:
            self.done.set()
            self.ticker.join()


class ByteProgress:
    """Progress through `total_bytes` of input (`advance(n)`): a bar on a terminal; in a log, one line
    per interval with the share done, the rate and the time left."""

    def __init__(self, label: str, total_bytes: int, console=None, enabled: bool = True):
        self.label, self.total, self.done_bytes = label, total_bytes, 0
        self.console = console or err()
        self.bar = None
        if enabled and live(self.console):
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(label, markup=False), BarColumn(), DownloadColumn(),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.task = self.bar.add_task(label, total=total_bytes)
        self.lines = LogLines(self.console) if enabled and self.bar is None else None

    def __enter__(self) -> ByteProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, n_bytes: int) -> None:
        self.done_bytes += n_bytes
        if self.bar is not None:
            self.bar.advance(self.task, n_bytes)
        elif self.lines is not None and self.lines.due():
            elapsed = self.lines.elapsed_s()
            rate = self.done_bytes / elapsed if elapsed > 0 else None
            left = (self.total - self.done_bytes) / rate if rate else None
            share = self.done_bytes / self.total if self.total else 1.0
            self.lines.print(f"{self.label}: {fmt.bytes_(self.done_bytes)} of {fmt.bytes_(self.total)} "
                             f"({share:.0%}), {fmt.bytes_(rate)}/s, ETA {fmt.duration(left)}")
