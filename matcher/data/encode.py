"""`matcher data encode`: a corpus into fixed-size token shards with a manifest.

Inputs, by suffix:
- `.jsonl`: one JSON object per line: `{"text": ...}` (every token is trained on), `{"question",
  "answer"}` (rendered as the eval prompts: `Q: <question> A: <answer>`; only the answer is an answer),
  or chat `{"messages": [{"role", "content"}, ...]}` (each message as `<role>: <content>` on its own
  line; the assistant's contents are the answers);
- `.parquet`: the same fields as columns (needs `pyarrow`: pip install 'matcher[parquet]');
- anything else: a UTF-8 text file, one document (a binary or non-UTF-8 file is refused).

Every document is BOS, its text, EOS; a document with no text but whitespace is skipped and counted
(`empty_documents` in the manifest). Text is read and tokenized in batches (the library's parallel
batch encoding) and written as it comes, so memory is flat in the corpus size, also for one document of
many GB: a text file is handed to the tokenizer in pieces of at most 64 Ki characters, each ending at a
line end; a longer line is cut before a space that starts a word (a boundary of byte-level BPE's
pre-tokenizer), and a line without one at a character. The pieces' tokens, concatenated, are the
document's.

The output folder holds `shard-NNNNN.bin` (little-endian uint16 below 65,536 ids, else uint32), for
JSONL/parquet inputs a `shard-NNNNN.mask` beside each (one uint8 per token: 1 where the token is a
training target under `train.loss_on: answers`), and `manifest.json`: the tokenizer (path, hash,
size), documents, tokens, and each shard's sha256. A shard is written under a temporary name and
renamed only after the manifest lists it; the manifest says `complete: true` only at the end. An
interrupted encode is resumed by running the same command again (shards already listed are checked
and kept; the text before them is tokenized again but not rewritten); a folder of another encode is
replaced only with --force.
"""

# Function-local imports: pyarrow, only for Parquet inputs (an optional package).

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from matcher.atomic import sha256_file, write_text_atomic
from matcher.console import ByteProgress
from matcher.data.problems import document_parts
from matcher.data.shards import FORMAT, MANIFEST
from matcher.data.tokenizer import Tokenizer
from matcher.errors import DataError

DEFAULT_SHARD_TOKENS = 1 << 26  # 64 Mi tokens: 128 MiB as uint16; few files even at 100B tokens
# Each shard costs two files, an fsync and a rewrite of the manifest (which lists every shard before it):
# tiny shards make an encode crawl, and a shard shorter than seq_len + 1 tokens holds no training row.
MIN_SHARD_TOKENS = 1024
BATCH_CHARS = 1 << 20  # text tokenized per encode_batch call
READ_BYTES = 1 << 20  # a text file is read (and split at a line end) in pieces of about this size
MAX_PIECE_CHARS = 1 << 16  # text goes to the tokenizer in pieces of at most this (module docstring); many
# pieces make one batch, which the library encodes on all cores
MASKED_SUFFIXES = (".jsonl", ".parquet")

# A piece of a document: (BOS/TEXT/EOS, text, counted under loss_on: answers); EMPTY stands for a
# skipped document with no text but whitespace
BOS, TEXT, EOS, EMPTY = 0, 1, 2, 3
Piece = tuple[int, str, bool]


def dtype_for(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


# ------------------------------------------------------------------------------------ reading


def record_pieces(record, where: str) -> list[Piece]:
    """The pieces of one JSONL/parquet record (see the module docstring)."""
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return [(TEXT, record["text"], True)]
    if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("question", "answer")):
        prompt, answer = document_parts(record["question"].strip(), record["answer"].strip())
        return [(TEXT, prompt, False), (TEXT, answer, True)]
    messages = record.get("messages") if isinstance(record, dict) else None
    if isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        pieces: list[Piece] = []
        for message in messages:
            if message["role"] == "assistant":
                pieces += [(TEXT, "assistant:", False), (TEXT, " " + message["content"] + "\n", True)]
            else:
                pieces.append((TEXT, f"{message['role']}: {message['content']}\n", False))
        return pieces
    raise DataError(f'{where}: expected an object with a string "text", string "question" and "answer", '
                    'or "messages": a list of {"role", "content"} strings')


def _check_not_binary(path: Path, head: bytes) -> None:
    if b"\0" in head:
        raise DataError(f"{path}: looks like a binary file (it holds NUL bytes); give UTF-8 text, .jsonl "
                        "or .parquet files")


def _piece_end(text: str, start: int, final: bool) -> int:
    """Where the piece of `text` that begins at `start` ends: at the last line end within MAX_PIECE_CHARS;
    in a longer line at its last word start, else after MAX_PIECE_CHARS characters. `start` itself when the
    rest is shorter, holds no line end, and more text is to come (it waits for that)."""
    limit = start + MAX_PIECE_CHARS
    if len(text) <= limit:
        return len(text) if final else max(start, text.rfind("\n", start) + 1)
    cut = text.rfind("\n", start, limit) + 1
    if cut > start:
        return cut
    tail = limit - MAX_PIECE_CHARS // 2  # a word start is searched in the last half piece
    at = text.rfind(" ", tail, limit)
    while at > tail and (text[at - 1].isspace() or text[at + 1].isspace()):  # one space between two words
        at = text.rfind(" ", tail, at)
    return at if at > tail else limit


def _text_pieces(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[str, Piece]]:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    line, offset, carry = 1, 0, ""
    held: list[tuple[str, Piece]] | None = []  # whitespace before the first word: the document may be empty
    with path.open("rb") as handle:
        while True:
            raw = handle.read(READ_BYTES)
            if offset == 0:
                _check_not_binary(path, raw[:8192])
            try:
                text = carry + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as error:
                raise DataError(f"{path}: not UTF-8 text (byte {offset + error.start}); give UTF-8 text, "
                                ".jsonl or .parquet files") from None
            offset += len(raw)
            advance(len(raw))
            start = 0
            while (cut := _piece_end(text, start, final=not raw)) > start:
                piece = f"{path}:{line}", (TEXT, text[start:cut], True)
                if held is None:
                    yield piece
                elif piece[1][1].isspace():
                    held.append(piece)
                else:
                    yield f"{path}:1", (BOS, "", False)
                    yield from held
                    yield piece
                    held = None
                line += text.count("\n", start, cut)
                start = cut
            carry = text[start:]
            if not raw:
                break
    yield (f"{path}", (EMPTY, "", False)) if held is not None else (f"{path}:{line}", (EOS, "", True))


def _jsonl_pieces(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[str, Piece]]:
    with path.open("rb") as handle:
        _check_not_binary(path, handle.read(8192))
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            advance(len(raw))
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{path}:{number}: not UTF-8 text; each line must be one JSON object") from None
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
            yield from _document(where, record_pieces(record, where))


def _parquet_pieces(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[str, Piece]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'matcher[parquet]' "
                        "(or pyarrow)") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises its own ArrowInvalid on a damaged file
        raise DataError(f"{path}: not a readable parquet file ({error})") from None
    names = set(table.schema_arrow.names)
    columns = next((c for c in (["text"], ["question", "answer"], ["messages"]) if set(c) <= names), None)
    if columns is None:
        raise DataError(f"{path}: expected a column text, question and answer, or messages; "
                        f"it has {', '.join(sorted(names))}")
    rows = max(1, table.metadata.num_rows)
    size = path.stat().st_size
    number = 0
    for batch in table.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            number += 1
            where = f"{path}: row {number}"
            yield from _document(where, record_pieces(record, where))
        advance(size * batch.num_rows // rows)


def _document(where: str, pieces: list[Piece]) -> Iterator[tuple[str, Piece]]:
    if all(not text.strip() for _, text, _ in pieces):
        yield where, (EMPTY, "", False)
        return
    yield where, (BOS, "", False)
    for piece in pieces:
        yield where, piece
    yield where, (EOS, "", True)


def check_input(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path} is a folder; give the files in it to encode, e.g. {path / '*.jsonl'} "
                        f"or {path / '*.txt'}")
    if not path.is_file():
        raise DataError(f"{path}: no such file to encode")


def input_pieces(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[str, Piece]]:
    check_input(path)
    if path.suffix == ".jsonl":
        return _jsonl_pieces(path, advance)
    if path.suffix == ".parquet":
        return _parquet_pieces(path, advance)
    return _text_pieces(path, advance)


# ------------------------------------------------------------------------------------ writing


@dataclass
class Unrepresentable:
    """Characters the tokenizer could not represent (and replaced), and where the first one was."""

    characters: int = 0
    first: str | None = None

    def add(self, tokenizer: Tokenizer, where: str, text: str, ids: list[int]) -> None:
        count = tokenizer.unrepresentable(text, ids)
        if not count:
            return
        self.characters += count
        if self.first is None:
            at = next((i for i, c in enumerate(text) if tokenizer.unrepresentable(c)), 0)
            self.first = f"{where}: {text[max(0, at - 20):at + 20]!r}"


@dataclass
class ShardWriter:
    """Tokens (and masks) into fixed-size shards under temporary names; a shard is renamed to its final
    name only after the manifest, written atomically, lists it with its sha256."""

    out: Path
    manifest: dict
    shard_tokens: int
    masked: bool
    skip_tokens: int = 0  # already in listed shards (a resumed encode)
    documents: int = 0
    tokens: int = 0
    empty_documents: int = 0  # skipped: no text but whitespace
    first_empty: str | None = None  # where the first one was
    _handle: object = None
    _mask_handle: object = None
    _hashes: list = field(default_factory=list)
    _in_shard: int = 0
    _docs_in_shard: int = 0

    def _name(self, index: int, suffix: str) -> str:
        return f"shard-{index:05d}{suffix}"

    def _open(self) -> None:
        index = len(self.manifest["shards"])
        self._handle = (self.out / (self._name(index, ".bin") + ".tmp")).open("wb")
        self._mask_handle = (self.out / (self._name(index, ".mask") + ".tmp")).open("wb") if self.masked else None
        self._hashes = [hashlib.sha256(), hashlib.sha256()]
        self._in_shard = self._docs_in_shard = 0

    def add(self, tokens: np.ndarray, mask: np.ndarray, starts: np.ndarray) -> None:
        """A batch of tokens, their mask, and the offsets where its documents begin."""
        self.documents += len(starts)
        self.tokens += len(tokens)
        if self.skip_tokens:  # a resumed encode: these are in shards already listed
            cut = min(self.skip_tokens, len(tokens))
            self.skip_tokens -= cut
            tokens, mask, starts = tokens[cut:], mask[cut:], starts[starts >= cut] - cut
        position = 0
        while position < len(tokens):
            if self._handle is None:
                self._open()
            take = min(len(tokens) - position, self.shard_tokens - self._in_shard)
            part = tokens[position:position + take].astype(self.manifest["dtype"]).astype(
                "<" + np.dtype(self.manifest["dtype"]).str[1:]).tobytes()
            self._handle.write(part)
            self._hashes[0].update(part)
            if self.masked:
                mask_part = mask[position:position + take].astype(np.uint8).tobytes()
                self._mask_handle.write(mask_part)
                self._hashes[1].update(mask_part)
            self._docs_in_shard += int(((starts >= position) & (starts < position + take)).sum())
            self._in_shard += take
            position += take
            if self._in_shard == self.shard_tokens:
                self._close_shard()

    def _close_shard(self) -> None:
        index = len(self.manifest["shards"])
        entry = {"file": self._name(index, ".bin"), "tokens": self._in_shard, "documents": self._docs_in_shard,
                 "sha256": self._hashes[0].hexdigest()}
        handles = [self._handle] + ([self._mask_handle] if self.masked else [])
        if self.masked:
            entry.update(mask_file=self._name(index, ".mask"), mask_sha256=self._hashes[1].hexdigest())
        for handle in handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._handle = self._mask_handle = None
        self.manifest["shards"].append(entry)
        self.manifest["tokens"] = sum(s["tokens"] for s in self.manifest["shards"])
        self.manifest["documents"] = sum(s["documents"] for s in self.manifest["shards"])
        write_manifest(self.out, self.manifest)
        for name in filter(None, (entry["file"], entry.get("mask_file"))):
            os.replace(self.out / (name + ".tmp"), self.out / name)

    def finish(self) -> None:
        if self._handle is not None and self._in_shard:
            self._close_shard()

    def abandon(self) -> None:
        """After an interrupt: the shard being written is removed (a rerun writes it again)."""
        for handle in (self._handle, self._mask_handle):
            if handle is not None:
                handle.close()
                Path(handle.name).unlink(missing_ok=True)


VAL_FOLDER = "val"  # the held-out split: a shard folder of its own inside the output folder


def _document_keys(documents: np.ndarray, seed: int) -> np.ndarray:
    """A seeded hash (splitmix64) of each document index, uniform on [0, 1)."""
    def mix(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            x = x + np.uint64(0x9E3779B97F4A7C15)
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            return x ^ (x >> np.uint64(31))

    keyed = mix(np.asarray(documents, dtype=np.uint64) ^ mix(np.asarray([seed], dtype=np.uint64)))
    return (keyed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def held_out(documents: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each document index falls into the val split: its seeded hash below `fraction`. A
    document's fate depends on its index and the seed only, so the choice is the same on every machine
    and in a resumed encode, and needs no count of the documents in advance."""
    return _document_keys(documents, seed) < fraction


KEY_CHUNK = 1 << 22  # document indices hashed at once when choosing --val-docs: flat memory in the corpus


def held_out_documents(total: int, count: int, seed: int) -> np.ndarray:
    """The `count` document indices (of `total`) with the smallest seeded hashes, sorted: exactly `count`
    whole documents, as random as held_out's, and the same for the same total and seed."""
    best_keys, best = np.empty(0), np.empty(0, dtype=np.int64)
    for start in range(0, total, KEY_CHUNK):
        indices = np.arange(start, min(total, start + KEY_CHUNK), dtype=np.int64)
        keys = np.concatenate([best_keys, _document_keys(indices, seed)])
        indices = np.concatenate([best, indices])
        keep = np.argsort(keys, kind="stable")[:count]
        best_keys, best = keys[keep], indices[keep]
    return np.sort(best)


def count_documents(inputs: list[Path]) -> int:
    """The documents the inputs hold (empty ones aside, as the shards count them): one read, no tokenizing."""
    return sum(1 for path in inputs for _, (kind, _, _) in input_pieces(path, lambda _: None) if kind == BOS)


@dataclass
class DocumentSplit:
    """Whole documents to one of two shard writers: `val` where held_out says so (or for the `listed`
    indices), else `train`. Takes the
    ShardWriter's batches (tokens, mask, document starts); a batch's leading tokens continue the last
    document of the batch before."""

    train: ShardWriter
    val: ShardWriter
    fraction: float  # held_out's share; 0 when the documents are listed
    seed: int
    listed: np.ndarray | None = None  # the held-out document indices (--val-docs), sorted
    seen_documents: int = 0
    empty_documents: int = 0  # skipped before the split (no text but whitespace): in neither
    first_empty: str | None = None

    @property
    def option(self) -> str:
        """The command-line option that made the split, for messages."""
        return f"--val-docs {len(self.listed)}" if self.listed is not None else f"--val-fraction {self.fraction:g}"

    @property
    def tokens(self) -> int:
        return self.train.tokens

    @property
    def documents(self) -> int:
        return self.train.documents

    def add(self, tokens: np.ndarray, mask: np.ndarray, starts: np.ndarray) -> None:
        positions = np.arange(len(tokens))
        document = self.seen_documents - 1 + np.searchsorted(starts, positions, side="right")
        document = np.maximum(document, 0)
        to_val = (np.isin(document, self.listed) if self.listed is not None
                  else held_out(document, self.fraction, self.seed))
        self.seen_documents += len(starts)
        for writer, chosen in ((self.train, ~to_val), (self.val, to_val)):
            before = np.cumsum(chosen) - chosen  # chosen tokens before each position
            kept_starts = starts[chosen[starts]]
            writer.add(tokens[chosen], mask[chosen], before[kept_starts])

    def finish(self) -> None:
        self.train.finish()
        self.val.finish()

    def abandon(self) -> None:
        self.train.abandon()
        self.val.abandon()


def write_manifest(out: Path, manifest: dict) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")



def _identity(manifest: dict) -> dict:
    keys = ("format", "tokenizer", "dtype", "shard_tokens", "loss_mask", "inputs", "split")
    return {k: manifest.get(k) for k in keys}


def _prepare_out(out: Path, manifest: dict, force: bool) -> int:
    """Make `out` ready for this encode; returns the tokens already written (a resume)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for the shards and their manifest")
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    ours = [p for p in out.iterdir() if p.name == MANIFEST or p.name.startswith("shard-")]
    others = [p for p in out.iterdir() if p not in ours and not p.name.startswith(f".{MANIFEST}.")
              and not (p.name == VAL_FOLDER and p.is_dir() and manifest.get("split"))]  # the val split's own
    if others:
        raise DataError(f"--out {out} holds other files ({others[0].name}, ...); give an empty or new folder")
    if not path.is_file():  # partial shards (.tmp) of an encode killed before its first shard: ours to remove
        if any(not p.name.endswith(".tmp") for p in ours) and not force:
            raise DataError(f"--out {out} holds shards but no manifest; pass --force to replace them")
        for p in ours:
            p.unlink()
        return 0
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = {}
    same = isinstance(old, dict) and _identity(old) == _identity(manifest)
    if same and old.get("complete") and not force:
        raise DataError(f"{out} already holds a complete encode of these inputs ({old.get('tokens', 0):,} tokens); "
                        f"train on it with `data: {out}`, or pass --force to encode again")
    if not same and not force:
        raise DataError(f"{out} holds an encode of other inputs or settings; pass --force to replace it, "
                        "or choose another --out")
    if not same or old.get("complete"):
        for p in ours:
            p.unlink()
        return 0
    kept = []  # a resume: keep each listed shard that is whole (a kill between manifest and rename: rename now)
    for entry in old.get("shards", []):
        files = [(entry["file"], entry["sha256"])] + ([(entry["mask_file"], entry["mask_sha256"])]
                                                       if entry.get("mask_file") else [])
        whole = True
        for name, digest in files:
            final, tmp = out / name, out / (name + ".tmp")
            if not final.is_file() and tmp.is_file() and sha256_file(tmp) == digest:
                os.replace(tmp, final)
            whole = whole and final.is_file() and sha256_file(final) == digest
        if not whole:
            break
        kept.append(entry)
    keep_names = {name for e in kept for name in (e["file"], e.get("mask_file")) if name}
    for p in out.iterdir():
        if p.name.startswith("shard-") and p.name not in keep_names:
            p.unlink()
    manifest["shards"] = kept
    write_manifest(out, {**manifest, "tokens": sum(e["tokens"] for e in kept),
                         "documents": sum(e["documents"] for e in kept)})
    return sum(e["tokens"] for e in kept)


@dataclass
class EncodeResult:
    out: Path
    manifest: dict
    resumed_tokens: int


def encode_corpus(inputs: list[Path], tokenizer: Tokenizer, out: Path, *, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                  force: bool = False, progress: bool = True, val_fraction: float = 0.0,
                  val_docs: int = 0, split_seed: int = 0) -> EncodeResult:
    """Encode `inputs` into shards in `out` (see the module docstring). `val_fraction` > 0 holds that
    share of whole documents out into a val split, OUT/val (a shard folder with its own manifest), chosen
    by held_out(document index, val_fraction, split_seed); `val_docs` > 0 holds exactly that many out
    instead (held_out_documents, after counting the documents); the main manifest records the split."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"--val-fraction is the share of documents held out, at least 0 and below 1, got "
                        f"{val_fraction:g}")
    if val_docs < 0:
        raise DataError(f"--val-docs is a number of documents to hold out, at least 1, got {val_docs}")
    if val_fraction and val_docs:
        raise DataError("--val-fraction and --val-docs both size the val split: give one of them")
    if not inputs:
        raise DataError("give at least one input file to encode")
    if shard_tokens < MIN_SHARD_TOKENS:
        raise DataError(f"--shard-tokens {shard_tokens:,} is too small: every shard costs two files, an fsync and "
                        f"a manifest rewrite, and one shorter than seq_len + 1 tokens holds no training row; give "
                        f"at least {MIN_SHARD_TOKENS:,} (the default, {DEFAULT_SHARD_TOKENS:,}, suits any corpus)")
    for path in inputs:
        check_input(path)
    manifest = {
        "format": FORMAT, "complete": False, "tokenizer": tokenizer.record(),
        "dtype": dtype_for(tokenizer.vocab_size), "shard_tokens": shard_tokens,
        "loss_mask": any(p.suffix in MASKED_SUFFIXES for p in inputs),
        # what a rerun must find unchanged to resume
        "inputs": [{"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in inputs],
        "documents": 0, "tokens": 0, "shards": [],
    }
    listed = None
    if val_docs:
        total = count_documents(inputs)
        if val_docs >= total:
            raise DataError(f"--val-docs {val_docs:,}: the inputs hold {total:,} document(s) (empty ones aside), "
                            f"so no training document would be left; hold out at most {total - 1:,}, or encode "
                            "more documents")
        listed = held_out_documents(total, val_docs, split_seed)
        manifest["split"] = {"val_docs": val_docs, "seed": split_seed, "folder": VAL_FOLDER}
    elif val_fraction:
        manifest["split"] = {"val_fraction": val_fraction, "seed": split_seed, "folder": VAL_FOLDER}
    resumed = _prepare_out(out, manifest, force)
    writer: ShardWriter | DocumentSplit = ShardWriter(out, manifest, shard_tokens, manifest["loss_mask"],
                                                      skip_tokens=resumed)
    if "split" in manifest:
        val_manifest = {**manifest, "split": {**manifest["split"], "of": "val"}, "shards": []}
        val_resumed = _prepare_out(out / VAL_FOLDER, val_manifest, force)
        writer = DocumentSplit(writer, ShardWriter(out / VAL_FOLDER, val_manifest, shard_tokens, manifest["loss_mask"],
                                                   skip_tokens=val_resumed), val_fraction, split_seed, listed)
    unrepresentable = Unrepresentable()
    total_bytes = sum(p.stat().st_size for p in inputs)

    bar = ByteProgress("encoding", total_bytes, enabled=progress)

    # The library tokenizes a batch (on all cores, without the GIL) while the next one is read.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="matcher-encode")
    pending = None
    try:
        with bar:
            advance = bar.advance
            batch: list[tuple[str, Piece]] = []
            chars = 0
            for path in inputs:
                for where, piece in input_pieces(path, advance):
                    batch.append((where, piece))
                    chars += len(piece[1])
                    if chars >= BATCH_CHARS:  # pieces are tokenized one by one: any boundary will do
                        pending = _submit(pool, pending, batch, tokenizer, writer, unrepresentable)
                        batch, chars = [], 0
            pending = _submit(pool, pending, batch, tokenizer, writer, unrepresentable)
            _write_batch(pending, tokenizer, writer, unrepresentable)
            writer.finish()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.abandon()
        raise
    pool.shutdown()
    if isinstance(writer, DocumentSplit):
        _finish_split(writer, out, inputs)
    if writer.tokens == 0 or not manifest["shards"]:
        empty = f" ({writer.empty_documents:,} empty ones skipped)" if writer.empty_documents else ""
        raise DataError(f"nothing to encode in {', '.join(map(str, inputs))}: the files hold no documents{empty}")
    manifest.update(complete=True, documents=writer.documents, tokens=writer.tokens,
                    empty_documents={"documents": writer.empty_documents, "first": writer.first_empty},
                    unrepresentable={"characters": unrepresentable.characters, "first": unrepresentable.first})
    write_manifest(out, manifest)
    return EncodeResult(out, manifest, resumed)


def _finish_split(split: DocumentSplit, out: Path, inputs: list[Path]) -> None:
    """Both splits hold documents: the val manifest is completed, the main one names its size."""
    total = split.seen_documents
    if not split.val.documents or not split.train.documents:
        empty = "val" if not split.val.documents else "train"
        option = split.option.split()[0]
        raise DataError(f"{split.option} left the {empty} split empty ({total:,} documents in "
                        f"{', '.join(map(str, inputs))}); {'raise' if empty == 'val' else 'lower'} {option} "
                        "or encode more documents")
    val = split.val.manifest
    val.update(complete=True, documents=split.val.documents, tokens=split.val.tokens)
    write_manifest(out / VAL_FOLDER, val)
    split.train.manifest["val"] = {"folder": VAL_FOLDER, "documents": split.val.documents, "tokens": split.val.tokens}


def _submit(pool, pending, batch: list[tuple[str, Piece]], tokenizer: Tokenizer, writer: ShardWriter,
            unrepresentable: Unrepresentable):
    """Start tokenizing `batch`, then write the batch before it (in order); returns the new pending one."""
    texts = [piece[1] for _, piece in batch if piece[0] == TEXT]
    started = (batch, pool.submit(tokenizer.encode_batch, texts))
    _write_batch(pending, tokenizer, writer, unrepresentable)
    return started


def _write_batch(pending, tokenizer: Tokenizer, writer: ShardWriter, unrepresentable: Unrepresentable) -> None:
    if pending is None or not pending[0]:
        return
    batch, future = pending
    encoded = iter(future.result())
    flat: list[int] = []
    lengths, counted, starts = [], [], []
    for where, (kind, text, count) in batch:
        if kind == EMPTY:
            writer.empty_documents += 1
            writer.first_empty = writer.first_empty or where
            continue
        if kind == TEXT:
            ids = next(encoded)
            unrepresentable.add(tokenizer, where, text, ids)
        else:
            ids = [tokenizer.bos_id if kind == BOS else tokenizer.eos_id]
            if kind == BOS:
                starts.append(len(flat))
        flat.extend(ids)
        lengths.append(len(ids))
        counted.append(count)
    tokens = np.asarray(flat, dtype=np.int64)
    mask = np.repeat(np.asarray(counted, dtype=np.uint8), lengths)
    writer.add(tokens, mask, np.asarray(starts, dtype=np.int64))
