"""Token shards on disk. A folder written by `matcher data encode` (matcher/data/encode.py) holds a
manifest.json that lists its shards (`open_data` reads it). The older form, still read with the
character tokenizer: `<name>.bin` holds the tokens as a flat little-endian array, and a sidecar
`<name>.json` beside it says how to read them:

    {"dtype": "uint16"}        # or "uint32" for vocabularies above 65,536

A raw nanoGPT-style `.bin` of uint16 tokens becomes a shard by adding that sidecar. `write_shard`
writes both. Shards are read through numpy memmaps, so they may be larger than memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matcher.errors import DataError

MANIFEST = "manifest.json"  # a shard folder's index, written last by matcher.data.encode
FORMAT = "matcher-shards-1"

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


@dataclass
class ShardSet:
    """The shards of one data source, memory-mapped: tokens, and the loss mask beside them (None: every
    token is a target), with the manifest that describes them (None: legacy .bin + sidecar shards)."""

    spec: str
    tokens: list[np.memmap]
    masks: list[np.memmap] | None
    manifest: dict | None
    highest: int  # the largest token id the data may hold


def open_data(spec: str | Path, vocab_size: int, tokenizer=None) -> ShardSet:
    """The shards of `spec`: a folder written by `matcher data encode` (with manifest.json), or legacy
    .bin shards with .json sidecars. Checked before anything trains: the manifest's tokenizer is the
    run's (same hash), its vocabulary fits the model, every listed file is there and whole."""
    path = Path(spec)
    if path.is_dir() and (path / MANIFEST).is_file():
        return _open_manifest(path, vocab_size, tokenizer)
    if tokenizer is not None and tokenizer.kind != "char":
        if path.is_dir() or path.is_file():
            raise DataError(f"{spec}: no {MANIFEST}, so nothing says which tokenizer wrote these tokens; "
                            f"encode the corpus with `matcher data encode ... --tokenizer {tokenizer.spec} --out DIR`")
    scanned = [open_shard(p, vocab_size) for p in shard_paths(spec)]
    return ShardSet(str(spec), [t for t, _ in scanned], None, None, max(h for _, h in scanned))


def _open_manifest(folder: Path, vocab_size: int, tokenizer) -> ShardSet:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{folder / MANIFEST}: not valid JSON; encode the corpus again with matcher data encode "
                        "--force") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("dtype") not in DTYPES:
        raise DataError(f"{folder / MANIFEST}: not a manifest of `matcher data encode`; encode the corpus again")
    if not manifest.get("complete"):
        raise DataError(f"{folder}: the encode did not finish ({len(manifest.get('shards', []))} shards written); "
                        "run the same `matcher data encode` command again to finish it")
    recorded = manifest.get("tokenizer") or {}
    if tokenizer is not None and recorded.get("hash") != tokenizer.content_hash:
        raise DataError(f"{folder}: the shards were encoded with {recorded.get('path')} (hash "
                        f"{str(recorded.get('hash'))[:12]}), but the run's tokenizer is {tokenizer.spec} (hash "
                        f"{tokenizer.content_hash[:12]}); set train.tokenizer to the one that wrote them, or "
                        "re-encode the corpus with the run's tokenizer")
    highest = int(recorded.get("vocab_size", 0)) - 1
    if highest >= vocab_size:
        raise DataError(f"{folder}: the shards' tokenizer has {highest + 1:,} tokens, but the model's vocab_size "
                        f"is {vocab_size:,}; plan with --tokenizer {recorded.get('path')} (it pads the vocabulary)")
    dtype = "<" + np.dtype(manifest["dtype"]).str[1:]
    tokens, masks = [], [] if manifest.get("loss_mask") else None
    for entry in manifest.get("shards", []):
        for name, itemsize, into, kind in ((entry["file"], np.dtype(dtype).itemsize, tokens, dtype),
                                           (entry.get("mask_file"), 1, masks, np.uint8)):
            if into is None:
                continue
            file = folder / str(name)
            if not file.is_file():
                raise DataError(f"{file}: listed in {MANIFEST} but missing; restore it, or encode the corpus again")
            if file.stat().st_size != entry["tokens"] * itemsize:
                raise DataError(f"{file}: {file.stat().st_size:,} bytes, but {MANIFEST} lists {entry['tokens']:,} "
                                "tokens; the file is damaged: encode the corpus again")
            into.append(np.memmap(file, dtype=kind, mode="r"))
    if not tokens:
        raise DataError(f"{folder}: the manifest lists no shards; encode the corpus again")
    return ShardSet(str(folder), tokens, masks, manifest, highest)
