"""`matcher data encode --val-fraction`: whole documents held out into a val split, deterministically."""

import json

import numpy as np
import pytest

from matcher.cli import main
from matcher.data import shards
from matcher.data.encode import VAL_FOLDER, encode_corpus, held_out, held_out_documents
from matcher.data.tokenizer import CHAR
from matcher.errors import DataError


def write_corpus(folder, documents=60):
    """JSONL documents, each a distinct text made of its own number, so a document is recognised in the shards."""
    path = folder / "corpus docs.jsonl"
    texts = [f"document {i:03d}: " + "abc " * (i % 7 + 1) for i in range(documents)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path, texts


def documents_in(folder):
    """The texts of the documents of a shard folder, in order: between BOS and EOS."""
    data = shards.open_data(folder, 128, CHAR)
    tokens = np.concatenate([np.asarray(t) for t in data.tokens]).tolist()
    texts, current = [], None
    for token in tokens:
        if token == CHAR.bos_id:
            current = []
        elif token == CHAR.eos_id:
            texts.append(CHAR.decode(current))
            current = None
        else:
            current.append(token)
    assert current is None  # every document is whole
    return texts


def test_whole_documents_are_held_out_and_never_overlap_train(tmp_path):
    path, texts = write_corpus(tmp_path, documents=400)
    out = tmp_path / "shards out"
    # the smallest shards, so documents straddle shard boundaries
    manifest = encode_corpus([path], CHAR, out, shard_tokens=1024, progress=False, val_fraction=0.25,
                             split_seed=3).manifest
    train, val = documents_in(out), documents_in(out / VAL_FOLDER)
    assert set(train).isdisjoint(val) and sorted(train + val) == sorted(texts)
    chosen = held_out(np.arange(len(texts)), 0.25, 3)
    assert val == [t for t, c in zip(texts, chosen) if c] and train == [t for t, c in zip(texts, chosen) if not c]
    assert 0 < len(val) < len(texts) and len(manifest["shards"]) > 1
    assert manifest["documents"] == len(train) and manifest["val"]["documents"] == len(val)
    assert manifest["split"] == {"val_fraction": 0.25, "seed": 3, "folder": VAL_FOLDER}
    val_manifest = json.loads((out / VAL_FOLDER / "manifest.json").read_text(encoding="utf-8"))
    assert val_manifest["complete"] and val_manifest["tokens"] == manifest["val"]["tokens"]


def test_the_choice_is_seeded_and_deterministic(tmp_path):
    path, texts = write_corpus(tmp_path)
    vals = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        encode_corpus([path], CHAR, tmp_path / name, progress=False, val_fraction=0.3, split_seed=seed)
        vals.append(documents_in(tmp_path / name / VAL_FOLDER))
    assert vals[0] == vals[1] and vals[0] != vals[2]
    share = held_out(np.arange(100_000), 0.3, 5).mean()
    assert abs(share - 0.3) < 0.01


def test_the_cli_reports_the_split_and_an_empty_split_is_one_message(tmp_path, capsys):
    path, _ = write_corpus(tmp_path)
    assert main(["data", "encode", str(path), "--out", str(tmp_path / "s"), "--val-fraction", "0.2"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "held out" in printed and "training logs val_loss on it" in printed
    (tmp_path / "one").mkdir()
    single, _ = write_corpus(tmp_path / "one", documents=1)
    assert not held_out(np.arange(1), 0.01, 0)[0]
    with pytest.raises(DataError, match="left the val split empty"):
        encode_corpus([single], CHAR, tmp_path / "o", progress=False, val_fraction=0.01)
    with pytest.raises(DataError, match="--val-fraction is the share of documents held out"):
        encode_corpus([path], CHAR, tmp_path / "p", progress=False, val_fraction=1.0)


def test_val_docs_holds_out_exactly_that_many_whole_documents(tmp_path):
    path, texts = write_corpus(tmp_path, documents=400)
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")  # skipped, and not counted as a document
    out = tmp_path / "docs out"
    manifest = encode_corpus([path, tmp_path / "blank.txt"], CHAR, out, shard_tokens=1024, progress=False,
                             val_docs=7, split_seed=3).manifest
    train, val = documents_in(out), documents_in(out / VAL_FOLDER)
    assert len(val) == 7 and set(train).isdisjoint(val) and sorted(train + val) == sorted(texts)
    assert len(manifest["shards"]) > 1  # documents straddle shard boundaries
    chosen = held_out_documents(len(texts), 7, 3)
    assert val == [texts[i] for i in chosen]
    assert manifest["split"] == {"val_docs": 7, "seed": 3, "folder": VAL_FOLDER}
    assert manifest["documents"] == len(texts) - 7 and manifest["val"]["documents"] == 7
    # seeded and spread over the corpus, not its first documents
    assert list(chosen) != list(range(7)) and list(held_out_documents(len(texts), 7, 4)) != list(chosen)
    assert list(held_out_documents(len(texts), 7, 3)) == list(chosen)


def test_the_smallest_hashes_are_found_across_chunks(monkeypatch):
    from matcher.data import encode

    whole = held_out_documents(1000, 25, 9)
    monkeypatch.setattr(encode, "KEY_CHUNK", 64)  # many chunks: the running best must carry over
    assert list(held_out_documents(1000, 25, 9)) == list(whole) and len(set(whole)) == 25


def test_val_docs_errors(tmp_path, capsys):
    path, texts = write_corpus(tmp_path, documents=5)
    with pytest.raises(DataError) as caught:
        encode_corpus([path], CHAR, tmp_path / "a", progress=False, val_docs=5)
    message = " ".join(str(caught.value).split())
    assert "--val-docs 5: the inputs hold 5 document(s)" in message and "hold out at most 4" in message
    with pytest.raises(DataError, match="give one of them"):
        encode_corpus([path], CHAR, tmp_path / "b", progress=False, val_docs=2, val_fraction=0.1)
    with pytest.raises(DataError, match="at least 1"):
        encode_corpus([path], CHAR, tmp_path / "c", progress=False, val_docs=-1)
    assert main(["data", "encode", str(path), "--out", str(tmp_path / "d"), "--val-docs", "2"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "held out 2 documents" in printed and "(--val-docs 2, --split-seed 0)" in printed
