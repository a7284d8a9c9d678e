"""Real tokenizers and corpora: a BPE trained here (no network) encodes a corpus into shards with a
manifest and a loss mask; plans set the vocabulary from it; a tiny sweep trains on it and evaluates
with the same tokenizer; sampling visits every window once per epoch; an interrupted encode leaves no
usable partial shard; shards of another tokenizer are refused with one message."""

import json
import random

import numpy as np
import pytest

from matcher.data import shard_streams, shards, streams
from matcher.data.encode import encode_corpus
from matcher.data.tokenizer import CHAR, load_tokenizer, padded_vocab
from matcher.errors import ConfigError, DataError


def encoded_document(tok, text: str) -> list[int]:
    """A training document as matcher data encode writes it: BOS, the text, EOS."""
    return [tok.bos_id, *tok.encode(text), tok.eos_id]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["apple", "river", "stone", "über", "naïve", "cloud", "seven", "night", "tree", "日本"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + f" {rng.randint(0, 999)}"
            for _ in range(n)]


def train_bpe(path, vocab_size: int = 300, seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_texts(400, seed), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_bpe(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _qa_file(path, n: int = 30):
    rows = [{"question": f"x={i}; y=x+2; y?", "answer": f"x={i}, y={i + 2} #### {i + 2}"} for i in range(n)]
    rows.append({"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello 7"}]})
    rows.append({"text": "plain words river stone"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_bpe_round_trips_and_ids_are_the_librarys(bpe):
    for text in _texts(50, seed=3) + ["Q: x=1; y? A: #### 3\n\ttabs"]:
        assert bpe.decode(bpe.encode(text)) == text
        assert bpe.decode(encoded_document(bpe, text)) == text
    assert bpe.encode_batch(["a b", "river"]) == [bpe.encode("a b"), bpe.encode("river")]
    assert bpe.eos_id == bpe.bos_id  # no BOS token: documents start with EOS (GPT-2's convention)
    assert bpe.vocab_size == 300 and padded_vocab(bpe.vocab_size) == 320


def test_the_loss_mask_covers_exactly_the_answer_tokens(tmp_path, bpe):
    rows = _qa_file(tmp_path / "qa.jsonl", n=300)
    manifest = encode_corpus([tmp_path / "qa.jsonl"], bpe, tmp_path / "out", shard_tokens=1024,
                             progress=False).manifest
    assert manifest["loss_mask"] and manifest["documents"] == len(rows) and len(manifest["shards"]) > 3
    data = shards.open_data(tmp_path / "out", 320, bpe)
    tokens, mask = np.concatenate(data.tokens), np.concatenate(data.masks)
    assert len(tokens) == manifest["tokens"] == sum(s["tokens"] for s in manifest["shards"])
    expected_tokens, expected_mask = [], []
    for row in rows:
        if "question" in row:
            prompt = [bpe.bos_id, *bpe.encode(f"Q: {row['question']} A:")]
            answer = [*bpe.encode(" " + row["answer"]), bpe.eos_id]
        elif "messages" in row:
            prompt = [bpe.bos_id, *bpe.encode("user: hi there\n"), *bpe.encode("assistant:")]
            answer = [*bpe.encode(" hello 7\n"), bpe.eos_id]
        else:
            prompt, answer = [bpe.bos_id], [*bpe.encode(row["text"]), bpe.eos_id]
        expected_tokens += prompt + answer
        expected_mask += [0] * len(prompt) + [1] * len(answer)
    assert tokens.tolist() == expected_tokens and mask.tolist() == expected_mask
    answers = bpe.decode([t for t, m in zip(tokens[:len(expected_tokens)], mask) if m and t != bpe.eos_id])
    assert answers.startswith(" x=0, y=2 #### 2 x=1, y=3 #### 3")
    for entry in manifest["shards"]:  # the sha256 of each shard is the one of its bytes
        import hashlib
        assert hashlib.sha256((tmp_path / "out" / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["hash"] == bpe.content_hash


def test_sampling_without_replacement_visits_every_window_once_per_epoch(tmp_path):
    shards.write_shard(tmp_path / "a.bin", np.arange(1 + 37 * 8) % 128)
    shards.write_shard(tmp_path / "b.bin", np.arange(1 + 20 * 8) % 128)
    stream = streams.open_stream(str(tmp_path), seed=5, n_steps=2, seq_len=8, vocab_size=128)
    assert stream.windows == 57
    epoch = lambda e: [stream._locate(i) for i in range(57 * e, 57 * (e + 1))]  # noqa: E731
    first, second = epoch(0), epoch(1)
    assert len(set(first)) == 57 and set(first) == set(second) and first != second  # each window once, reshuffled
    again = streams.open_stream(str(tmp_path), seed=5, n_steps=2, seq_len=8, vocab_size=128)
    assert [again._locate(i) for i in range(57 * 3)] == first + second + epoch(2)  # a function of (seed, row)
    other = streams.open_stream(str(tmp_path), seed=6, n_steps=2, seq_len=8, vocab_size=128)
    assert [other._locate(i) for i in range(57)] != first
    assert stream.unique_tokens(30) == 30 * 8 and stream.unique_tokens(200) == 57 * 8
    for n in (1, 2, 3, 1000, 4097):
        assert sorted(shard_streams.feistel_permute(i, n, 12345) for i in range(n)) == list(range(n))


def test_a_mixture_gives_each_source_its_weight(tmp_path):
    shards.write_shard(tmp_path / "a" / "a.bin", np.full(801, 5))
    shards.write_shard(tmp_path / "b" / "b.bin", np.full(801, 9))
    stream = streams.open_stream({str(tmp_path / "a"): 3, str(tmp_path / "b"): 1}, seed=0, n_steps=2, seq_len=8,
                                 vocab_size=128)
    firsts = [int(stream.row(i)[0]) for i in range(2000)]
    assert firsts.count(5) == 1500 and firsts.count(9) == 500
    assert max(firsts[:40].count(9), 1) in range(8, 13)  # interleaved, not in runs
    assert stream.unique_tokens(2000) == 100 * 8 + 100 * 8  # both sources are past one epoch (100 windows)


def test_an_interrupted_encode_leaves_no_usable_partial_shard_and_resumes(tmp_path, bpe, monkeypatch):
    from matcher.data import encode

    (tmp_path / "a.txt").write_text("\n".join(_texts(3000, seed=1)))
    whole = encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "whole", shard_tokens=4000, progress=False).manifest
    assert len(whole["shards"]) > 4
    monkeypatch.setattr(encode, "READ_BYTES", 4096)
    monkeypatch.setattr(encode, "BATCH_CHARS", 4096)
    calls = {"n": 0}
    real = encode.ShardWriter.add

    def interrupted(self, *args):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(encode.ShardWriter, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", shard_tokens=4000, progress=False)
    partial = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert not partial["complete"] and 0 < len(partial["shards"]) < len(whole["shards"])
    assert sorted(p.name for p in (tmp_path / "out").glob("shard-*")) == [s["file"] for s in partial["shards"]]
    with pytest.raises(DataError, match="the encode did not finish .* run the same `matcher data encode` command"):
        streams.open_stream(str(tmp_path / "out"), seed=0, n_steps=2, seq_len=16, vocab_size=320, tokenizer=bpe)
    monkeypatch.setattr(encode.ShardWriter, "add", real)
    resumed = encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", shard_tokens=4000, progress=False)
    assert resumed.resumed_tokens == sum(s["tokens"] for s in partial["shards"])
    assert resumed.manifest["shards"] == whole["shards"]  # byte for byte the uninterrupted encode
    assert (resumed.manifest["tokens"], resumed.manifest["documents"]) == (whole["tokens"], whole["documents"])


def test_a_kill_between_manifest_and_rename_is_recovered(tmp_path, bpe):
    (tmp_path / "a.txt").write_text("\n".join(_texts(500)))
    manifest = encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", shard_tokens=1024, progress=False).manifest
    last = tmp_path / "out" / manifest["shards"][-1]["file"]
    last.rename(last.with_name(last.name + ".tmp"))  # listed, not renamed yet
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    resumed = encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", shard_tokens=1024, progress=False)
    assert resumed.resumed_tokens == manifest["tokens"] and last.is_file()
    (tmp_path / "early").mkdir()  # killed before its first shard was listed: no manifest, a partial shard
    (tmp_path / "early" / "shard-00000.bin.tmp").write_bytes(b"\x01\x00" * 10)
    again = encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "early", shard_tokens=1024, progress=False)
    assert again.manifest["shards"] == manifest["shards"] and not list((tmp_path / "early").glob("*.tmp"))


def test_shards_of_another_tokenizer_or_a_smaller_model_are_refused(tmp_path, bpe):
    other = train_bpe(tmp_path / "other.json", vocab_size=280, seed=7)
    (tmp_path / "a.txt").write_text("\n".join(_texts(200)))
    encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "out", progress=False)
    with pytest.raises(DataError) as info:
        streams.open_training_data(str(tmp_path / "out"), "math", seed=0, n_steps=2, seq_len=16, vocab_size=320,
                                   eval_examples=1, tokenizer=other)
    assert "encoded with" in str(info.value) and "re-encode the corpus with the run's tokenizer" in str(info.value)
    with pytest.raises(DataError, match="has 300 tokens, but the model's vocab_size is 256"):
        streams.open_training_data(str(tmp_path / "out"), "math", seed=0, n_steps=2, seq_len=16, vocab_size=256,
                                   eval_examples=1, tokenizer=bpe)
    with pytest.raises(DataError, match="no manifest.json, so nothing says which tokenizer"):
        shards.write_shard(tmp_path / "legacy.bin", np.arange(100) % 100)
        streams.open_training_data(str(tmp_path / "legacy.bin"), "math", seed=0, n_steps=2, seq_len=16,
                                   vocab_size=320, eval_examples=1, tokenizer=bpe)
    (tmp_path / "out" / "shard-00000.bin").unlink()
    with pytest.raises(DataError, match="listed in manifest.json but missing"):
        streams.open_stream(str(tmp_path / "out"), seed=0, n_steps=2, seq_len=16, vocab_size=320, tokenizer=bpe)
    with pytest.raises(DataError, match="loss_on is answers, but the data has no loss mask"):
        encode_corpus([tmp_path / "a.txt"], bpe, tmp_path / "text", progress=False)
        streams.open_training_data(str(tmp_path / "text"), "math", seed=0, n_steps=2, seq_len=16, vocab_size=320,
                                   eval_examples=1, tokenizer=bpe, loss_on="answers")


def test_parquet_is_read_like_jsonl_and_a_missing_pyarrow_is_one_message(tmp_path, bpe, monkeypatch):
    rows = _qa_file(tmp_path / "qa.jsonl", n=5)[:5]
    (tmp_path / "qa5.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from_jsonl = encode_corpus([tmp_path / "qa5.jsonl"], bpe, tmp_path / "j", progress=False).manifest
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    pq.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "qa.parquet")
    from_parquet = encode_corpus([tmp_path / "qa.parquet"], bpe, tmp_path / "p", progress=False).manifest
    assert [s["sha256"] for s in from_parquet["shards"]] == [s["sha256"] for s in from_jsonl["shards"]]
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name.startswith("pyarrow") else real_import(name, *a, **k))
    with pytest.raises(DataError, match=r"reading parquet needs pyarrow: pip install 'matcher\[parquet\]'"):
        encode_corpus([tmp_path / "qa.parquet"], bpe, tmp_path / "p2", progress=False)


def test_plan_with_a_tokenizer_sets_every_vocabulary_before_matching(tmp_path, bpe):
    from matcher.plan.planner import build_sweep, make_plan
    from matcher.plan.request import PlanRequest

    plan = make_plan(PlanRequest(target="la-tiny", tokenizer=bpe.spec, set_fields=["train.lr=0.01",
                                                                                 "train.loss_on=answers"]))
    assert {run.config.vocab_size for run in plan.runs} == {320}
    assert plan.train.tokenizer == {"path": bpe.spec, "hash": bpe.content_hash, "vocab_size": 300}
    assert (plan.train.lr, plan.train.loss_on) == (0.01, "answers")
    assert any("has 300 tokens; every run's vocab_size is 320" in n for n in plan.notices)
    char = make_plan(PlanRequest(target="la-tiny"))
    # the embeddings are parameters: the matched variants differ from a plan with the char vocabulary
    assert plan.runs[1].config.d_ff != char.runs[1].config.d_ff or plan.runs[1].match.costs != char.runs[1].match.costs
    assert "--tokenizer" in build_sweep(plan).meta.command
    via_set = make_plan(PlanRequest(target="la-tiny", set_fields=[f"train.tokenizer={bpe.spec}",
                                                                  "train.data={a: 3, b: 1}"]))
    assert via_set.train.tokenizer == plan.train.tokenizer and via_set.runs[1].config == plan.runs[1].config
    assert via_set.train.data == {"a": 3, "b": 1}
    for bad, message in [(["train.lrr=1"], "did you mean 'train.lr'"), (["train.loss_on=x"], "loss_on must be one of"),
                         (["train.seq_len=64"], "--seq-len"), (["seq_len=64"], "use --seq-len"),
                         (["train.data={a: -1}"], "weight of a must be a positive number")]:
        with pytest.raises(ConfigError, match=message):
            make_plan(PlanRequest(target="la-tiny", set_fields=bad))


def test_encode_plan_train_and_evaluate_with_one_bpe(tmp_path, bpe, capsys):
    """The real-data path: encode with a BPE, plan with it, train a tiny sweep, the eval decodes with it."""
    from matcher.cli import main
    from matcher.plan.sweep import load_sweep

    _qa_file(tmp_path / "qa.jsonl", n=200)
    assert main(["data", "encode", str(tmp_path / "qa.jsonl"), "--tokenizer", bpe.spec,
                 "--out", str(tmp_path / "shards")]) == 0
    eval_jsonl = tmp_path / "eval.jsonl"
    eval_jsonl.write_text("\n".join(json.dumps({"question": f"x={i}; y=x+2; y?",
                                                "answer": f"x={i}, y={i + 2} #### {i + 2}"}) for i in range(3)))
    sweep_path = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--tokenizer", bpe.spec, "--no-measure",
                 "--tokens", str(6 * 8 * 64), "--batch", "8", "--seq-len", "64",
                 "--set", f"train.data={tmp_path / 'shards'}", "--set", f"train.eval_data={eval_jsonl}",
                 "--set", "train.loss_on=answers", "--set", "train.eval_examples=3",
                 "--set", "train.eval_tokens=[3072]",
                 "--out", str(sweep_path)]) == 0
    sweep = load_sweep(sweep_path)
    assert all(run.model.vocab_size == 320 and run.train.tokenizer["hash"] == bpe.content_hash for run in sweep.runs)
    assert main(["sweep", "validate", str(sweep_path)]) == 0
    capsys.readouterr()
    assert main(["run", str(sweep_path), "--results", str(tmp_path / "results")]) == 0
    for run in sweep.runs:
        lines = [json.loads(line) for line in (tmp_path / "results" / "s" / run.name / "metrics.jsonl").open()]
        evals = [line for line in lines if line["event"] == "eval"]
        assert evals and all(e["eval_loss"] > 0 and e["unique_tokens"] <= e["tokens"] for e in evals)

    decoded = []

    class Recorder:
        """A tokenizer that records what evaluation decodes (the BPE's decode of generated ids)."""
        def __getattr__(self, name):
            return getattr(bpe, name)

        def decode(self, ids):
            decoded.append(bpe.decode(ids))
            return decoded[-1]

    import contextlib

    import torch

    from matcher.data.problems import load_jsonl
    from matcher.models import Model
    model = Model(sweep.runs[0].model).eval()
    from matcher.eval.score import score_task
    from matcher.eval.tasks import embedded_task

    result = score_task(model, embedded_task(load_jsonl(eval_jsonl)), Recorder(), seq_len=64,
                        device=torch.device("cpu"), autocast=contextlib.nullcontext())
    assert result["n"] == 3 and len(decoded) == 3 and all(isinstance(text, str) for text in decoded)


def test_a_sweep_whose_shards_name_another_tokenizer_is_refused_by_validate(tmp_path, bpe, capsys):
    """Refused by the checks of `sweep validate`, which plan makes before writing a sweep."""
    from matcher.cli import main

    other = train_bpe(tmp_path / "other.json", vocab_size=290, seed=4)
    (tmp_path / "a.txt").write_text("\n".join(_texts(300)))
    assert main(["data", "encode", str(tmp_path / "a.txt"), "--tokenizer", other.spec,
                 "--out", str(tmp_path / "shards")]) == 0
    sweep_path = tmp_path / "s.yaml"
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--tokenizer", bpe.spec, "--no-measure",
                 "--set", f"train.data={tmp_path / 'shards'}", "--out", str(sweep_path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not written: the sweep would not pass `matcher sweep validate`" in err and not sweep_path.exists()
    assert "the shards were encoded with" in err and "re-encode the corpus with the run's tokenizer" in err
    assert CHAR.vocab_size == 128


def test_loss_on_answers_makes_only_answer_tokens_targets(tmp_path):
    from matcher.models import IGNORE_INDEX
    from matcher.run.trainer import Trainer
    from tests.tiny_runs import prepare, tiny_run, tiny_train

    for loss_on in ("all", "answers"):
        run_dir = prepare(tmp_path / loss_on, tiny_run("la-tiny", tiny_train(loss_on=loss_on)))
        trainer = Trainer(run_dir, fsdp=False, log_every_steps=1, on_record=None, device="cpu")
        try:
            inputs, targets = trainer._batch(3)
            rows = streams.batch_rows(trainer.stream, step=3, batch_size=8)
            mask = streams.batch_masks(trainer.stream, step=3, batch_size=8)[:, 1:]
        finally:
            trainer.close()
        assert np.array_equal(inputs.numpy(), rows[:, :-1])
        expected = rows[:, 1:] if loss_on == "all" else np.where(mask == 1, rows[:, 1:], IGNORE_INDEX)
        assert np.array_equal(targets.numpy(), expected)
        if loss_on == "answers":  # the prompts' tokens ("Q: ... A:") are not targets, the answers' are
            assert 0.2 < (targets != IGNORE_INDEX).float().mean() < 0.9
            kept = CHAR.decode([t for t in targets[0].tolist() if t != IGNORE_INDEX])
            assert "Q:" not in kept and "####" in kept


def test_a_tokenizer_with_an_unknown_token_reports_what_it_replaced(tmp_path):
    """A WordLevel-style tokenizer with <unk> (not byte-level): the encode counts the characters it mapped
    to <unk> from the same encoding it writes, and says where the first was."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["apple river stone 123 cloud"] * 20, trainers.BpeTrainer(
        vocab_size=60, special_tokens=["<unk>", "<|endoftext|>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    corpus = tmp_path / "a.txt"
    corpus.write_text("apple river\nstone € cloud ✓✓\n")
    result = encode_corpus([corpus], load_tokenizer(tmp_path / "tokenizer.json"), tmp_path / "out")
    unknown = result.manifest["unrepresentable"]
    unk = tok.token_to_id("<unk>")
    assert unknown["characters"] == 3  # "€", "✓", "✓": one <unk> each, as the library itself encodes them
    assert unknown["characters"] == sum(tok.encode(line).ids.count(unk) for line in corpus.read_text().splitlines())
    assert "a.txt" in unknown["first"] and "€" in unknown["first"]


@pytest.mark.parametrize("line_ends", [True, False])
def test_a_long_document_cut_into_pieces_has_the_bpe_tokens_of_the_whole(tmp_path, bpe, monkeypatch, line_ends):
    """A document is handed to the tokenizer in pieces (bounded memory, whatever its size): cut at line ends,
    or in a line without one before a space that starts a word; the BPE's tokens are those of the whole."""
    from matcher.data import encode

    monkeypatch.setattr(encode, "READ_BYTES", 2048)
    monkeypatch.setattr(encode, "MAX_PIECE_CHARS", 2048)
    text = ("\n" if line_ends else " ").join(_texts(3000, seed=3))
    (tmp_path / "doc.txt").write_text(text)
    pieces = [piece for _, piece in encode.input_pieces(tmp_path / "doc.txt", lambda n: None)]
    assert len(pieces) > 20 and "".join(p[1] for p in pieces) == text
    manifest = encode_corpus([tmp_path / "doc.txt"], bpe, tmp_path / "out", progress=False).manifest
    tokens = np.concatenate(shards.open_data(tmp_path / "out", 320, bpe).tokens).tolist()
    assert manifest["documents"] == 1 and tokens == [bpe.bos_id, *bpe.encode(text), bpe.eos_id]
