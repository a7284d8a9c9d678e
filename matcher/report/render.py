"""Write a comparison Report (matcher/report/comparison.py) as rich tables, Markdown or CSV.

Terminal and Markdown show numbers readably with matcher/fmt.py, like every matcher table (tokens
41.3k, parameters 255.6K, ratios 1.35x, bytes 4.5 MiB); CSV keeps them as numbers (counts as
integers, fractions to 4 decimals) and holds one block per table: a `# title` line, the header and
the rows, then a blank line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from rich.table import Table as RichTable
from rich.text import Text

from matcher import fmt
from matcher.report.comparison import Column, Report, Table

TEXT_KINDS = ("text",)


def readable(value: Any, kind: str) -> str:
    """How a value of `kind` reads in a table; the caller handles None."""
    if kind == "text":
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if kind == "int":
        return str(int(value))
    if kind == "target":
        return f"{value:g}"
    if kind in ("tokens", "flops"):
        return fmt.si(value)
    if kind == "count":
        return fmt.params(value)
    if kind == "bytes":
        return fmt.bytes_(value)
    if kind == "ratio":
        return fmt.ratio(value, digits=2)
    if kind in ("accuracy", "loss", "fit"):
        return f"{value:.3f}"
    if kind == "coefficient":
        return f"{value:.4g}"
    if kind == "exponent":
        return f"{value:+.4f}"
    raise ValueError(f"unknown column kind {kind!r}")


def plain(value: Any, kind: str) -> str:
    """How a value of `kind` is written to CSV: exact enough to recompute from, no units."""
    if value is None:
        return ""
    if kind == "text":
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if kind in ("int", "tokens", "count", "flops", "bytes"):
        return str(round(value))
    if kind in ("target", "coefficient"):
        return f"{value:g}"
    return f"{value:.4f}"


def _cells(table: Table) -> list[list[str]]:
    return [[column.missing if row.get(column.key) is None else readable(row[column.key], column.kind)
             for column in table.columns] for row in table.rows]


def to_markdown(report: Report) -> str:
    parts = [f"# {report.title}", "\n".join(report.summary)]
    for table in report.tables:
        parts.append(f"## {table.title}")
        parts.append(_markdown_table(table.columns, _cells(table)) if table.rows else "(none yet)")
        parts += table.notes
    return "\n\n".join(parts) + "\n"


def _markdown_table(columns: list[Column], cells: list[list[str]]) -> str:
    headers = [column.header for column in columns]
    widths = [max(len(text) for text in [header, *(row[i] for row in cells)])
              for i, header in enumerate(headers)]
    right = [column.kind not in TEXT_KINDS for column in columns]  # numbers line up on their last digit

    def line(texts: list[str]) -> str:
        padded = (t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else ":" + "-" * (w + 1) for w, r in zip(widths, right))
    return "\n".join([line(headers), rule + "|"] + [line(row) for row in cells])


def to_json(report: Report, extra: dict[str, Any]) -> str:
    """The report as one JSON object: title, summary, each table's rows (missing values null) and
    notes, and `extra` (the selection)."""
    tables = [{"title": table.title, "rows": [{column.key: row.get(column.key) for column in table.columns}
                                              for row in table.rows], "notes": table.notes}
              for table in report.tables]
    document = {"title": report.title, "summary": report.summary, **extra, "tables": tables}
    return json.dumps(_json_ready(document), indent=2) + "\n"


def _json_ready(value: Any) -> Any:
    """Plain JSON values: numpy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_csv(report: Report) -> str:
    blocks = []
    for table in report.tables:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow([column.key for column in table.columns])
        for row in table.rows:
            writer.writerow([plain(row.get(column.key), column.kind) for column in table.columns])
        blocks.append(f"# {table.title}\n{text.getvalue()}")
    return "\n".join(blocks)


def print_rich(report: Report, console) -> None:
    """The report as rich tables on `console` (a rich.console.Console)."""
    console.print(Text(report.title, style="bold"))
    for line in report.summary:
        console.print(Text(line))
    for table in report.tables:
        shown = RichTable(title=Text(table.title), caption=Text(" ".join(table.notes)),
                          caption_justify="left", title_justify="left", title_style="bold")
        for column in table.columns:
            shown.add_column(column.header, justify="left" if column.kind in TEXT_KINDS else "right")
        for cells in _cells(table):
            shown.add_row(*(Text(cell) for cell in cells))  # Text: a "[" in a run name is not markup
        console.print()
        console.print(shown)
