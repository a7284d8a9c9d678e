"""Data: the character tokenizer, the math task (answers checked by executing the problem), resumable
and rank-sliceable streams, token shards and GSM8K-style JSONL, and one clear error per bad input."""

import json
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from matcher.data import encode, math_task, problems, shard_streams, shards, streams, tokenizer
from matcher.data.problems import Problem, final_number, load_jsonl, normalise_number
from matcher.errors import DataError

# ------------------------------------------------------------------------------------ tokenizer


def encoded_document(tok, text: str) -> list[int]:
    """A training document as matcher data encode writes it: BOS, the text, EOS."""
    return [tok.bos_id, *tok.encode(text), tok.eos_id]


def test_tokenizer_round_trips_printable_ascii():
    text = "Q: a=3; b=a+4; b? A: a=3, b=7 #### 7\n\tend ~!@"
    ids = tokenizer.CHAR.encode(text)
    assert ids == [ord(c) for c in text]
    assert tokenizer.CHAR.decode(ids) == text


def test_specials_cannot_come_from_text():
    ids = tokenizer.CHAR.encode("a\x00b\x02c\x03d\x7f")
    assert ids == [ord(c) for c in "a b c d "]
    assert {tokenizer.PAD_ID, tokenizer.BOS_ID, tokenizer.EOS_ID}.isdisjoint(ids)


def test_non_ascii_is_folded_or_replaced():
    assert tokenizer.CHAR.decode(tokenizer.CHAR.encode("café – 5€")) == "cafe ? 5?"
    assert max(tokenizer.CHAR.encode("日本")) < tokenizer.VOCAB_SIZE


def test_document_and_decode_conventions():
    doc = encoded_document(tokenizer.CHAR, "hi")
    assert doc == [tokenizer.BOS_ID, ord("h"), ord("i"), tokenizer.EOS_ID]
    ids = [tokenizer.BOS_ID, ord("a"), tokenizer.PAD_ID, ord("b"), tokenizer.EOS_ID, ord("c")]
    assert tokenizer.CHAR.decode(ids) == "ab"
    assert tokenizer.CHAR.decode([ord("x"), 500]) == "x"  # ids beyond the character vocabulary are dropped


def test_vocab_too_small_is_a_data_error():
    with pytest.raises(DataError, match="vocab_size >= 128"):
        tokenizer.CHAR.check_vocab(100)


# ------------------------------------------------------------------------------------- math task


def _execute(question: str) -> dict[str, int]:
    """An independent check: run the problem's statements as Python."""
    values: dict[str, int] = {}
    *statements, _ = question.split("; ")
    for statement in statements:
        name, expression = statement.split("=")
        values[name] = eval(expression, {}, dict(values))  # noqa: S307 - our own generated text
    return values


@pytest.mark.parametrize("n_steps", [1, 3, 8, 26])
def test_answers_are_right_and_show_every_step(n_steps):
    rng = random.Random(n_steps)
    for _ in range(200):
        problem = math_task.make_problem(rng, n_steps)
        values = _execute(problem.question)
        asked = problem.question.rsplit("; ", 1)[1].rstrip("?")
        assert len(values) == n_steps
        assert problem.final == str(values[asked])
        assert asked == list(values)[-1]  # the question asks for the last variable
        steps = ", ".join(f"{name}={value}" for name, value in values.items())
        assert problem.answer == f"{steps} #### {problem.final}"
        assert all(0 <= value <= math_task.MAX_VALUE for value in values.values())


def test_problems_use_chains_tracking_and_all_operators():
    rng = random.Random(0)
    questions = " ".join(math_task.make_problem(rng, 4).question for _ in range(300))
    for pattern in (r"=[a-z]\+\d", r"=[a-z]-\d", r"=[a-z]\*\d", r"=[a-z]\+[a-z]", r"=[a-z]-[a-z]"):
        assert re.search(pattern, questions), pattern


def test_data_steps_out_of_range():
    with pytest.raises(DataError, match="data_steps must be between 1 and 26"):
        math_task.eval_problems(27, 4)


def test_eval_problems_are_fixed_and_held_out():
    first = math_task.eval_problems(3, 50)
    assert first == math_task.eval_problems(3, 50)
    assert first[:10] == math_task.eval_problems(3, 10)
    stream = streams.MathStream(seed=0, n_steps=3, seq_len=512, vocab_size=128)
    train_text = "".join(tokenizer.CHAR.decode(stream.row(i)[1:]) for i in range(200))
    assert sum(p.question in train_text for p in first) <= 1  # different seeds; a chance repeat at most


# --------------------------------------------------------------------------------------- streams


def test_math_rows_are_packed_documents():
    stream = streams.MathStream(seed=3, n_steps=3, seq_len=128, vocab_size=128)
    row = stream.row(7)
    assert row.shape == (129,) and row.dtype == np.int64
    assert row[0] == tokenizer.BOS_ID
    assert (row == tokenizer.EOS_ID).sum() >= 2  # several problems per row, no padding
    assert tokenizer.PAD_ID not in row
    text = tokenizer.CHAR.decode(row[1:])
    assert text.startswith("Q: ") and " A: " in text and "####" in text


def test_latent_rows_hold_the_final_value_only():
    """math-latent: the same problems as math, each answered ` #### N` (the latent eval task's reference)."""
    from matcher.config import TrainConfig
    from matcher.eval.tasks import run_eval_task

    latent = streams.open_stream("math-latent", seed=3, n_steps=3, seq_len=128, vocab_size=128)
    chain = streams.open_stream("math", seed=3, n_steps=3, seq_len=128, vocab_size=128)
    row, mask = latent.row(7), latent.row_mask(7)
    ends = [i for i, token in enumerate(row) if token == tokenizer.EOS_ID]
    starts = [0] + [end + 1 for end in ends[:-1]]
    assert all(row[start] == tokenizer.BOS_ID for start in starts)
    complete = [tokenizer.CHAR.decode(row[start + 1:end]) for start, end in zip(starts, ends)]
    assert len(complete) >= 3
    for document in complete:
        question, answer = document.split(" A: ")
        assert re.fullmatch(r"Q: .+", question) and re.fullmatch(r"#### -?\d+", answer)
        assert "=" not in answer  # no written-out chain
    # the answer mask covers exactly " #### N" and EOS
    answer_ids = [int(t) for t in row[mask.astype(bool)] if t != tokenizer.EOS_ID]
    answer_text = tokenizer.CHAR.decode(answer_ids)
    assert answer_text.count("####") == answer_text.count(" #### ") >= 3 and "Q:" not in answer_text
    assert "=" not in answer_text
    # the questions are the chain stream's, row for row; the format is the latent eval task's
    first_question = complete[0].split(" A: ")[0]
    assert tokenizer.CHAR.decode(chain.row(7)[1:]).startswith(first_question + " A: ")
    first = math_task.make_problem(math_task.problem_rng(3, "train", 7), 3)
    config = TrainConfig(total_tokens=1024, batch_size=2, seq_len=128, data_steps=3, eval_data="math-latent",
                         n_evals=4)
    item = run_eval_task([first], config).items[0]
    assert item.prompt + item.reference == complete[0] and item.reference == f" #### {first.final}"
    # a pure function of (seed, index)
    again = streams.open_stream("math-latent", seed=3, n_steps=3, seq_len=128, vocab_size=128)
    other = streams.open_stream("math-latent", seed=4, n_steps=3, seq_len=128, vocab_size=128)
    assert np.array_equal(again.row(7), row) and np.array_equal(again.row_mask(7), mask)
    assert not np.array_equal(other.row(7), row) and not np.array_equal(latent.row(8), row)


def test_latent_eval_data_reads_the_generated_problems():
    stream, held_out = streams.open_training_data("math-latent", "math-latent", seed=0, n_steps=2, seq_len=64,
                                                  vocab_size=128, eval_examples=5)
    assert stream.latent and held_out == math_task.eval_problems(2, 5)


def test_streams_are_functions_of_seed_and_step():
    a = streams.open_stream("math", seed=1, n_steps=3, seq_len=64, vocab_size=128)
    b = streams.open_stream("math", seed=1, n_steps=3, seq_len=64, vocab_size=128)
    c = streams.open_stream("math", seed=2, n_steps=3, seq_len=64, vocab_size=128)
    step5 = streams.batch_rows(a, step=5, batch_size=4)
    assert np.array_equal(step5, streams.batch_rows(b, step=5, batch_size=4))
    assert not np.array_equal(step5, streams.batch_rows(c, step=5, batch_size=4))
    assert not np.array_equal(step5, streams.batch_rows(a, step=6, batch_size=4))


def test_rank_slices_make_up_the_global_batch():
    stream = streams.open_stream("math", seed=0, n_steps=2, seq_len=32, vocab_size=128)
    whole = streams.batch_rows(stream, step=3, batch_size=8)
    parts = [streams.batch_rows(stream, step=3, batch_size=8, rank=r, world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate(parts), whole)


# ---------------------------------------------------------------------------------------- shards


def test_shard_windows(tmp_path):
    tokens = np.arange(1000) % 128
    path = shards.write_shard(tmp_path / "a.bin", tokens)
    assert json.loads((tmp_path / "a.json").read_text()) == {"dtype": "uint16"}
    stream = streams.open_stream(str(path), seed=0, n_steps=3, seq_len=16, vocab_size=128)
    for index in range(50):
        row = stream.row(index)
        assert row.shape == (17,)
        start = int(np.flatnonzero(tokens == row[0])[0])  # tokens repeat every 128: compare modulo
        assert np.array_equal(row % 128, (np.arange(start, start + 17)) % 128)
    assert np.array_equal(stream.row(3), stream.row(3))


def test_shard_folder_and_uint32(tmp_path):
    shards.write_shard(tmp_path / "a.bin", np.full(100, 70_000), dtype="uint32")
    shards.write_shard(tmp_path / "b.bin", np.full(100, 5), dtype="uint16")
    stream = shard_streams.ShardStream(str(tmp_path), seed=0, seq_len=8, vocab_size=100_000)
    values = {int(stream.row(i)[0]) for i in range(100)}
    assert values == {70_000, 5}  # both shards are drawn


def _open(path) -> str:
    with pytest.raises(DataError) as info:
        streams.open_stream(str(path), seed=0, n_steps=3, seq_len=8, vocab_size=128)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("data, sidecar, message", [
    (b"\x01\x00" * 20, None, 'no sidecar a.json beside it; write {"dtype": "uint16"}'),
    (b"\x01\x00" * 20, '{"dtype": "float32"}', "dtype must be one of uint16, uint32, got 'float32'"),
    (b"\x01\x00" * 20, "{dtype", "not valid JSON"),
    (b"", '{"dtype": "uint16"}', "the shard is empty"),
    (b"\x01\x00\x00\x00\x01", '{"dtype": "uint32"}', "5 bytes is not a whole number of uint32 tokens"),
    (b"\x01\x00\x02\x00\x2c\x01\x04\x00", '{"dtype": "uint16"}', "token 300 at position 2 is outside"),
    (b"\x01\x00\x02\x00\x03\x00", '{"dtype": "uint16"}', "shorter than one training row (9 tokens)"),
])
def test_bad_shards(tmp_path, data, sidecar, message):
    (tmp_path / "a.bin").write_bytes(data)
    if sidecar is not None:
        (tmp_path / "a.json").write_text(sidecar)
    assert message in _open(tmp_path / "a.bin")


def test_bad_shard_paths(tmp_path):
    assert "no such data file" in _open(tmp_path / "nope.bin")
    assert "no .bin shards in this directory" in _open(tmp_path)
    (tmp_path / "x.txt").write_text("hi")
    assert "must be a .bin file" in _open(tmp_path / "x.txt")


# ----------------------------------------------------------------------------------------- JSONL


def test_final_number_rules():
    assert final_number("so 3 + 4 = 7\n#### 7") == "7"
    assert final_number("#### 1,000") == "1000"
    assert final_number("#### 2 then #### -3.50") == "-3.5"
    assert final_number("#### 7.0") == "7"
    assert final_number("no marker 12") is None
    assert normalise_number("-0") == "0"


def test_jsonl_loads_gsm8k_style(tmp_path):
    path = tmp_path / "eval.jsonl"
    lines = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
             {"question": "Half of 1,000?", "answer": "#### 500"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    loaded = load_jsonl(path)
    assert loaded == [Problem(question=lines[0]["question"], answer=lines[0]["answer"], final="7"),
                      Problem(question="Half of 1,000?", answer="#### 500", final="500")]
    assert "".join(problems.document_parts(loaded[1].question, loaded[1].answer)) == "Q: Half of 1,000? A: #### 500"


@pytest.mark.parametrize("content, message", [
    (None, "no such eval file"),
    ("", "no problems in the file"),
    ('{"question": "a", "answer": "#### 1"}\n{"question": "b", "answer": "#### 2"\n',
     "eval.jsonl:2: not valid JSON"),
    ('{"question": "a", "answer": "#### 1"}\n\n["a", "b"]\n',
     "eval.jsonl:3: expected an object with string fields"),
    ('{"question": "a"}\n', 'eval.jsonl:1: expected an object with string fields "question" and "answer"'),
    ('{"question": "a", "answer": "seven"}\n', "eval.jsonl:1: the answer must end in '#### <number>'"),
])
def test_jsonl_errors(tmp_path, content, message):
    path = tmp_path / "eval.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _encode(inputs, out, **options):
    from matcher.data.encode import encode_corpus

    return encode_corpus(inputs, tokenizer.CHAR, out, progress=False, **options).manifest


def test_encode_writes_documents_in_the_eval_format(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"question": "x=2; x?", "answer": "x=2 #### 2"}\n\n{"text": "café\\tbar"}\n')
    (tmp_path / "notes.txt").write_text("plain text")
    manifest = _encode([jsonl, tmp_path / "notes.txt"], tmp_path / "out")
    data = shards.open_data(tmp_path / "out", 128, tokenizer.CHAR)
    tokens = np.concatenate(data.tokens)
    documents_text = ["Q: x=2; x? A: x=2 #### 2", "cafe\tbar", "plain text"]  # as the eval prompts, NFKD
    expected = [t for text in documents_text for t in encoded_document(tokenizer.CHAR, text)]
    assert (manifest["documents"], manifest["tokens"]) == (3, len(expected)) and tokens.tolist() == expected
    # the eval's prompt is a prefix of the training document: the model learns what it is asked
    doc = tokenizer.CHAR.decode(tokens[1:])
    assert doc.startswith(problems.prompt_text("x=2; x?"))


@pytest.mark.parametrize("content,message", [
    ('{"q": 1}\n', 'train.jsonl:1: expected an object with a string "text", string "question" and "answer", or'),
    ("{oops\n", "train.jsonl:1: not valid JSON"),
    ("\n", "the files hold no documents"),
])
def test_encode_errors_name_the_line(tmp_path, content, message):
    (tmp_path / "train.jsonl").write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        _encode([tmp_path / "train.jsonl"], tmp_path / "out")


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_encode_cli_never_overwrites_without_force(tmp_path, capsys):
    from matcher.cli import main

    (tmp_path / "a.txt").write_text("hello")
    out = tmp_path / "shards"
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(out)]) == 0
    assert "1 documents, 7 tokens" in capsys.readouterr().out
    before = (out / "shard-00000.bin").read_bytes()
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(out)]) == 2
    assert "already holds a complete encode" in _err(capsys)
    (tmp_path / "a.txt").write_text("other text")
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(out)]) == 2
    assert "holds an encode of other inputs" in _err(capsys)
    assert (out / "shard-00000.bin").read_bytes() == before
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(out), "--force"]) == 0
    (tmp_path / "t.txt").write_text("x")
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "t.txt")]) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep me")
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "mine")]) == 2
    assert "holds other files" in _err(capsys)


@pytest.mark.parametrize("shard_tokens", ["1", "1023", "0", "-5"])
def test_encode_refuses_shards_too_small_to_be_useful(tmp_path, capsys, shard_tokens):
    """--shard-tokens 1 wrote one shard (two files, an fsync, a manifest rewrite) per token and crawled."""
    from matcher.cli import main

    (tmp_path / "a.txt").write_text("hello")
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out"),
                 "--shard-tokens", shard_tokens]) == 2
    message = _err(capsys)
    assert f"--shard-tokens {int(shard_tokens):,} is too small" in message and "at least 1,024" in message
    assert not (tmp_path / "out").exists()


def test_encode_reports_unrepresentable_text_and_refuses_binary_files(tmp_path, capsys):
    from matcher.cli import main

    (tmp_path / "a.txt").write_text("price 5€, café\n")
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "a")]) == 0
    err = _err(capsys)
    assert "1 characters could not be represented" in err and "a.txt:1" in err and "5€" in err
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["unrepresentable"]["characters"] == 1
    (tmp_path / "b.txt").write_bytes(b"ELF\x00\x01\x02text")
    assert main(["data", "encode", str(tmp_path / "b.txt"), "--out", str(tmp_path / "b")]) == 2
    assert "looks like a binary file" in _err(capsys)
    (tmp_path / "c.txt").write_bytes(b"ok \xff\xfe")
    assert main(["data", "encode", str(tmp_path / "c.txt"), "--out", str(tmp_path / "c")]) == 2
    assert "not UTF-8 text (byte 3)" in _err(capsys)


def _one_line_text(path, megabytes: float, seed: int = 0) -> str:
    """One document of words and numbers with no line end: the case that was tokenized in one piece."""
    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "seven", "x=3+4", "night", "tree", "42"]
    text = " ".join(rng.choice(words) for _ in range(int(megabytes * 1e6 / 5.5)))
    path.write_text(text)
    return text


STREAMED_PEAK = """
import resource, sys
from pathlib import Path
from matcher.data import tokenizer
from matcher.data.encode import encode_corpus
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
encode_corpus([Path(sys.argv[1])], tokenizer.CHAR, Path(sys.argv[2]), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_one_long_document_encodes_in_bounded_memory(tmp_path):
    """A 24 MB document without a line end peaked at ~27x its size (tokenized in one piece); now it is cut
    into pieces of about a MiB: the peak grows by far less than the text (ru_maxrss of a child, KiB)."""
    _one_line_text(tmp_path / "one.txt", 24)
    done = subprocess.run([sys.executable, "-c", STREAMED_PEAK, str(tmp_path / "one.txt"), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    grown_mib = int(done.stdout) / 1024
    assert grown_mib < 96, f"peak memory grew by {grown_mib:.0f} MiB encoding a 24 MB document"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["documents"] == 1 and manifest["tokens"] == (tmp_path / "one.txt").stat().st_size + 2


@pytest.mark.parametrize("line_ends", [True, False])
def test_a_document_cut_into_pieces_has_the_tokens_of_the_whole(tmp_path, monkeypatch, line_ends):
    monkeypatch.setattr(encode, "READ_BYTES", 4096)
    monkeypatch.setattr(encode, "MAX_PIECE_CHARS", 4096)
    text = _one_line_text(tmp_path / "doc.txt", 0.1)
    if line_ends:
        text = text.replace(" 42 ", " 42\n")
        (tmp_path / "doc.txt").write_text(text)
    pieces = [piece for _, piece in encode.input_pieces(tmp_path / "doc.txt", lambda n: None)]
    assert len(pieces) > 20 and "".join(p[1] for p in pieces) == text
    if line_ends:
        assert all(p[1].endswith("\n") for p in pieces[1:-2])
    manifest = _encode([tmp_path / "doc.txt"], tmp_path / "out")
    data = shards.open_data(tmp_path / "out", 128, tokenizer.CHAR)
    assert np.concatenate(data.tokens).tolist() == encoded_document(tokenizer.CHAR, text)
    assert manifest["documents"] == 1


def test_empty_documents_are_skipped_and_counted(tmp_path, capsys):
    from matcher.cli import main

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\n")
    (tmp_path / "a.txt").write_text("\nhello\n")
    (tmp_path / "b.jsonl").write_text('{"text": ""}\n{"text": "hi"}\n{"text": " "}\n')
    inputs = [str(tmp_path / name) for name in ("empty.txt", "blank.txt", "a.txt", "b.jsonl")]
    assert main(["data", "encode", *inputs, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "2 documents" in captured.out
    assert "skipped 4 empty document(s)" in " ".join(captured.err.split())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["documents"] == 2 and manifest["empty_documents"]["documents"] == 4
    tokens = np.concatenate(shards.open_data(tmp_path / "out", 128, tokenizer.CHAR).tokens).tolist()
    assert tokens == encoded_document(tokenizer.CHAR, "\nhello\n") + encoded_document(tokenizer.CHAR, "hi")
    assert main(["data", "encode", inputs[0], "--out", str(tmp_path / "none")]) == 2
    assert "hold no documents (1 empty ones skipped)" in _err(capsys)


def test_a_folder_to_encode_or_as_tokenizer_is_named_a_folder(tmp_path, capsys):
    from matcher.cli import main

    (tmp_path / "corpus").mkdir()
    (tmp_path / "a.txt").write_text("hello")
    assert main(["data", "encode", str(tmp_path / "corpus"), "--out", str(tmp_path / "out")]) == 2
    message = _err(capsys)
    assert "corpus is a folder; give the files in it to encode" in message and "no such file" not in message
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--out", str(tmp_path / "out"),
                 "--tokenizer", str(tmp_path / "corpus")]) == 2
    message = _err(capsys)
    assert "corpus is a folder without a tokenizer.json in it" in message and "no such" not in message
