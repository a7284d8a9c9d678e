"""The character tokenizer: one token per ASCII character, vocabulary 128.

Conventions (ids are ASCII codes, so a token sequence reads as text in a hex dump):
- printable ASCII (32..126), newline (10) and tab (9) are their own ids;
- PAD_ID = 0 (NUL): fills batches of unequal length; never a training target;
- BOS_ID = 2 (STX, "start of text"): begins every document;
- EOS_ID = 3 (ETX, "end of text"): ends every document; greedy decoding stops there;
- any other control character becomes a space, so text can never produce PAD/BOS/EOS;
- non-ASCII text is NFKD-normalised (accents dropped: "café" -> "cafe") and what is left outside
  ASCII becomes "?".
"""

from __future__ import annotations

import unicodedata

from matcher.errors import DataError

VOCAB_SIZE = 128
PAD_ID = 0
BOS_ID = 2
EOS_ID = 3

_CONTROLS_TO_SPACE = bytes(
    32 if (code < 32 and code not in (9, 10)) or code == 127 else code for code in range(256)
)


def check_vocab(vocab_size: int) -> None:
    if vocab_size < VOCAB_SIZE:
        raise DataError(f"the math task and JSONL eval sets use a {VOCAB_SIZE}-token character vocabulary, "
                        f"but the model's vocab_size is {vocab_size}; use vocab_size >= {VOCAB_SIZE}")


def encode(text: str) -> list[int]:
    """The ids of `text` (no BOS/EOS added)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    return list(text.encode("ascii", "replace").translate(_CONTROLS_TO_SPACE))


def encode_document(text: str) -> list[int]:
    """A training document: BOS, the text, EOS."""
    return [BOS_ID, *encode(text), EOS_ID]


def decode(ids) -> str:
    """Text of `ids` up to the first EOS; PAD and BOS are dropped."""
    chars = []
    for token in ids:
        token = int(token)
        if token == EOS_ID:
            break
        if token not in (PAD_ID, BOS_ID) and 0 <= token < VOCAB_SIZE:
            chars.append(chr(token))
    return "".join(chars)
