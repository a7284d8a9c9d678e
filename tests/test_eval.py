"""Benchmark evaluation (matcher/eval): extraction and scoring on hand-made outputs, multiple choice
with a hand-built model, bits per byte of a known distribution, intervals on known binomials, and a
saved checkpoint scored later reproducing its in-training eval."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_runs import prepare, tiny_run, tiny_train  # noqa: E402

from matcher.data.tokenizer import CHAR  # noqa: E402
from matcher.errors import MatcherError  # noqa: E402
from matcher.eval import engine, extract, score  # noqa: E402
from matcher.eval.intervals import binomial_interval, ratio_interval  # noqa: E402
from matcher.eval.tasks import load_task  # noqa: E402


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("output, strict, flexible", [
    ("She has 3 + 4 = 7 apples.\n#### 7", "7", "7"),
    ("The answer is $1,250.", "[invalid]", "$1,250."),
    ("#### 3.50\n\nQuestion:", "3.50", "3.50"),
    ("no number here", "[invalid]", "[invalid]"),
    ("first 12 then 5 #### 12 and then 9", "12", "9"),
    ("-4 degrees", "[invalid]", "-4"),
    ("it is 7, or 8", "[invalid]", "8"),
])
def test_gsm8k_strict_and_flexible_filters_are_the_harness_filters(output, strict, flexible):
    assert extract.gsm8k_strict(output) == strict
    assert extract.gsm8k_flexible(output) == flexible


@pytest.mark.parametrize("extracted, reference, right", [
    ("$1,250.", "so 1,000 + 250 = 1,250\n#### 1,250", True),  # `,` `$` and a final `.` ignored
    ("3.50", "#### 3.5", False),  # the harness compares strings: no number normalisation
    ("5.", "x #### 5", True),
    ("[invalid]", "#### 5", False),
    ("12", "#### 1 #### 12", True),  # `(?s).*#### ` removes up to the last marker
])
def test_gsm8k_exact_match_is_the_harness_exact_match(extracted, reference, right):
    assert extract.gsm8k_correct(extracted, reference) is right


def test_boxed_extraction_and_exact_match_fallback():
    assert extract.last_boxed(r"so \boxed{1} or rather \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert extract.last_boxed(r"\boxed{x^{2}+1") is None  # unbalanced
    assert extract.math_answer("Final Answer: The final answer is $12$. I hope it is correct.") == "12"
    assert extract.math_equal(r"\dfrac{1}{2}", r"\frac{1}{2}", use_math_verify=False)
    assert extract.math_equal(" 3.50 ", "3.5", use_math_verify=False)
    assert not extract.math_equal(r"\frac{2}{4}", r"\frac{1}{2}", use_math_verify=False)  # exact match only
    assert not extract.math_equal(None, "1", use_math_verify=False)


def test_math_verify_equivalence():
    pytest.importorskip("math_verify")
    assert extract.math_equal(r"\frac{2}{4}", r"\frac{1}{2}", use_math_verify=True)
    assert not extract.math_equal("3", r"\frac{1}{2}", use_math_verify=True)


def scored_outputs(task, outputs, monkeypatch, seq_len=2048, **options):
    """Score `task` with the model's generations replaced by hand-made `outputs`."""
    monkeypatch.setattr(engine, "greedy_generate", lambda model, prompts, **kw: outputs[:len(prompts)])
    return score.score_task(None, task, CHAR, seq_len=seq_len, device=torch.device("cpu"), **options)


def test_gsm8k_task_scores_hand_made_outputs(tmp_path, monkeypatch):
    problems = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(7)]
    task = load_task(f"gsm8k={write_jsonl(tmp_path / 'gsm.jsonl', problems)}")
    assert len(task.items) == 2 and task.max_new_tokens == 256  # the first 5 are the shots
    prompt = task.items[0].prompt
    assert prompt.startswith("Question: What is 0 + 1?\nAnswer: 0 + 1 = 1\n#### 1\n\nQuestion: What is 1 + 1?")
    assert prompt.endswith("\n\nQuestion: What is 5 + 1?\nAnswer:")
    result = scored_outputs(task, [" 5 + 1 = 6\n#### 6", " it is 7, or 8"], monkeypatch)
    assert result["n"] == 2 and result["scores"] == {"strict": 0.5, "flexible": 0.5}
    assert result["outcomes"] == {"strict": "10", "flexible": "10"}
    shots = write_jsonl(tmp_path / "train.jsonl", problems[:2])
    task = load_task(f"gsm8k={tmp_path / 'gsm.jsonl'},fewshot={shots},n_shot=1,max_new_tokens=32")
    assert len(task.items) == 7 and task.max_new_tokens == 32 and task.items[0].prompt.count("Question:") == 2


def test_math_task_scores_boxed_answers(tmp_path, monkeypatch):
    records = [{"problem": "Half of one?", "solution": r"It is \boxed{\frac{1}{2}}."},
               {"problem": "Two squared?", "solution": r"$2^2 = \boxed{4}$"}]
    task = load_task(f"math={write_jsonl(tmp_path / 'math.jsonl', records)},n_shot=0")
    assert [item.target for item in task.items] == [r"\frac{1}{2}", "4"]
    result = scored_outputs(task, [r" so \boxed{\dfrac{1}{2}}", r" \boxed{5}"], monkeypatch)
    assert result["scores"] == {"acc": 0.5}


def test_embedded_and_latent_tasks_have_fixed_budgets():
    chain, latent = load_task("embedded,n=5,steps=3"), load_task("latent,n=5,steps=3")
    assert chain.max_new_tokens == len(" x=999, x=999, x=999 #### 999") + 1
    assert latent.max_new_tokens == len(" #### 999") + 1
    assert all(item.reference.startswith(" #### ") for item in latent.items)
    assert [i.target for i in chain.items] == [i.target for i in latent.items]


@pytest.mark.parametrize("text, message", [
    ("gsm9k=x.jsonl", "unknown task"), ("gsm8k", "needs a JSONL file"), ("mc=missing.jsonl", "no such task file"),
    ("embedded,shots=3", "is not an option"), ("embedded,n=-1", "integer >= 1"),
])
def test_bad_task_specs_are_one_clear_error(text, message):
    with pytest.raises(MatcherError, match=message):
        load_task(text)


# ------------------------------------------------------------------------------ fit or refuse
def long_gsm8k(tmp_path, count=4, long=(0, 2)):
    """GSM8K-format problems; the questions at `long` are 200 characters (tokens, for CHAR)."""
    problems = [{"question": ("x" * 200 if i in long else f"What is {i} + 1?"),
                 "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(count)]
    return write_jsonl(tmp_path / "gsm.jsonl", problems)


def test_items_longer_than_the_context_are_refused_with_the_counts(tmp_path):
    from matcher.errors import DataError

    task = load_task(f"gsm8k={long_gsm8k(tmp_path)},n_shot=0,max_new_tokens=16")
    with pytest.raises(DataError) as refused:
        score.score_task(None, task, CHAR, seq_len=64, device=torch.device("cpu"))
    message = " ".join(str(refused.value).split())
    # BOS + "Question: " + 200 + "\nAnswer:" = 219 prompt tokens, + 16 generated
    assert "gsm8k-gsm: 2 of 4 items do not fit the model's context of 64 tokens" in message
    assert "the longest needs 235 tokens" in message and "max_new_tokens (now 16)" in message
    assert "seq_len >= 235" in message and "--truncate left" in message


def test_truncate_left_scores_them_and_counts_them(tmp_path, monkeypatch):
    task = load_task(f"gsm8k={long_gsm8k(tmp_path)},n_shot=0,max_new_tokens=16")
    result = scored_outputs(task, [" #### 1", " #### 2", " #### 9", " #### 4"], monkeypatch, 64, truncate="left")
    assert result["truncated"] == 2 and result["outcomes"]["strict"] == "1101"
    fits = load_task(f"gsm8k={long_gsm8k(tmp_path, long=())},n_shot=0,max_new_tokens=16")
    assert fits.items[1].prompt == "Question: What is 1 + 1?\nAnswer:"
    assert "truncated" not in scored_outputs(fits, [" #### 2"] * 4, monkeypatch, 64)


def test_sweep_validation_refuses_an_eval_set_longer_than_the_context():
    from matcher.plan.sweep import _data_problems

    problems = _data_problems([tiny_run("la-tiny", tiny_train(data_steps=8))])  # 8-step chains: 129 tokens
    assert len(problems) == 1
    assert "runs[0].train (la-tiny): embedded: 3 of 3 items do not fit the model's context of 64 tokens" \
        in " ".join(problems[0].split()) and "use train.seq_len >= 129" in problems[0]
    assert _data_problems([tiny_run("la-tiny", tiny_train(data_steps=2))]) == []


# ------------------------------------------------------------------------- hand-built models
class FixedNextToken(torch.nn.Module):
    """Logits that depend on nothing but a fixed preference over the vocabulary."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, idx, targets=None, cache=None):
        return self.logits.expand(*idx.shape, -1).clone()


def test_mc_picks_the_choice_the_model_prefers_and_the_normalised_choices(tmp_path):
    logits = torch.full((128,), -10.0)
    logits[ord(" ")] = logits[ord("b")] = 0.0  # " b" likely; every other character unlikely
    model = FixedNextToken(logits)
    records = [{"question": "q1", "choices": ["a", "b"], "answer": 1},
               {"question": "q2", "choices": ["b", "a"], "answer": 1},
               # 20 likely characters: a lower sum than one unlikely one and a likely one, more per byte
               {"question": "q3", "choices": ["zb", "b" * 20], "answer": 1}]
    task = load_task(f"mc={write_jsonl(tmp_path / 'mc.jsonl', records)}")
    lls = score.choice_scores(model, task.items, CHAR, seq_len=64, device=torch.device("cpu"))
    assert lls[0][1] > lls[0][0] and lls[1][0] > lls[1][1]
    result = score.score_task(model, task, CHAR, seq_len=64, device=torch.device("cpu"))
    assert result["outcomes"]["acc"] == "100" and result["outcomes"]["acc_norm"] == "101"
    assert result["outcomes"]["acc_norm_per_byte"] == "101" and result["outcomes"]["acc_norm_per_token"] == "101"
    assert result["intervals"]["acc"] == pytest.approx(binomial_interval(1, 3))


def test_acc_norm_divides_by_characters_without_the_delimiter_on_non_ascii_choices(tmp_path, monkeypatch):
    """Hand-computed: choice 0 "ééé" (3 characters, continuation " ééé" 7 UTF-8 bytes, 2 tokens here)
    at -6 nats, choice 1 "abcd" (4 characters, 5 bytes, 5 tokens) at -7 nats.
    acc: -6 > -7 picks 0. acc_norm (per character): -2.0 < -1.75 picks 1.
    per byte: -6/7 = -0.857 > -7/5 = -1.4 picks 0. per token: -3.0 < -1.4 picks 1."""
    records = [{"question": "q", "choices": ["ééé", "abcd"], "answer": 1}]
    task = load_task(f"mc={write_jsonl(tmp_path / 'mc.jsonl', records)}")
    assert task.items[0].choices == ("ééé", "abcd") and task.items[0].target_delimiter == " "
    monkeypatch.setattr(engine, "continuation_nats", lambda model, pairs, **kw: [[3.0, 3.0], [1.4] * 5])
    result = score.score_task(None, task, CHAR, seq_len=64, device=torch.device("cpu"))
    assert result["outcomes"] == {"acc": "0", "acc_norm": "1", "acc_norm_per_byte": "0", "acc_norm_per_token": "1"}


def test_bits_per_byte_of_a_uniform_model_is_log2_of_the_vocabulary(tmp_path):
    model = FixedNextToken(torch.zeros(128))  # every next character equally likely: 7 bits each
    records = [{"question": "x", "answer": "12"}, {"question": "y", "answer": "a longer answer"}]
    task = load_task(f"bpb={write_jsonl(tmp_path / 'gold.jsonl', records)}")
    result = score.score_task(model, task, CHAR, seq_len=64, device=torch.device("cpu"))
    assert result["scores"]["bpb"] == pytest.approx(math.log2(128))
    low, high = result["intervals"]["bpb"]
    assert low == pytest.approx(7) and high == pytest.approx(7)


def test_log_likelihoods_batched_with_padding_equal_one_at_a_time():
    from matcher.config import ModelConfig
    from matcher.models import Model
    from matcher.plan.presets import get_preset

    torch.manual_seed(0)
    cfg: ModelConfig = get_preset("dr_da-tiny").replace(d_model=32, depth=2)
    model = Model(cfg).eval()
    pairs = [([2, 5, 6, 7], [8, 9]), ([2, 5], [10]), ([2] + list(range(20, 70)), [11, 12, 13])]
    batched = engine.continuation_nats(model, pairs, seq_len=32, pad_id=0, device=torch.device("cpu"))
    alone = [engine.continuation_nats(model, [pair], seq_len=32, pad_id=0, device=torch.device("cpu"))[0]
             for pair in pairs]
    for got, want in zip(batched, alone):
        assert got == pytest.approx(want, abs=1e-5)
    assert [len(n) for n in batched] == [2, 1, 3]
    texts = engine.greedy_generate(model, [p for p, _ in pairs], max_new_tokens=4, seq_len=32, pad_id=0, eos_id=3,
                                   device=torch.device("cpu"), decode=CHAR.decode, batch_size=2)
    one = [engine.greedy_generate(model, [p], max_new_tokens=4, seq_len=32, pad_id=0, eos_id=3,
                                  device=torch.device("cpu"), decode=CHAR.decode)[0] for p, _ in pairs]
    assert texts == one


def test_greedy_generation_stops_where_a_stop_string_completes():
    """A scripted model writes 40 characters, a stop string, then more: generation ends at the token that
    completes the stop string (it is looked for in the completion's tail, not the whole text each step),
    and the text is cut before it."""
    text = "x" * 40 + "\n\nQuestion: more words after"
    script = CHAR.encode(text)

    class Scripted(torch.nn.Module):
        calls = 0

        def new_cache(self, batch, max_len, pad_left=None):
            return None

        def forward(self, idx, cache=None):
            logits = torch.zeros(idx.shape[0], idx.shape[1], CHAR.vocab_size)
            logits[:, -1, script[self.calls]] = 1.0
            self.calls += 1
            return logits

    model = Scripted()
    out = engine.greedy_generate(model, [[2, 5]], max_new_tokens=len(script), seq_len=256, pad_id=0, eos_id=3,
                                 device=torch.device("cpu"), decode=CHAR.decode, stop=("\n\nQuestion:",))
    assert out == ["x" * 40]
    assert model.calls == len(CHAR.encode("x" * 40 + "\n\nQuestion:"))  # no token past the stop string


# ---------------------------------------------------------------------------------- intervals
def test_wilson_intervals_on_known_binomials():
    assert binomial_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert binomial_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert binomial_interval(64, 64)[1] == pytest.approx(1.0) and binomial_interval(64, 64)[0] > 0.94
    assert binomial_interval(0, 0) is None
    low, high = binomial_interval(500, 1000)
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.01)  # the normal limit


def test_bootstrap_ratio_interval_covers_the_ratio_and_narrows_with_more_items():
    import numpy as np

    rng = np.random.default_rng(1)
    few = rng.exponential(size=20), np.full(20, 10.0)
    many = rng.exponential(size=2000), np.full(2000, 10.0)
    low, high = ratio_interval(*few)
    assert low < few[0].sum() / 200 < high
    low_many, high_many = ratio_interval(*many)
    assert low_many < 0.1 < high_many and high_many - low_many < (high - low) / 4


# ----------------------------------------------------------------------- checkpoints, command
@pytest.fixture(scope="module")
def trained_dr(tmp_path_factory):
    from matcher.run.trainer import train_run

    run_dir = prepare(tmp_path_factory.mktemp("eval"), tiny_run("dr-tiny", tiny_train(eval_examples=6)))
    assert train_run(run_dir.path, device="cpu").state == "finished"
    return run_dir


def test_scoring_saved_checkpoints_reproduces_the_in_training_eval(trained_dr, capsys):
    from matcher.cli import main

    logged = [line for line in trained_dr.read_metrics() if line["event"] == "eval"]
    assert main(["eval", str(trained_dr.path), "--all-steps", "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["task"], r["step"], r["tokens"], r["n"], r["depth"]) for r in rows] == [
        ("embedded", e["step"], e["tokens"], 6, 4) for e in logged]
    for row, line in zip(rows, logged):
        assert row["scores"] == {"acc": line["eval_accuracy"], "loss": line["eval_loss"], "bpb": line["eval_bpb"],
                                 "loss_answer": line["eval_loss_answer"], "loss_chain": line["eval_loss_chain"]}
        assert row["intervals"]["acc"] == [line["eval_accuracy_low"], line["eval_accuracy_high"]]
    stored = [json.loads(line) for line in trained_dr.evals.read_text().splitlines()]
    assert [r["step"] for r in stored] == [e["step"] for e in logged]
    assert stored[-1]["outcomes"]["acc"] == logged[-1]["eval_correct"]


def test_test_time_depth_scores_a_dr_checkpoint_at_other_depths(trained_dr, capsys):
    from matcher.cli import main

    assert main(["eval", str(trained_dr.path), "--task", "latent,n=4", "--task", "embedded,n=4",
                 "--depth", "2,4,8", "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["task"], r["depth"], r["n"]) for r in rows] == [
        (task, depth, 4) for depth in (2, 4, 8) for task in ("latent-n4", "embedded-n4")]
    losses = {r["depth"]: r["scores"]["loss"] for r in rows if r["task"] == "embedded-n4"}
    assert len(set(losses.values())) == 3  # the depth changes the model
    stored = {(r["spec"], r["depth"]) for r in map(json.loads, trained_dr.evals.read_text().splitlines())}
    assert stored == {(r["spec"], r["depth"]) for r in rows} | {("embedded", 4)}  # beside the earlier rows


def test_eval_errors_are_clear(trained_dr, tmp_path, capsys):
    from matcher.cli import main

    assert main(["eval", str(trained_dr.path), "--step", "3", "--device", "cpu"]) == 2
    assert "no model checkpoint at step 3; saved steps: 1, 5, 24" in " ".join(capsys.readouterr().err.split())
    assert main(["eval", str(trained_dr.path), "--depth", "two"]) == 2
    untrained = prepare(tmp_path, tiny_run("la-tiny"))
    assert main(["eval", str(untrained.path)]) == 2
    assert "no model checkpoints" in " ".join(capsys.readouterr().err.split())


def test_eval_on_a_device_torch_cannot_use_is_one_error(trained_dr, monkeypatch, capsys):
    """`eval --device cuda` where torch sees no GPU (a CPU-only build) ended in a traceback."""
    import torch

    from matcher.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["eval", str(trained_dr.path), "--device", "cuda"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "device cuda was asked for, but torch sees no CUDA GPU here" in message and "--device cpu" in message
    assert "Traceback" not in message
    assert main(["eval", str(trained_dr.path), "--device", "gpu"]) == 2
    assert "--device 'gpu' is not a device; give cpu or cuda" in " ".join(capsys.readouterr().err.split())


def test_training_on_a_device_torch_cannot_use_is_one_error(tmp_path, monkeypatch):
    import torch

    from matcher.errors import RunError
    from matcher.run.trainer import train_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    with pytest.raises(RunError, match="torch sees no CUDA GPU here"):
        train_run(run_dir.path, device="cuda")


@pytest.mark.parametrize("damage", ["cut", "nan"])
def test_a_damaged_checkpoint_is_refused_and_nothing_is_stored(trained_dr, tmp_path, capsys, damage):
    import shutil

    from matcher.cli import main
    from matcher.run.snapshots import list_snapshots

    copy = tmp_path / "copy run"
    shutil.copytree(trained_dr.path, copy)
    step, path = list_snapshots(copy)[-1]
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[:len(data) * 2 // 3]
    else:  # 0xff bytes at the end of the data region: NaN in fp32 and bf16 alike
        data[-64:] = b"\xff" * 64
    path.write_bytes(bytes(data))
    before = (copy / "evals.jsonl").read_bytes() if (copy / "evals.jsonl").is_file() else None
    assert main(["eval", str(copy), "--device", "cpu"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert ("cannot be read" in message or "not a readable" in message) if damage == "cut" else \
        "hold NaN or infinite values" in message
    assert ((copy / "evals.jsonl").read_bytes() if (copy / "evals.jsonl").is_file() else None) == before


def test_matcher_eval_refuses_long_items_unless_truncate_left_and_shows_the_count(trained_dr, tmp_path, capsys):
    from matcher.cli import main

    def stored():
        return trained_dr.evals.read_bytes() if trained_dr.evals.is_file() else None

    before = stored()
    spec = f"gsm8k={long_gsm8k(tmp_path)},n_shot=0,max_new_tokens=4"
    assert main(["eval", str(trained_dr.path), "--task", spec, "--device", "cpu"]) == 2
    assert "2 of 4 items do not fit the model's context of 64 tokens" in " ".join(capsys.readouterr().err.split())
    assert stored() == before
    assert main(["eval", str(trained_dr.path), "--task", spec, "--device", "cpu", "--truncate", "left"]) == 0
    assert "4 (2 truncated)" in capsys.readouterr().out
    assert [row.get("truncated") for row in map(json.loads, trained_dr.evals.read_text().splitlines())
            if row["task"] == "gsm8k-gsm"] == [2]


def recomputed(samples: list[dict]) -> dict:
    """Every metric of a task computed again from its samples file alone, as lm-evaluation-harness and
    matcher define them."""
    from matcher.eval import extract

    first = samples[0]
    if "loglikelihoods" in first:  # mc
        def picks(divisors):
            return [max(range(len(s["loglikelihoods"])), key=lambda i: s["loglikelihoods"][i] / divisors(s)[i])
                    == s["gold"] for s in samples]
        decided = {"acc": picks(lambda s: [1] * len(s["loglikelihoods"])),
                   "acc_norm": picks(lambda s: s["choice_chars"]),
                   "acc_norm_per_byte": picks(lambda s: s["choice_bytes"]),
                   "acc_norm_per_token": picks(lambda s: s["choice_tokens"])}
        return {metric: sum(right) / len(right) for metric, right in decided.items()}
    if "generation" in first and isinstance(first["extracted"], dict):  # gsm8k
        return {name: sum(extract.gsm8k_correct(getattr(extract, f"gsm8k_{name}")(s["generation"]), s["gold"])
                          for s in samples) / len(samples) for name in ("strict", "flexible")}
    if "chain_tokens" in first:  # embedded
        from matcher.data.problems import final_number

        nats = [n for s in samples for n in s["token_nats"]]
        chain = [n for s in samples for n in s["token_nats"][:s["chain_tokens"]]]
        answer = [n for s in samples for n in s["token_nats"][s["chain_tokens"]:]]
        return {"acc": sum(final_number(s["generation"]) == s["gold"] for s in samples) / len(samples),
                "loss": sum(nats) / len(nats), "loss_answer": sum(answer) / len(answer),
                "loss_chain": sum(chain) / len(chain) if chain else None,
                "bpb": sum(sum(s["token_nats"][:-1]) for s in samples) / math.log(2) / sum(s["bytes"] for s in samples)}
    return {"bpb": sum(sum(s["token_nats"]) for s in samples) / math.log(2) / sum(s["bytes"] for s in samples)}


def test_samples_are_stored_and_recompute_every_metric(trained_dr, tmp_path, capsys):
    from matcher.cli import main
    from matcher.run.evaluate import read_samples, samples_path

    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": f"{i}+{i}?", "choices": [str(2 * i), f"{i}é", "x" * (i + 1)],
                                              "answer": i % 3} for i in range(5)])
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [{"question": f"y={i}+1?", "answer": f"y={i + 1} #### {i + 1}"}
                                               for i in range(4)])
    bpb = write_jsonl(tmp_path / "bpb.jsonl", [{"question": "q", "answer": "a gold answer"}])
    assert main(["eval", str(trained_dr.path), "--task", "embedded", "--task", "latent,n=4", "--task", f"mc={mc}",
                 "--task", f"gsm8k={gsm},n_shot=0,max_new_tokens=6", "--task", f"bpb={bpb}", "--json",
                 "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5
    for row in rows:
        samples = read_samples(samples_path(trained_dr.path, row["step"], row["setting"]))
        assert len(samples) == row["n"] and all(len(s["prompt_sha256"]) == 16 for s in samples)
        again = recomputed(samples)
        assert set(again) == set(row["scores"])
        for metric, value in row["scores"].items():
            assert again[metric] == (None if value is None else pytest.approx(value, rel=1e-9)), (row["task"], metric)
    by_task = {row["task"]: row for row in rows}
    assert by_task["latent-n4"]["scores"]["loss_chain"] is None  # the latent form has no chain
    mc_samples = read_samples(samples_path(trained_dr.path, rows[0]["step"], by_task["mc-mc"]["setting"]))
    assert [s["id"] for s in mc_samples] == [f"line {i}" for i in range(1, 6)] and mc_samples[1]["choice_chars"] == [
        1, 2, 2] and mc_samples[1]["choice_bytes"] == [2, 4, 3]


def test_show_prints_the_first_wrong_items(trained_dr, tmp_path, capsys):
    from matcher.cli import main
    from matcher.commands.eval import wrong_samples
    from matcher.run.evaluate import read_samples, samples_path

    last_eval = [line for line in trained_dr.read_metrics() if line["event"] == "eval"][-1]
    last = last_eval["step"]
    stored = read_samples(samples_path(trained_dr.path, last, last_eval["eval_setting"]))
    wrong = wrong_samples(stored)
    assert wrong == [s for s in stored if not s["correct"]["acc"]] and wrong  # a 24-step model gets most wrong
    assert main(["eval", str(trained_dr.path), "--show", "2"]) == 0  # the stored samples: nothing scored
    out = " ".join(capsys.readouterr().out.split())
    setting_id = last_eval["eval_setting"].split(" ")[0]
    assert f"embedded (setting {setting_id}) at step {last}: {len(wrong)} wrong, the first 2" in out
    assert wrong[0]["id"] in out and wrong[1]["id"] in out
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": a} for a in (0, 1)])
    assert main(["eval", str(trained_dr.path), "--task", f"mc={mc}", "--show", "5", "--device", "cpu"]) == 0
    assert "mc-mc (setting " in " ".join(capsys.readouterr().out.split())  # one of the two is wrong
    assert main(["eval", str(trained_dr.path), "--step", "3", "--show", "1"]) == 2
    assert "no stored samples at step 3" in " ".join(capsys.readouterr().err.split())


def test_large_samples_are_compressed_and_read_back(tmp_path, monkeypatch):
    from matcher.eval.setting import setting_text
    from matcher.run import evaluate

    setting = setting_text("mc-test", data="sha256:0", n=50, shots=0, budget="-", depth="trained", truncate="none",
                           metrics=1)
    path = evaluate.samples_path(tmp_path, 7, setting)
    many = [{"id": f"line {i}", "generation": "x" * 100} for i in range(50)]
    monkeypatch.setattr(evaluate, "SAMPLES_GZIP_BYTES", 1000)
    written = evaluate.write_samples(path, many)
    assert written.name == f"mc-test.{setting[:8]}.samples.jsonl.gz" and not path.exists()
    assert evaluate.read_samples(path) == many
    monkeypatch.setattr(evaluate, "SAMPLES_GZIP_BYTES", 1 << 20)
    assert evaluate.write_samples(path, many[:2]) == path and not written.exists()  # one file per step and task
    assert evaluate.read_samples(path) == many[:2]


def test_a_limit_is_shown_as_n_scored_of_n(trained_dr, tmp_path, capsys):
    from matcher.cli import main
    from matcher.config import TrainConfig
    from matcher.data.streams import eval_problems
    from matcher.eval.tasks import run_eval_task

    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": f"q{i}", "choices": ["a", "b"], "answer": 0}
                                             for i in range(5)])
    assert main(["eval", str(trained_dr.path), "--task", f"mc={mc},limit=2", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "│ 2 of 5 │" in table
    assert main(["eval", str(trained_dr.path), "--task", f"mc={mc},limit=2", "--json", "--device", "cpu"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(row["n"], row["n_total"]) for row in rows} == {(2, 5)}
    (setting_id,) = {row["setting"].split(" ")[0] for row in rows}
    assert f"│ {setting_id} │" in table  # the table names each row's setting by its id
    problems = write_jsonl(tmp_path / "gsm.jsonl", [{"question": f"{i}+1?", "answer": f"#### {i + 1}"}
                                                     for i in range(5)])
    cfg = TrainConfig(total_tokens=4096, batch_size=2, seq_len=64, eval_data=str(problems), eval_examples=3)
    assert run_eval_task(eval_problems(cfg.eval_data, 2, 3), cfg).n_total == 5  # eval_examples: 3 of 5
    assert run_eval_task(eval_problems(cfg.eval_data, 2, 9), cfg).n_total is None  # all of them


def test_keep_policy_keeps_the_newest_checkpoints(tmp_path):
    from matcher.run.snapshots import list_snapshots
    from matcher.run.trainer import train_run

    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(eval_examples=1, keep_checkpoints=2)))
    assert train_run(run_dir.path, device="cpu").state == "finished"
    assert [step for step, _ in list_snapshots(run_dir.path)] == [5, 24]
    assert run_dir.checkpoint.is_file()


# ----------------------------------------------------------------------- eval settings (one per curve)
def test_the_setting_id_changes_with_each_part(tmp_path):
    from matcher.eval.setting import parse_setting, setting_text, task_setting, without_depth

    base = dict(data="sha256:0f3c9a1e2b7d", n=200, n_total=None, shots=5, budget=256, depth="trained",
                truncate="none", metrics=1)
    changed = dict(data="sha256:aaaaaaaaaaaa", n=20, n_total=1319, shots=0, budget=128, depth=8, truncate="left",
                   metrics=2)
    first = setting_text("gsm8k-test", **base)
    ids = {first.split(" ")[0]}
    for key, value in changed.items():
        other = setting_text("gsm8k-test", **{**base, key: value})
        ids.add(other.split(" ")[0])
        assert other != first and parse_setting(other)[1] == "gsm8k-test"
        assert (without_depth(other) == without_depth(first)) == (key == "depth")  # a curve spans depths
    ids.add(setting_text("gsm8k-train", **base).split(" ")[0])
    assert len(ids) == 2 + len(changed)  # every part, and the task, gives another id
    assert setting_text("gsm8k-test", **base) == first  # stable
    assert parse_setting(first) == (first[:8], "gsm8k-test", {
        "data": "sha256:0f3c9a1e2b7d", "n": "200", "shots": "5", "budget": "256", "depth": "trained",
        "truncate": "none", "metrics": "1"})
    assert parse_setting(setting_text("mc-my file", **base))[1] == "mc-my file"  # a label with a space
    # from a task: its file's bytes, shots, the limit and the budget are all in it
    gsm = write_jsonl(tmp_path / "gsm.jsonl", [{"question": f"{i}+1?", "answer": f"#### {i + 1}"} for i in range(8)])
    plain = task_setting(load_task(f"gsm8k={gsm}"))
    assert " n=3 shots=5 budget=256 depth=trained truncate=none metrics=" in plain
    assert " n=2/3 " in task_setting(load_task(f"gsm8k={gsm},limit=2"))
    assert " shots=0 " in task_setting(load_task(f"gsm8k={gsm},n_shot=0"))
    assert " budget=9 " in task_setting(load_task(f"gsm8k={gsm},max_new_tokens=9"))
    assert " depth=16 truncate=left " in task_setting(load_task(f"gsm8k={gsm}"), depth="16", truncate="left")
    gsm.write_text(gsm.read_text().replace("1+1?", "1+2?"))
    assert task_setting(load_task(f"gsm8k={gsm}")).split(" ")[2] != plain.split(" ")[2]  # another file hash
    assert " data=generated-steps3 n=5 " in task_setting(load_task("embedded,n=5,steps=3"))


def test_a_rescore_with_another_setting_is_kept_beside_the_old_one(trained_dr, tmp_path, capsys):
    import shutil

    from matcher.cli import main
    from matcher.run.evaluate import read_rows, samples_path

    run = tmp_path / "sweep" / trained_dr.path.name
    shutil.copytree(trained_dr.path, run)
    (run / "evals.jsonl").unlink(missing_ok=True)
    shutil.rmtree(run / "evals")
    logged = [line for line in trained_dr.read_metrics() if line["event"] == "eval"][-1]
    for task in ("embedded", "embedded,limit=2", "embedded,limit=2"):  # the last: the same setting again
        assert main(["eval", str(run), "--task", task, "--json", "--device", "cpu"]) == 0
        capsys.readouterr()
    rows = read_rows(run / "evals.jsonl")
    assert [(r["n"], r.get("n_total")) for r in rows] == [(6, None), (2, 6)]  # both kept, the repeat replaced
    full, limited_row = rows
    assert full["setting"] == logged["eval_setting"]  # the same setting as the in-training eval it reproduces
    assert full["setting"] != limited_row["setting"] and " n=2/6 " in limited_row["setting"]
    for row in rows:
        assert samples_path(run, row["step"], row["setting"]).is_file()
    assert len(list((run / "evals" / str(full["step"])).glob("*.samples.jsonl"))) == 2
    # compare refuses to put both on one curve, and --eval-setting picks one
    assert main(["compare", str(run.parent), "--targets", "0.5"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "matcher eval embedded:" in err and "--eval-setting" in err
    assert full["setting"] in err and limited_row["setting"] in err
    assert main(["compare", str(run.parent), "--targets", "0.5", "--eval-setting", limited_row["setting"][:6]]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"matcher eval embedded: {limited_row['setting']}" in out
    assert f"in-training eval embedded: {logged['eval_setting']}" in out


def test_rows_without_a_setting_are_replaced_by_the_same_task_text(tmp_path):
    from matcher.eval.setting import setting_text
    from matcher.run.evaluate import read_rows, store_rows

    path = tmp_path / "evals.jsonl"
    old = {"task": "mc-x", "spec": "mc=x.jsonl", "step": 5, "depth": 4, "n": 3, "scores": {"acc": 0.5}}
    other = {**old, "step": 6}
    path.write_text(json.dumps(old) + "\n" + json.dumps(other) + "\n")
    setting = setting_text("mc-x", data="sha256:1", n=3, shots=0, budget="-", depth="trained", truncate="none",
                           metrics=1)
    store_rows(path, [{**old, "setting": setting, "scores": {"acc": 1.0}}])
    assert [(r["step"], r["scores"]["acc"], "setting" in r) for r in read_rows(path)] == [
        (6, 0.5, False), (5, 1.0, True)]
