"""The two consoles every command prints to: results on stdout, notices and errors on stderr."""

from __future__ import annotations

from functools import cache


@cache
def out():
    import sys

    from rich.console import Console

    # Piped output (logs, README examples) would otherwise be squeezed to 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


@cache
def err():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def notice(text: str | None) -> None:
    if text:
        err().print(f"[yellow]note:[/] {text}")
