r"""Answer extraction and equivalence, after lm-evaluation-harness's task definitions.

- gsm8k, strict: the number after `#### ` (regex `#### (\-?[0-9\.\,]+)`), as the harness's
  `strict-match` filter; flexible: the last number anywhere in the output (`flexible-extract`, regex
  `(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match). Both are compared with the reference number after
  removing `,`, `$` and a trailing `.` (the harness's `regexes_to_ignore`), numbers normalised
  (`3.50` = `3.5`).
- math: the content of the last `\\boxed{...}` (balanced braces), else the text after "final answer
  is"; equivalence by `math-verify` when it is installed (`pip install matcher[math]`), else exact match
  of the normalised strings (spaces, `$`, `\\left`/`\\right`, `\\dfrac`/`\\tfrac`, a trailing `.` dropped).
"""

from __future__ import annotations

import re

from matcher.data.problems import normalise_number

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_FINAL_ANSWER = re.compile(r"final answer is\s*\$?(.+?)\$?(?:\.\s*I hope|\.?\s*$)", re.IGNORECASE | re.DOTALL)


def clean_number(text: str) -> str | None:
    """The harness's cleanup (`,`, `$`, a trailing `.`), then matcher's number normalisation; None when
    nothing numeric is left."""
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if not re.fullmatch(r"-?\d*\.?\d+", text):
        return text or None
    return normalise_number(text)


def gsm8k_strict(output: str) -> str | None:
    found = _STRICT.findall(output)
    return clean_number(found[0]) if found else None


def gsm8k_flexible(output: str) -> str | None:
    found = [a or b for a, b in _FLEXIBLE.findall(output)]
    for candidate in reversed(found):  # the last one that is a number once cleaned ("$." is not)
        cleaned = clean_number(candidate)
        if cleaned is not None and re.fullmatch(r"-?\d*\.?\d+", cleaned):
            return cleaned
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1:i]
    return None


def math_answer(output: str) -> str | None:
    boxed = last_boxed(output)
    if boxed is not None:
        return boxed
    found = _FINAL_ANSWER.search(output)
    return found.group(1).strip() if found else None


def normalise_math(text: str) -> str:
    text = text.strip().strip("$").rstrip(".")
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                     ("\\!", ""), ("\\,", ""), ("\\;", ""), ("^\\circ", ""), ("^{\\circ}", "")):
        text = text.replace(old, new)
    text = re.sub(r"\s+", "", text)
    return normalise_number(text) if re.fullmatch(r"-?[\d,]*\.?\d+", text) else text


def math_equal(predicted: str | None, reference: str, *, use_math_verify: bool | None = None) -> bool:
    """Is `predicted` the same answer as `reference`? math-verify when installed (or asked for), else
    exact match of the normalised strings."""
    if predicted is None:
        return False
    if use_math_verify is None:
        use_math_verify = has_math_verify()
    if use_math_verify:
        from math_verify import parse, verify

        gold, answer = parse(f"${reference}$"), parse(f"${predicted}$")
        if gold and answer:
            return bool(verify(gold, answer))
    return normalise_math(predicted) == normalise_math(reference)


def has_math_verify() -> bool:
    import importlib.util

    return importlib.util.find_spec("math_verify") is not None
