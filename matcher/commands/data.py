"""`matcher data encode`: token shards for real corpora."""

from __future__ import annotations

from pathlib import Path

from matcher.console import out
from matcher.errors import DataError


def encode_command(inputs: list[Path], shard: Path, force: bool) -> None:
    from matcher.data.shards import encode_files

    if shard.suffix != ".bin":
        raise DataError(f"--out {shard}: a shard is a .bin file, e.g. data/train.bin")
    if shard.exists() and not force:
        raise DataError(f"{shard} exists; pass --force to overwrite it, or choose another --out")
    path, documents, tokens = encode_files(inputs, shard)
    out().print(f"wrote {path}: {documents:,} documents, {tokens:,} tokens (uint16, character tokenizer); "
                f"train on it with `data: {path}` in a sweep's train settings")
