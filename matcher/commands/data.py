"""`matcher data encode`: token shards for real corpora (matcher/data/encode.py); `matcher data overlap`:
eval items that share an n-gram with them (matcher/data/overlap.py)."""

# Function-local imports: the encoder (numpy), only for `data encode`; `data overlap` needs less.

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from matcher.console import notice, out
from matcher.data.overlap import overlap
from matcher.data.tokenizer import load_tokenizer


def encode_command(inputs: list[Path], folder: Path, tokenizer_spec: str, shard_tokens: int, force: bool, *,
                   val_fraction: float = 0.0, val_docs: int = 0, split_seed: int = 0) -> None:
    from matcher.data.encode import encode_corpus

    tokenizer = load_tokenizer(tokenizer_spec)
    try:
        result = encode_corpus(inputs, tokenizer, folder, shard_tokens=shard_tokens, force=force,
                               val_fraction=val_fraction, val_docs=val_docs, split_seed=split_seed)
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
    if manifest.get("val"):
        val, split = manifest["val"], manifest["split"]
        sized = (f"--val-docs {split['val_docs']:,}" if "val_docs" in split
                 else f"--val-fraction {split['val_fraction']:g}")
        mask += (f"; held out {val['documents']:,} documents ({val['tokens']:,} tokens) into {folder / val['folder']} "
                 f"({sized}, --split-seed {split['seed']}): training logs val_loss on it")
    out().print(f"wrote {folder}: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens in "
                f"{len(manifest['shards'])} shard(s) ({manifest['dtype']}, {tokenizer.describe()}){mask}; "
                f"train on it with `--set train.data={folder}` at plan time or `data: {folder}` in a sweep",
                markup=False)


def overlap_command(corpus: Path, eval_file: Path, n: int, as_json: bool) -> list:
    items = overlap(corpus, eval_file, n)
    if as_json:
        out().file.write(json.dumps([{"id": i.id, "ngrams": i.ngrams, "found": i.found,
                                      "contaminated": i.contaminated} for i in items], indent=2) + "\n")
        return items
    table = Table(title=Text(f"{n}-gram overlap of {eval_file} with {corpus}"))
    for header in ("item", f"{n}-grams", "in the corpus", "contaminated"):
        table.add_column(header, justify="left" if header == "item" else "right")
    for item in items:
        table.add_row(Text(item.id), str(item.ngrams), str(item.found),
                      "yes" if item.contaminated else ("too short" if not item.ngrams else "no"))
    out().print(table)
    hit = sum(item.contaminated for item in items)
    short = sum(not item.ngrams for item in items)
    out().print(Text(f"{hit} of {len(items)} items share at least one {n}-gram with the corpus"
                     + (f"; {short} are shorter than {n} tokens and were not checked" if short else "")))
    return items
