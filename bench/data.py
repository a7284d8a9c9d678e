"""Benchmark `matcher data encode`: throughput against the `tokenizers` library's own batch encoding
of the same text, in one run, and peak memory of the encode for corpora of two sizes.

    python bench/data.py [--throughput-mb 4] [--sizes 4,40] [--single-document-mb 0] [--json out.json]

A byte-level BPE (vocabulary 8,192) is trained here on generated text, so nothing is downloaded; the
corpus is generated JSONL `{"text": ...}` of the given size. Throughput: the library encodes the
documents in batches of the same size matcher uses (`encode_batch`, all cores), then `matcher data
encode`'s encode_corpus (the same tokenizer, reading, batching, writing shards and the manifest),
alternated in one process over --repeats rounds, best of each. Peak memory: each encode in its own
process (ru_maxrss of the child).
--single-document-mb N also encodes one .txt document of N MB without a line end (the case a tokenizer
would otherwise get in one piece) and reports its peak memory.
Goals: encode >= 0.8 x the library's throughput; peak memory flat between the two sizes and bounded for
one document of any size.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the model learns to add seven and five over many steps while the river of data keeps flowing "
         "question answer recurrent depth attention mixture expert token budget matched compute memory "
         "naïve café über 日本 2024 3.14 x=y+1").split()


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """JSONL text documents of 200-2,000 characters until the file holds `megabytes`; returns documents."""
    rng = random.Random(seed)
    target, size, documents = int(megabytes * 1e6), 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while size < target:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 400)))
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            handle.write(line)
            size += len(line.encode("utf-8"))
            documents += 1
    return documents


def write_single_document(path: Path, megabytes: float, seed: int = 3) -> None:
    """One line of words, `megabytes` long: one document without a line end."""
    rng = random.Random(seed)
    target, size = int(megabytes * 1e6), 0
    with path.open("w", encoding="utf-8") as handle:
        while size < target:
            text = " ".join(rng.choice(WORDS) for _ in range(1000)) + " "
            handle.write(text)
            size += len(text.encode("utf-8"))


def train_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(1)
    texts = [" ".join(rng.choice(WORDS) for _ in range(200)) for _ in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=8192, special_tokens=["<|endoftext|>"],
                                                       show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))


def library_seconds(corpus: Path, tokenizer: Path) -> tuple[float, int]:
    """The library alone: read the texts, encode them in matcher's batch size (characters)."""
    from tokenizers import Tokenizer

    from matcher.data.encode import BATCH_CHARS

    tok = Tokenizer.from_file(str(tokenizer))
    start = time.perf_counter()
    tokens, batch, chars = 0, [], 0
    with corpus.open(encoding="utf-8") as lines:
        for line in lines:
            text = json.loads(line)["text"]
            batch.append(text)
            chars += len(text)
            if chars >= BATCH_CHARS:
                tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
                batch, chars = [], 0
    tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
    return time.perf_counter() - start, tokens


ENCODE = """
import sys, time, resource
from pathlib import Path
from matcher.data.encode import encode_corpus
from matcher.data.tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[2])
start = time.perf_counter()
result = encode_corpus([Path(sys.argv[1])], tok, Path(sys.argv[3]), force=True, progress=False)
print(time.perf_counter() - start, result.manifest["tokens"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def matcher_encode(corpus: Path, tokenizer: Path, out: Path) -> tuple[float, int, int]:
    """`matcher data encode` in its own process: (seconds, tokens, peak RSS bytes)."""
    done = subprocess.run([sys.executable, "-c", ENCODE, str(corpus), str(tokenizer), str(out)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    seconds, tokens, rss_kib = done.stdout.split()
    return float(seconds), int(tokens), int(rss_kib) * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput-mb", type=float, default=4.0, help="corpus size for the throughput rows")
    parser.add_argument("--sizes", default="4,40", help="two corpus sizes in MB for the peak-memory rows")
    parser.add_argument("--single-document-mb", type=float, default=0.0,
                        help="also the peak memory of one document of this size without a line end (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = tmp / "tokenizer.json"
        train_tokenizer(tokenizer)
        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.throughput_mb)
        from matcher.data.encode import encode_corpus
        from matcher.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
        library, ours = [], []
        for _ in range(args.repeats):  # alternated in one process: a busy machine slows both alike
            library.append(library_seconds(corpus, tokenizer))
            start = time.perf_counter()
            result = encode_corpus([corpus], tok, tmp / "shards", force=True, progress=False)
            ours.append(time.perf_counter() - start)
        lib_s, tokens = min(library)
        our_s, our_tokens = min(ours), result.manifest["tokens"]
        documents = sum(1 for _ in corpus.open())
        assert our_tokens == tokens + 2 * documents, "matcher's tokens are the library's plus BOS/EOS"
        rows = {"throughput_mb": args.throughput_mb, "tokens": tokens,
                "library_tokens_per_s": tokens / lib_s, "matcher_tokens_per_s": tokens / our_s,
                "ratio": lib_s / our_s, "peak_rss_bytes": {}}
        print(f"encode {args.throughput_mb:g} MB ({tokens:,} tokens): library encode_batch {tokens / lib_s:,.0f} "
              f"tokens/s, matcher data encode {tokens / our_s:,.0f} tokens/s: {lib_s / our_s:.2f}x (goal >= 0.8x)")
        for size in sizes:
            big = tmp / f"corpus-{size:g}.jsonl"
            write_corpus(big, size, seed=2)
            seconds, count, rss = matcher_encode(big, tokenizer, tmp / f"shards-{size:g}")
            big.unlink()
            rows["peak_rss_bytes"][f"{size:g}"] = rss
            print(f"peak memory, {size:g} MB corpus ({count:,} tokens, {seconds:.1f} s): {rss / 2**20:.0f} MiB")
        if args.single_document_mb:
            one = tmp / "one-document.txt"
            write_single_document(one, args.single_document_mb)
            seconds, count, rss = matcher_encode(one, tokenizer, tmp / "shards-one")
            rows["single_document"] = {"megabytes": args.single_document_mb, "peak_rss_bytes": rss}
            print(f"peak memory, one {args.single_document_mb:g} MB document without a line end ({count:,} tokens, "
                  f"{seconds:.1f} s): {rss / 2**20:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
