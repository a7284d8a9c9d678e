"""Token shards on disk: `<name>.bin` holds the tokens as a flat little-endian array, and a sidecar
`<name>.json` beside it says how to read them:

    {"dtype": "uint16"}        # or "uint32" for vocabularies above 65,536

A raw nanoGPT-style `.bin` of uint16 tokens becomes a shard by adding that sidecar. `write_shard`
writes both. Shards are read through numpy memmaps, so they may be larger than memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from matcher.errors import DataError

DTYPES = ("uint16", "uint32")
_SCAN_TOKENS = 1 << 24  # tokens checked per chunk when validating a shard


def sidecar_path(shard: Path) -> Path:
    return shard.with_suffix(".json")


def write_shard(path: str | Path, tokens, dtype: str = "uint16") -> Path:
    """Write `tokens` (any integer sequence) as a shard with its sidecar; returns the .bin path."""
    if dtype not in DTYPES:
        raise DataError(f"shard dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = Path(path)
    array = np.asarray(tokens)
    if array.size and (array.min() < 0 or array.max() > np.iinfo(dtype).max):
        raise DataError(f"{path}: tokens must be between 0 and {np.iinfo(dtype).max} for {dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    array.astype(f"<{np.dtype(dtype).str[1:]}").tofile(path)
    sidecar_path(path).write_text(json.dumps({"dtype": dtype}) + "\n", encoding="utf-8")
    return path


def shard_paths(spec: str | Path) -> list[Path]:
    """A .bin file, or a directory: every .bin file in it (sorted by name)."""
    path = Path(spec)
    if path.is_dir():
        paths = sorted(path.glob("*.bin"))
        if not paths:
            raise DataError(f"{path}: no .bin shards in this directory")
        return paths
    if not path.is_file():
        raise DataError(f"{path}: no such data file. Give data: math or a .bin token shard "
                        "(or a folder of them)")
    if path.suffix != ".bin":
        raise DataError(f"{path}: a token shard must be a .bin file with a .json sidecar "
                        "(see matcher/data/shards.py)")
    return [path]


def open_shard(path: Path, vocab_size: int) -> tuple[np.memmap, int]:
    """A validated read-only memmap of one shard (known dtype, whole tokens, not empty, every token
    below `vocab_size`, checked once in chunks) and the highest token id in it."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise DataError(f'{path}: no sidecar {sidecar.name} beside it; write {{"dtype": "uint16"}} '
                        "(or uint32) there")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{sidecar}: not valid JSON; expected {{\"dtype\": \"uint16\"}}") from None
    dtype = meta.get("dtype") if isinstance(meta, dict) else None
    if dtype not in DTYPES:
        raise DataError(f"{sidecar}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    itemsize = np.dtype(dtype).itemsize
    size_bytes = path.stat().st_size
    if size_bytes == 0:
        raise DataError(f"{path}: the shard is empty")
    if size_bytes % itemsize:
        raise DataError(f"{path}: {size_bytes} bytes is not a whole number of {dtype} tokens; "
                        f"is the dtype in {sidecar.name} right?")
    tokens = np.memmap(path, dtype=f"<{np.dtype(dtype).str[1:]}", mode="r")
    highest = 0
    for start in range(0, len(tokens), _SCAN_TOKENS):
        chunk = tokens[start:start + _SCAN_TOKENS]
        highest = max(highest, int(chunk.max()))
        if highest >= vocab_size:
            at = start + int(np.argmax(chunk >= vocab_size))
            raise DataError(f"{path}: token {int(tokens[at])} at position {at} is outside the model's "
                            f"vocabulary (vocab_size {vocab_size}); was it written with another tokenizer?")
    return tokens, highest


def encode_files(inputs: list[Path], out: Path) -> tuple[Path, int, int]:
    """Tokenize text into one shard with matcher's character tokenizer, the one evaluation uses, so a
    model trained on it can be scored on GSM8K-style JSONL. Each document becomes BOS text EOS:
    - .jsonl with "question" and "answer": each problem as `Q: <question> A: <answer>` (the format the
      eval prompts with);
    - .jsonl with "text": each record's text;
    - any other file: its whole text, one document.
    Returns (shard path, documents, tokens)."""
    from matcher.data.problems import Problem, document_text, is_problem, jsonl_records
    from matcher.data.tokenizer import encode_document

    tokens: list[int] = []
    documents = 0
    for path in inputs:
        if not path.is_file():
            raise DataError(f"{path}: no such file to encode")
        if path.suffix != ".jsonl":
            tokens += encode_document(path.read_text(encoding="utf-8", errors="replace"))
            documents += 1
            continue
        for where, record in jsonl_records(path):
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                text = record["text"]
            elif is_problem(record):
                text = document_text(Problem(record["question"].strip(), record["answer"].strip(), ""))
            else:
                raise DataError(f'{where}: expected an object with a string "text", or string "question" '
                                'and "answer"')
            tokens += encode_document(text)
            documents += 1
    if not tokens:
        raise DataError(f"nothing to encode in {', '.join(map(str, inputs))}: the files hold no documents")
    return write_shard(out, tokens, "uint16"), documents, len(tokens)
