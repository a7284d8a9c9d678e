"""`matcher data encode`: token shards for real corpora (matcher/data/encode.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from matcher.console import notice, out


def encode_command(inputs: list[Path], folder: Path, tokenizer_spec: str, shard_tokens: int, force: bool) -> None:
    from matcher.data.encode import encode_corpus
    from matcher.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec)
    try:
        result = encode_corpus(inputs, tokenizer, folder, shard_tokens=shard_tokens, force=force)
    except KeyboardInterrupt:
        notice(f"interrupted: {folder} keeps the shards already listed in its manifest; run the same "
                    "command again to resume")
        raise typer.Exit(130) from None
    manifest = result.manifest
    lost = manifest["unrepresentable"]
    if lost["characters"]:
        notice(f"{lost['characters']:,} characters could not be represented by the {tokenizer.describe()} and "
               f"were replaced (the first: {lost['first']}); use a tokenizer that covers them (a byte-level "
               "BPE represents any text)")
    empty = manifest["empty_documents"]
    if empty["documents"]:
        notice(f"skipped {empty['documents']:,} empty document(s) (no text but whitespace; the first: "
               f"{empty['first']}); they are counted in {folder / 'manifest.json'} as empty_documents")
    if result.resumed_tokens:
        notice(f"resumed: {result.resumed_tokens:,} tokens were already in complete shards")
    mask = ", with a loss mask (train.loss_on: answers)" if manifest["loss_mask"] else ""
    out().print(f"wrote {folder}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in "
                f"{len(manifest['shards'])} shard(s) ({manifest['dtype']}, {tokenizer.describe()}){mask}; "
                f"train on it with `--set train.data={folder}` at plan time or `data: {folder}` in a sweep",
                markup=False)
