"""Validation loss in training: at every eval point, on the same val windows for every run."""

import json
import math

import numpy as np
import pytest

from matcher.data import math_task, streams
from matcher.data.encode import VAL_FOLDER, encode_corpus
from matcher.data.problems import document_parts
from matcher.data.tokenizer import CHAR
from matcher.run.trainer import train_run
from matcher.run.validation import VAL_ROWS, text_bytes_of, val_windows
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
    plain = tmp_path / "plain"
    encode_corpus([tmp_path / "docs.jsonl"], CHAR, plain, progress=False)
    assert val_windows(str(plain), seq_len=64, vocab_size=128, tokenizer=CHAR) is None


def eval_lines(tmp_path, runs: dict[str, dict]) -> dict[str, list[dict]]:
    """Train one la-tiny run per name (its train fields given), two eval points each; their eval lines."""
    lines = {}
    for name, fields in runs.items():
        run = tiny_run("la-tiny", tiny_train(n_evals=2, total_tokens=8 * 8 * 64, **fields))
        run.name = run.group = name
        run_dir = prepare(tmp_path / "results", run)
        assert train_run(run_dir.path).state == "finished"
        lines[name] = [line for line in run_dir.read_metrics() if line["event"] == "eval"]
    return lines


def test_every_eval_point_logs_val_loss_on_the_same_tokens_for_every_run(tmp_path):
    out = corpus(tmp_path)
    lines = eval_lines(tmp_path, {"a": dict(data=str(out), seed=0, lr=3e-3), "b": dict(data=str(out), seed=1, lr=1e-2)})
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


def window_questions(windows) -> list[str]:
    """The questions of the whole problems in windows of the generated task (BOS Q: question A: answer EOS)."""
    questions = []
    for window in windows:
        text = "".join("\x02" if token == CHAR.bos_id else "\x03" if token == CHAR.eos_id else CHAR.decode([token])
                       for token in window.tolist())
        for document in text.split("\x02")[1:]:
            if "\x03" in document:  # whole: the row does not cut it
                questions.append(document.split("\x03")[0].removeprefix("Q: ").split(" A:")[0])
    return questions


@pytest.mark.parametrize("data", ["math", "math-latent"])
def test_generated_task_val_windows_are_fixed_held_out_and_leave_out_the_eval_problems(data):
    # one step per problem: a few hundred distinct problems, so 300 eval problems and 64 val windows of
    # generated problems certainly share some unless the eval problems are left out
    eval_problems = math_task.eval_problems(1, 300)
    eval_questions = {problem.question for problem in eval_problems}
    windows = val_windows(data, seq_len=64, vocab_size=128, tokenizer=CHAR, n_steps=1, eval_problems=eval_problems)
    assert windows.shape == (VAL_ROWS, 65)
    assert np.array_equal(windows, val_windows(data, seq_len=64, vocab_size=128, tokenizer=CHAR, n_steps=1,
                                               eval_problems=eval_problems))
    questions = window_questions(windows)
    assert len(questions) > 100 and not set(questions) & eval_questions
    unfiltered = val_windows(data, seq_len=64, vocab_size=128, tokenizer=CHAR, n_steps=1)
    assert set(window_questions(unfiltered)) & eval_questions  # the exclusion is what keeps them apart
    # not the rows any run seed trains on (the val split is a generator family of its own)
    for seed in (0, 1):
        train = streams.MathStream(seed=seed, n_steps=1, seq_len=64, vocab_size=128, latent=data == "math-latent")
        assert not any(np.array_equal(windows[i], train.row(i)) for i in range(VAL_ROWS))
    first_answer = CHAR.decode(windows[0]).split(" A: ")[1]  # the row's first problem, up to its EOS
    assert first_answer.startswith("#### ") == (data == "math-latent")


def test_val_bytes_count_every_document_of_a_window():
    problems = math_task.eval_problems(2, 3)
    texts = ["".join(document_parts(problem.question, problem.answer)) for problem in problems]
    ids = [token for text in texts for token in [CHAR.bos_id, *CHAR.encode(text), CHAR.eos_id]]  # BOS, text, EOS
    assert text_bytes_of(CHAR, ids) == sum(len(text.encode("utf-8")) for text in texts)


def test_generated_task_logs_val_loss_on_the_same_tokens_for_every_seed(tmp_path):
    lines = eval_lines(tmp_path, {f"s{seed}": dict(data="math", eval_data="math", seed=seed) for seed in (0, 1)})
    for evals in lines.values():
        assert len(evals) == 2
        for line in evals:
            assert math.isfinite(line["val_loss"]) and line["val_loss"] > 0 and line["val_bpb"] > 0
            assert line["val_tokens"] == VAL_ROWS * 64
    ratios = {round(line["val_bpb"] / line["val_loss"], 9) for evals in lines.values() for line in evals}
    assert len(ratios) == 1  # the same target tokens and bytes for both seeds
    assert lines["s0"][-1]["val_loss"] != lines["s1"][-1]["val_loss"]
