"""`matcher data encode`: token shards for real corpora (matcher/data/encode.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from matcher.console import notice, out


def encode_command(inputs: list[Path], folder: Path, tokenizer_spec: str, shard_tokens: int, force: bool, *,
                   val_fraction: float = 0.0, split_seed: int = 0) -> None:
    from matcher.data.encode import encode_corpus
    from matcher.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec)
    try:
        result = encode_corpus(inputs, tokenizer, folder, shard_tokens=shard_tokens, force=force,
                               val_fraction=val_fraction, split_seed=split_seed)
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
    if result.resumed_tokens:
        notice(f"resumed: {result.resumed_tokens:,} tokens were already in complete shards")
    mask = ", with a loss mask (train.loss_on: answers)" if manifest["loss_mask"] else ""
    if manifest.get("val"):
        val = manifest["val"]
        mask += (f"; held out {val['documents']:,} documents ({val['tokens']:,} tokens) into {folder / val['folder']} "
                 f"(--val-fraction {manifest['split']['val_fraction']:g}, --split-seed {manifest['split']['seed']}): "
                 "training logs val_loss on it")
    out().print(f"wrote {folder}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in "
                f"{len(manifest['shards'])} shard(s) ({manifest['dtype']}, {tokenizer.describe()}){mask}; "
                f"train on it with `--set train.data={folder}` at plan time or `data: {folder}` in a sweep",
                markup=False)
