"""Validation loss in training: at every eval point, on the same val windows for every run."""

import json
import math

import numpy as np

from matcher.data.encode import VAL_FOLDER, encode_corpus
from matcher.data.tokenizer import CHAR
from matcher.run.trainer import train_run
from matcher.run.validation import VAL_ROWS, val_windows
from tests.tiny_runs import prepare, tiny_run, tiny_train


def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    texts = [f"x={i}; y=x+{i % 5}; so y={i + i % 5}. " * 3 for i in range(400)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "shards"
    encode_corpus([path], CHAR, out, progress=False, val_fraction=0.3, split_seed=1)
    return out


def test_val_windows_are_fixed_and_come_from_the_val_split_only(tmp_path):
    out = corpus(tmp_path)
    windows = val_windows(str(out), seq_len=64, vocab_size=128, tokenizer=CHAR)
    assert windows.shape == (VAL_ROWS, 65)
    assert np.array_equal(windows, val_windows(str(out), seq_len=64, vocab_size=128, tokenizer=CHAR))
    def text(tokens):  # every token's text (decode stops at a document's end)
        return "".join(CHAR.decode([token]) for token in tokens.tolist())

    val_text = text(np.fromfile(next((out / VAL_FOLDER).glob("shard-*.bin")), dtype="<u2"))
    train_text = text(np.fromfile(next(out.glob("shard-*.bin")), dtype="<u2"))
    for window in windows:
        piece = text(window[20:50])
        assert piece in val_text and piece not in train_text
    assert val_windows("math", seq_len=64, vocab_size=128, tokenizer=CHAR) is None
    plain = tmp_path / "plain"
    encode_corpus([tmp_path / "docs.jsonl"], CHAR, plain, progress=False)
    assert val_windows(str(plain), seq_len=64, vocab_size=128, tokenizer=CHAR) is None


def test_every_eval_point_logs_val_loss_on_the_same_tokens_for_every_run(tmp_path):
    out = corpus(tmp_path)
    lines = {}
    for name, seed, lr in (("a", 0, 3e-3), ("b", 1, 1e-2)):
        train = tiny_train(data=str(out), seed=seed, lr=lr, n_evals=2, total_tokens=8 * 8 * 64)
        run = tiny_run("la-tiny", train)
        run.name = run.group = name
        run_dir = prepare(tmp_path / "results", run)
        assert train_run(run_dir.path).state == "finished"
        lines[name] = [line for line in run_dir.read_metrics() if line["event"] == "eval"]
    for evals in lines.values():
        assert len(evals) == 2
        for line in evals:
            assert math.isfinite(line["val_loss"]) and line["val_loss"] > 0
            assert line["val_tokens"] == VAL_ROWS * 64
            assert line["val_bpb"] > 0
    # the same windows: the same target tokens and bytes, so val_bpb / val_loss is one ratio for every run,
    # targets / (ln 2 x the bytes of every target token's text), documents after the first included
    ratios = {round(line["val_bpb"] / line["val_loss"], 9) for evals in lines.values() for line in evals}
    windows = val_windows(str(out), seq_len=64, vocab_size=128, tokenizer=CHAR)
    assert any(CHAR.eos_id in row[1:-1] for row in windows)
    target_bytes = sum(len(CHAR.decode([token])) for row in windows for token in row[1:].tolist())
    assert ratios == {round(windows[:, 1:].size / (math.log(2) * target_bytes), 9)}
    assert lines["a"][-1]["val_loss"] != lines["b"][-1]["val_loss"]
