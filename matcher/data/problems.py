"""Question/answer problems: the text format shared by training and evaluation, the final-number
rule used for scoring, and GSM8K-style JSONL files.

A problem is rendered as one document `Q: <question> A: <answer>`; the answer ends in
`#### <final number>` (the GSM8K convention). Evaluation gives the model the prompt `Q: <question> A:`
and scores the number after the last `####` it generates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.errors import DataError

_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Problem:
    question: str  # what the model is given, e.g. "k=3; x=k+4; x?"
    answer: str  # the reference completion, ending in "#### <final>"
    final: str  # the number after "####", normalised (see normalise_number)


def prompt_text(question: str) -> str:
    return f"Q: {question} A:"


def document_parts(question: str, answer: str) -> tuple[str, str]:
    """A problem's training document in its two parts: the prompt (not trained on) and the answer that
    follows it (trained on); together `Q: <question> A: <answer>`."""
    return prompt_text(question), f" {answer}"


def normalise_number(text: str) -> str:
    """`1,000` -> `1000`, `3.50` -> `3.5`, `7.0` -> `7`: equal numbers compare equal as strings."""
    text = text.replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text


def final_number(text: str) -> str | None:
    """The normalised number after the last `####` in `text`, or None when there is none."""
    found = _FINAL.findall(text)
    return normalise_number(found[-1]) if found else None


def jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """("file:line", parsed object) for each non-blank line; a bad line is a DataError naming it."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); each line must be one JSON "
                                "object") from None


def is_problem(record: Any) -> bool:
    return isinstance(record, dict) and all(isinstance(record.get(key), str) for key in ("question", "answer"))


def load_jsonl(path: str | Path) -> list[Problem]:
    """GSM8K-style problems: one JSON object per line with string fields `question` and `answer`, the
    answer ending in `#### <number>`. Blank lines are skipped; any other bad line is a DataError
    naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such eval file. Give eval_data: math, math-latent or a GSM8K-style .jsonl file")
    problems = []
    for where, record in jsonl_records(path):
        if not is_problem(record):
            raise DataError(f'{where}: expected an object with string fields "question" and "answer"')
        final = final_number(record["answer"])
        if final is None:
            raise DataError(f"{where}: the answer must end in '#### <number>' (the GSM8K convention)")
        problems.append(Problem(question=record["question"].strip(), answer=record["answer"].strip(),
                                final=final))
    if not problems:
        raise DataError(f"{path}: no problems in the file; it is empty")
    return problems
