"""Tokenizers: one interface (`Tokenizer`) for data encoding, training, evaluation and decoding.

Two kinds, chosen by a spec string (`train.tokenizer` in a sweep, `--tokenizer` on the command line):
- `char` (the embedded default): one token per ASCII character, vocabulary 128;
- a path to a Hugging Face `tokenizer.json`, read with the `tokenizers` library.
Code outside this module holds a `Tokenizer` and never asks which kind it is.

The character tokenizer's conventions (ids are ASCII codes, so a token sequence reads as text in a
hex dump):
- printable ASCII (32..126), newline (10) and tab (9) are their own ids;
- PAD_ID = 0 (NUL): fills batches of unequal length; never a training target;
- BOS_ID = 2 (STX, "start of text"): begins every document;
- EOS_ID = 3 (ETX, "end of text"): ends every document; greedy decoding stops there;
- any other control character becomes a space, so text can never produce PAD/BOS/EOS;
- non-ASCII text is NFKD-normalised (accents dropped: "café" -> "cafe") and what is left outside
  ASCII becomes "?" (`unrepresentable` counts those characters, so encoders can report them).

A Hugging Face tokenizer's special tokens are found by name (BOS: <|begin_of_text|>, <|startoftext|>,
<s>, [BOS], <bos>; EOS: <|endoftext|>, <|end_of_text|>, </s>, [EOS], <eos>, <|im_end|>; PAD: <|pad|>,
<pad>, [PAD], <|padding|>). Fallbacks, documented and never a crash:
- no EOS token: the tokenizer cannot mark a document's end, so one is refused with a message (a
  packed stream without document boundaries would train a model that never stops);
- no BOS token: documents start with EOS (GPT-2's convention: <|endoftext|> separates documents);
- no PAD token: PAD is EOS. Padding is never a training target and is masked in evaluation, so
  sharing the id is harmless.
"""

# Function-local imports: tokenizers, only for a trained BPE tokenizer (the embedded task's is character level).

from __future__ import annotations

import functools
import hashlib
import unicodedata
from pathlib import Path

from matcher.errors import DataError

VOCAB_SIZE = 128  # the character tokenizer's
PAD_ID = 0
BOS_ID = 2
EOS_ID = 3
VOCAB_MULTIPLE = 64  # a model's vocab_size is the tokenizer's size rounded up to this (tensor-core friendly)

_CONTROLS_TO_SPACE = bytes(
    32 if (code < 32 and code not in (9, 10)) or code == 127 else code for code in range(256)
)

BOS_NAMES = ("<|begin_of_text|>", "<|startoftext|>", "<s>", "[BOS]", "<bos>")
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "[EOS]", "<eos>", "<|im_end|>")
PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]", "<|padding|>")


def padded_vocab(size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The smallest multiple of `multiple` that holds `size` tokens."""
    return -(-size // multiple) * multiple


class Tokenizer:
    """What every tokenizer offers. Subclasses set `spec`, `vocab_size`, `pad_id`, `bos_id`, `eos_id`
    and `content_hash` and implement `encode`, `encode_batch` and `_decode_ids`."""

    spec: str  # what a sweep records to reopen it: "char" or the tokenizer.json path
    kind: str  # "char" or "hf", for messages only
    vocab_size: int  # ids are 0 .. vocab_size - 1
    pad_id: int
    bos_id: int
    eos_id: int
    content_hash: str  # sha256 of what defines the mapping: equal hashes, equal token ids

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, no BOS/EOS added."""
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` of each text (in parallel where the library can)."""
        return [self.encode(text) for text in texts]

    def unrepresentable(self, text: str, ids: list[int] | None = None) -> int:
        """Characters of `text` that the tokenizer cannot represent (and would replace); `ids`: text's
        encoding where the caller has it, so it is not encoded again."""
        return 0

    def decode(self, ids) -> str:
        """Text of `ids` up to the first EOS; PAD and BOS are dropped (as are ids outside the
        vocabulary, which a model with a padded vocabulary can emit)."""
        kept = []
        for token in ids:
            token = int(token)
            if token == self.eos_id:
                break
            if token not in (self.pad_id, self.bos_id) and 0 <= token < self.vocab_size:
                kept.append(token)
        return self._decode_ids(kept)

    def _decode_ids(self, ids: list[int]) -> str:
        raise NotImplementedError

    def check_vocab(self, model_vocab: int) -> None:
        """Refuse a model whose vocabulary cannot hold this tokenizer's ids."""
        if model_vocab < self.vocab_size:
            raise DataError(
                f"the {self.describe()} has {self.vocab_size:,} tokens, but the model's vocab_size is "
                f"{model_vocab:,}; use vocab_size >= {self.vocab_size} (plan with --tokenizer {self.spec} "
                f"sets it to {padded_vocab(self.vocab_size):,})")

    def describe(self) -> str:
        return "character tokenizer" if self.kind == "char" else f"tokenizer {self.spec}"

    def record(self) -> dict:
        """What a sweep's train.tokenizer and a shard manifest record."""
        return {"path": self.spec, "hash": self.content_hash, "vocab_size": self.vocab_size}


class CharTokenizer(Tokenizer):
    spec = "char"
    kind = "char"
    vocab_size = VOCAB_SIZE
    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID
    content_hash = hashlib.sha256(b"matcher char tokenizer v1: ascii, nfkd, controls to space, pad 0 bos 2 eos 3"
                                  ).hexdigest()

    def encode(self, text: str) -> list[int]:
        if not text.isascii():
            text = unicodedata.normalize("NFKD", text)
            text = "".join(c for c in text if not unicodedata.combining(c))
        return list(text.encode("ascii", "replace").translate(_CONTROLS_TO_SPACE))

    def unrepresentable(self, text: str, ids: list[int] | None = None) -> int:
        if text.isascii():
            return 0
        text = unicodedata.normalize("NFKD", text)
        return sum(1 for c in text if not c.isascii() and not unicodedata.combining(c))

    def _decode_ids(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer.json (BPE, WordPiece, Unigram: whatever `tokenizers` reads)."""

    kind = "hf"

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer as _HF
        except ImportError:  # pragma: no cover - a declared dependency
            raise DataError("reading a tokenizer.json needs the `tokenizers` package: pip install tokenizers"
                            ) from None
        path = tokenizer_file(path)
        raw = path.read_bytes()
        try:
            self._tok = _HF.from_str(raw.decode("utf-8"))
        except Exception as error:  # the library raises a bare Exception on a malformed file
            raise DataError(f"{path}: not a readable Hugging Face tokenizer.json ({error})") from None
        self.spec = str(path)
        self.content_hash = hashlib.sha256(raw).hexdigest()
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        found = {role: next((vocab[name] for name in names if name in vocab), None)
                 for role, names in (("bos", BOS_NAMES), ("eos", EOS_NAMES), ("pad", PAD_NAMES))}
        if found["eos"] is None:
            raise DataError(f"{path}: the tokenizer has no end-of-text token (looked for {', '.join(EOS_NAMES)}); "
                            "add one as a special token, since documents must be separated")
        self.eos_id = found["eos"]
        self.bos_id = found["bos"] if found["bos"] is not None else self.eos_id
        self.pad_id = found["pad"] if found["pad"] is not None else self.eos_id
        self._unk = self._tok.token_to_id("<unk>") if self._tok.token_to_id("<unk>") is not None else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tok.encode_batch(texts, add_special_tokens=False)]

    def unrepresentable(self, text: str, ids: list[int] | None = None) -> int:
        if self._unk is None:  # byte-level BPE represents every string
            return 0
        return (self.encode(text) if ids is None else ids).count(self._unk)

    def decode(self, ids) -> str:
        # Special tokens are dropped by the library; stop at EOS first (BOS may equal EOS: skip a leading one).
        ids = [int(token) for token in ids]
        kept = []
        for i, token in enumerate(ids):
            if token == self.eos_id and not (i == 0 and self.bos_id == self.eos_id):
                break
            if token not in (self.pad_id, self.bos_id) and 0 <= token < self.vocab_size:
                kept.append(token)
        return self._decode_ids(kept)

    def _decode_ids(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


CHAR = CharTokenizer()


@functools.lru_cache(maxsize=8)
def _load_hf(path: str, mtime_ns: int) -> HFTokenizer:
    return HFTokenizer(path)


def load_tokenizer(spec: str | Path | None = "char") -> Tokenizer:
    """`char` (or None) or the path of a tokenizer.json (or a folder holding one)."""
    if spec is None or str(spec) == "char":
        return CHAR
    path = tokenizer_file(spec)
    return _load_hf(str(path), path.stat().st_mtime_ns)


def tokenizer_file(spec: str | Path) -> Path:
    """The tokenizer.json that `spec` names: the file, or the one in the folder it names."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise DataError(f"{spec} is a folder without a tokenizer.json in it; give `char` or the path of a "
                            "Hugging Face tokenizer.json (or of the folder that holds one)")
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"{spec}: no such tokenizer; give `char` or the path of a Hugging Face tokenizer.json")
    return path


def tokenizer_for(train) -> Tokenizer:
    """The tokenizer of a run's training settings: `train.tokenizer` is `char` (the default) or a
    mapping {path, hash} recorded at planning; a file whose hash no longer matches is refused (its
    ids would not be the ones the data and the model were made with)."""
    spec = getattr(train, "tokenizer", "char")
    if isinstance(spec, dict):
        tokenizer = load_tokenizer(spec.get("path"))
        if spec.get("hash") and spec["hash"] != tokenizer.content_hash:
            raise DataError(f"{spec.get('path')}: the tokenizer file changed since this sweep was planned "
                            f"(hash {tokenizer.content_hash[:12]}, recorded {str(spec['hash'])[:12]}); "
                            "restore it, or re-plan with --tokenizer")
        return tokenizer
    return load_tokenizer(spec)
