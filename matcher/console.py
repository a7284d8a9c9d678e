"""The two consoles every command prints to (results on stdout; notices, warnings and errors on stderr)
and the one place that renders a message.

A message is rendered once: its text is plain (a path, a run name or an exception's text may hold
`[/` or `[bold]`, which must print as written, not as markup), and it is never hard-wrapped, so a log
or a pipe gets it on one line and a terminal wraps it itself."""

from __future__ import annotations

from functools import cache


@cache
def out():
    import sys

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
