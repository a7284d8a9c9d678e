"""Forgiving resolution of user-typed names (presets, variants).

Case, `_` versus `-`, Unicode dashes and look-alike letters from other scripts (a Cyrillic 'а' typed
for a Latin 'a', say) are normalised; the caller gets a notice to show when the typed name was not
exactly the canonical one. An unknown name raises ConfigError listing the closest known names.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from matcher.errors import ConfigError

# Letters that render like Latin ones (Cyrillic, Greek, fullwidth forms are handled by NFKC).
_LOOKALIKES = str.maketrans(
    {
        "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k",
        "ӏ": "l", "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y",
        "х": "x", "ԝ": "w", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ı": "i", "ℓ": "l",
        "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "﹣": "-",
    }
)


def normalise(name: str) -> str:
    """The comparison key of a name: NFKC, look-alikes mapped to ASCII, casefolded, `_` as `-`."""
    text = unicodedata.normalize("NFKC", name.strip())
    text = text.casefold().translate(_LOOKALIKES)
    return text.replace("_", "-")


@dataclass(frozen=True)
class Resolved:
    name: str  # the canonical name
    notice: str | None  # what was changed, to show the user; None when typed exactly


def resolve(typed: str, known: Iterable[str], kind: str) -> Resolved:
    """Map `typed` onto one of `known` (canonical spellings), or raise with the closest names."""
    known = list(known)
    if typed in known:
        return Resolved(typed, None)
    by_key = {normalise(k): k for k in known}
    key = normalise(typed)
    if key in by_key:
        canonical = by_key[key]
        odd = sorted({c for c in typed if ord(c) > 127})
        why = f" (non-ASCII {', '.join(repr(c) for c in odd)})" if odd else ""
        return Resolved(canonical, f"read {kind} {typed!r} as {canonical!r}{why}")
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(by_key[c] for c in close)}. " if close else ""
    raise ConfigError(
        f"unknown {kind} {typed!r}. {hint}Known {kind}s: {', '.join(known)}."
    )


def file_name(text: str) -> str:
    """`text` as a sweep, folder and run name: letters, digits, '.', '_' and '-' (any other run of
    characters becomes one '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"
