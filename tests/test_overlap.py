"""`matcher data overlap` and the sweep warning on a constructed contaminated corpus."""

from __future__ import annotations

import json
from types import SimpleNamespace

from matcher.cli import main
from matcher.data.overlap import ngram_hashes, overlap, sweep_overlap_warnings

LEAKED = "A baker sells 12 loaves each hour for 7 hours; how many loaves are sold?"
CLEAN = "Zora paints 3 fences per day for 9 days, then rests; how many fences in all?"


def contaminated(tmp_path):
    """A corpus that holds one eval item's question verbatim, encoded with `matcher data encode`."""
    text = tmp_path / "corpus.txt"
    text.write_text("Some web text about bread.\n" + LEAKED + " The answer is 84.\nMore unrelated prose here.\n")
    assert main(["data", "encode", str(text), "--out", str(tmp_path / "shards")]) == 0
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": LEAKED, "answer": "12 * 7 = 84\n#### 84"},
        {"question": CLEAN, "answer": "3 * 9 = 27\n#### 27"},
        {"question": "2+2?", "answer": "4"}]))  # 8 characters: no 13-gram
    return tmp_path / "shards", eval_file


def test_ngram_hashes_equal_for_equal_ngrams_only():
    hashes = ngram_hashes([1, 2, 3, 1, 2, 3, 4], 3)
    assert len(hashes) == 5 and hashes[0] == hashes[3] and len(set(hashes.tolist())) == 4
    assert len(ngram_hashes([1, 2], 3)) == 0


def test_overlap_finds_the_leaked_item_only(tmp_path, capsys):
    shards, eval_file = contaminated(tmp_path)
    capsys.readouterr()
    items = overlap(shards, eval_file, 13)
    assert [item.id for item in items] == ["line 1", "line 2", "line 3"]
    assert [item.contaminated for item in items] == [True, False, False]
    leaked_ngrams = len(LEAKED) - 13 + 1  # every 13-gram of the question is in the corpus (char tokens)
    assert items[0].found == leaked_ngrams and items[0].ngrams > leaked_ngrams  # the answer's are not
    assert items[2].ngrams == 0
    assert main(["data", "overlap", str(shards), str(eval_file), "--json"]) == 0
    assert [row["contaminated"] for row in json.loads(capsys.readouterr().out)] == [True, False, False]
    assert main(["data", "overlap", str(shards), str(eval_file)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 of 3 items share at least one 13-gram with the corpus; 1 are shorter than 13 tokens" in out
    assert main(["data", "overlap", str(shards), str(eval_file), "--n", "80"]) == 0  # longer than any item
    assert "0 of 3 items share" in " ".join(capsys.readouterr().out.split())


def test_a_sweep_whose_eval_file_overlaps_its_training_data_is_warned(tmp_path):
    shards, eval_file = contaminated(tmp_path)
    train = SimpleNamespace(data=str(shards), eval_data=str(eval_file))
    sweep = SimpleNamespace(runs=[SimpleNamespace(name="la", train=train), SimpleNamespace(name="dr", train=train)])
    warnings = sweep_overlap_warnings(sweep)
    assert len(warnings) == 1  # one per (data, eval file), not per run
    assert "1 of 3 eval items of" in " ".join(warnings[0].split()) and "share a 13-gram" in warnings[0]
    assert list(shards.glob(".overlap-*-n13.json"))  # cached beside the shards
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"question": CLEAN, "answer": "#### 27"}) + "\n")
    assert sweep_overlap_warnings(SimpleNamespace(runs=[SimpleNamespace(
        name="la", train=SimpleNamespace(data=str(shards), eval_data=str(clean)))])) == []
    assert sweep_overlap_warnings(SimpleNamespace(runs=[SimpleNamespace(
        name="la", train=SimpleNamespace(data="math", eval_data=str(eval_file)))])) == []
