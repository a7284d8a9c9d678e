"""Contamination check: which eval items share an n-gram of tokens (default 13, as GPT-3's and the
harness's decontamination) with a training corpus's shards.

- An item's text is its question (or problem) with its answer (solution, choices), encoded with the
  tokenizer that wrote the shards (the manifest's; the character tokenizer for legacy shards), so an
  item and the corpus are compared in the same tokens. An item shorter than n tokens has no n-gram and
  is reported as too short, never as clean.
- The corpus is read once, in chunks: every n-gram's 64-bit polynomial hash is looked up among the
  items' hashes (numpy, no Python loop over tokens). Two different n-grams share a hash with odds of
  about 2^-64 per pair: negligible, so a hit is reported without re-reading the tokens.
- `plan` and `run` warn when more than OVERLAP_WARN_FRACTION of a sweep's eval items overlap its
  training data; a result is cached beside the shards' manifest, keyed by the eval file's hash and n.
"""

# Function-local imports: numpy and the shard reader, only when shards are checked, so `matcher plan` starts without
# them.

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from matcher.atomic import sha256_file, write_text_atomic
from matcher.data.math_task import MATH_DATA
from matcher.data.problems import jsonl_records
from matcher.data.tokenizer import CHAR, load_tokenizer
from matcher.errors import DataError

DEFAULT_N = 13
OVERLAP_WARN_FRACTION = 0.01  # plan/run warn above this share of eval items overlapping the training data
_CHUNK_TOKENS = 1 << 22
_BASE = 0x9E3779B97F4A7C15  # an odd 64-bit multiplier: the polynomial hash's base
_TEXT_FIELDS = ("question", "problem", "text", "answer", "solution")


@dataclass
class ItemOverlap:
    id: str
    ngrams: int  # the item's distinct n-grams (0: shorter than n tokens)
    found: int  # of those, how many occur in the corpus

    @property
    def contaminated(self) -> bool:
        return self.found > 0


def item_text(record: dict) -> str:
    parts = [record[key] for key in _TEXT_FIELDS if isinstance(record.get(key), str)]
    if isinstance(record.get("choices"), list):
        parts += [c for c in record["choices"] if isinstance(c, str)]
    return "\n".join(parts)


def ngram_hashes(tokens, n: int):
    """The polynomial hash (mod 2^64) of each n-gram of `tokens`, in order."""
    import numpy as np

    tokens = np.asarray(tokens, dtype=np.uint64)
    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * np.uint64(_BASE) + tokens[k:k + count]
    return hashes


def corpus_tokenizer(corpus: Path):
    from matcher.data.shards import MANIFEST

    manifest = corpus / MANIFEST
    if not manifest.is_file():
        return CHAR
    recorded = json.loads(manifest.read_text(encoding="utf-8")).get("tokenizer") or {}
    tokenizer = load_tokenizer(recorded.get("path") or "char")
    if recorded.get("hash") and recorded["hash"] != tokenizer.content_hash:
        raise DataError(f"{corpus}: its shards were encoded with {recorded.get('path')}, which has changed since "
                        "(another hash); restore that tokenizer.json, or encode the corpus again")
    return tokenizer


def overlap(corpus: str | Path, eval_file: str | Path, n: int = DEFAULT_N) -> list[ItemOverlap]:
    """Per item of `eval_file` (JSONL), its n-grams and how many of them occur in `corpus`'s shards."""
    import numpy as np

    from matcher.data.shards import open_data

    if n < 1:
        raise DataError(f"--n {n}: an n-gram needs n >= 1 tokens")
    corpus, eval_file = Path(corpus), Path(eval_file)
    if not eval_file.is_file():
        raise DataError(f"{eval_file}: no such eval file; give a JSONL file, one item per line")
    tokenizer = corpus_tokenizer(corpus)
    records = [(where, record) for where, record in jsonl_records(eval_file) if isinstance(record, dict)]
    item_hashes = [np.unique(ngram_hashes(tokenizer.encode(item_text(record)), n)) for _, record in records]
    wanted = np.unique(np.concatenate(item_hashes)) if item_hashes else np.zeros(0, dtype=np.uint64)
    seen = np.zeros(0, dtype=np.uint64)
    for shard in open_data(corpus, vocab_size=1 << 32).tokens:
        for start in range(0, max(1, len(shard) - n + 1), _CHUNK_TOKENS):
            hashes = ngram_hashes(shard[start:start + _CHUNK_TOKENS + n - 1], n)
            seen = np.union1d(seen, hashes[np.isin(hashes, wanted)])
    return [ItemOverlap(f"line {where.rsplit(':', 1)[-1]}", len(hashes), int(np.isin(hashes, seen).sum()))
            for (where, _), hashes in zip(records, item_hashes)]


def cached_overlap(corpus: str | Path, eval_file: str | Path, n: int = DEFAULT_N) -> list[ItemOverlap]:
    """`overlap`, remembered in the corpus folder (keyed by the eval file's sha256 and n) when it is a
    folder that can be written."""
    corpus = Path(corpus)
    cache = corpus / f".overlap-{sha256_file(Path(eval_file))[:16]}-n{n}.json" if corpus.is_dir() else None
    if cache is not None and cache.is_file():
        return [ItemOverlap(**item) for item in json.loads(cache.read_text(encoding="utf-8"))]
    items = overlap(corpus, eval_file, n)
    if cache is not None:
        try:
            write_text_atomic(cache, json.dumps([asdict(item) for item in items]))
        except OSError:  # a read-only corpus: checked again next time
            pass
    return items


def sweep_overlap_warnings(sweep, n: int = DEFAULT_N) -> list[str]:
    """One line per (training data, eval file) pair of the sweep whose items overlap above the
    threshold."""
    lines, checked = [], set()
    for run in sweep.runs:
        train = run.train
        sources = list(train.data) if isinstance(train.data, dict) else [train.data]
        for source in sources:
            key = (source, train.eval_data)
            if source in MATH_DATA or train.eval_data in MATH_DATA or key in checked:
                continue
            checked.add(key)
            items = cached_overlap(source, train.eval_data, n)
            hit = sum(item.contaminated for item in items)
            if items and hit / len(items) > OVERLAP_WARN_FRACTION:
                lines.append(f"{hit} of {len(items)} eval items of {train.eval_data} share a {n}-gram with the "
                             f"training data {source} (run {run.name}); scores on them may be memorised: check "
                             f"with `matcher data overlap {source} {train.eval_data}` and drop those items")
    return lines
