r"""Answer extraction and equivalence, after lm-evaluation-harness's task definitions.

- gsm8k: exactly lm-evaluation-harness's tasks/gsm8k/gsm8k.yaml. Two filters on the generation:
  `strict-match` (regex `#### (\-?[0-9\.\,]+)`, the first match) and `flexible-extract` (regex
  `(-?[$0-9.,]{2,})|(-?[0-9]+)`, the last match, `group_select: -1`), each falling back to
  `[invalid]`; then `exact_match` against the whole reference answer with `regexes_to_ignore`
  (`,`, `\$`, `(?s).*#### `, `\.$`, applied in that order to both) and `ignore_case`. No number
  normalisation: `3.50` is not `3.5`, as in the harness.
- math: the content of the last `\\boxed{...}` (balanced braces), else the text after "final answer
  is"; equivalence by `math-verify` when it is installed (`pip install matcher[math]`), else exact match
  of the normalised strings (spaces, `$`, `\\left`/`\\right`, `\\dfrac`/`\\tfrac`, a trailing `.` dropped).
"""

# Function-local imports: math-verify (the optional `math` extra), only when answers are compared as math.

from __future__ import annotations

import importlib.util
import re

from matcher.data.problems import normalise_number

GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")  # gsm8k.yaml's regexes_to_ignore, in its order
FALLBACK = "[invalid]"  # the harness's RegexFilter output when nothing matches
_FINAL_ANSWER = re.compile(r"final answer is\s*\$?(.+?)\$?(?:\.\s*I hope|\.?\s*$)", re.IGNORECASE | re.DOTALL)


def regex_filter(output: str, pattern: re.Pattern, group_select: int = 0) -> str:
    """lm-evaluation-harness's `regex` filter: the `group_select`-th match (of findall), its first
    non-empty group when the pattern has several, stripped; FALLBACK when nothing matches."""
    found = pattern.findall(output)
    if not found:
        return FALLBACK
    match = found[group_select]
    if isinstance(match, tuple):
        groups = [group for group in match if group]
        match = groups[0] if groups else FALLBACK
    return match.strip()


def exact_match_text(text: str, regexes_to_ignore=GSM8K_IGNORE) -> str:
    """What the harness's exact_match compares: `text` with each regex removed in turn, lowercased."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    return text.lower()


def gsm8k_strict(output: str) -> str:
    return regex_filter(output, GSM8K_STRICT, 0)


def gsm8k_flexible(output: str) -> str:
    return regex_filter(output, GSM8K_FLEXIBLE, -1)


def gsm8k_correct(extracted: str, reference_answer: str) -> bool:
    """The harness's exact_match of a filtered answer against the whole reference (`... #### 72`)."""
    return exact_match_text(extracted) == exact_match_text(reference_answer)


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
    return importlib.util.find_spec("math_verify") is not None
