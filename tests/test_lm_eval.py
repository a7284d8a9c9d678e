"""The lm-evaluation-harness adapter (optional extra matcher[lm-eval]): its three request types on a
hand-built model with known probabilities, and simple_evaluate of a tiny local task on a saved checkpoint."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
sys.path.insert(0, str(Path(__file__).parent))
from tiny_runs import prepare, tiny_run, tiny_train  # noqa: E402

from matcher.data.tokenizer import CHAR  # noqa: E402
from matcher.run.lm_eval_adapter import MatcherLM  # noqa: E402


class Uniform(torch.nn.Module):
    """Every next character equally likely, except `favourite`, which is always the argmax."""

    def __init__(self, favourite: int):
        super().__init__()
        self.logits = torch.zeros(128)
        self.logits[favourite] = 1e-3  # argmax without moving the probabilities measurably

    def forward(self, idx, targets=None, cache=None):
        return self.logits.expand(*idx.shape, -1).clone()

    def new_cache(self, batch_size, max_len, pad_left=None):
        return SimpleNamespace(pos=0, pad_left=pad_left)


def request(*args):
    return SimpleNamespace(args=args)


def test_request_types_on_a_model_with_known_probabilities():
    lm = MatcherLM(model=Uniform(ord("7")), tokenizer=CHAR, seq_len=16, device="cpu")
    (ll, greedy), (ll7, greedy7) = lm.loglikelihood([request("Q: 3+4? A:", " 8"), request("x", "7")])
    assert ll == pytest.approx(-2 * math.log(128), abs=1e-2) and not greedy
    assert ll7 == pytest.approx(-math.log(128), abs=1e-2) and greedy7
    text = "a text of forty characters, scored whole"
    assert lm.loglikelihood_rolling([request(text)])[0] == pytest.approx(-len(text) * math.log(128), abs=0.1)
    out = lm.generate_until([request("Q:", {"until": ["777"], "max_gen_toks": 10}),
                             request("Q:", {"max_gen_toks": 4})])
    assert out == ["", "7777"]  # cut before the stop string; the budget


@pytest.fixture(scope="module")
def trained_la(tmp_path_factory):
    from matcher.run.trainer import train_run

    run_dir = prepare(tmp_path_factory.mktemp("lm eval"), tiny_run("la-tiny", tiny_train(eval_examples=1)))
    assert train_run(run_dir.path, device="cpu").state == "finished"
    return run_dir


def write_task(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(f"task: {name}\ndataset_path: json\ntest_split: test\n{body}")

def write_mc_task(tmp_path: Path, name: str, questions: list[str]) -> None:
    """A local multiple-choice task `name` under tmp_path/tasks: each question's first choice is right."""
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": [str(i), str(i + 5)], "answer": 0}) + "\n"
                            for i, q in enumerate(questions)))
    write_task(tmp_path / "tasks", name, f"""dataset_kwargs:
  data_files:
    test: {json.dumps(str(data))}
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}} A:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""")



def test_simple_evaluate_scores_a_checkpoint_on_a_local_task(trained_la, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    write_mc_task(tmp_path, "matcher_tiny_mc", [f"k={i}; k?" for i in range(6)])
    lm = MatcherLM(str(trained_la.path), device="cpu")
    results = lm_eval.simple_evaluate(model=lm, tasks=["matcher_tiny_mc"],
                                      task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
    accuracy = results["results"]["matcher_tiny_mc"]["acc,none"]
    assert 0 <= accuracy <= 1 and results["n-samples"]["matcher_tiny_mc"]["effective"] == 6


# lm-evaluation-harness's gsm8k.yaml (v0.4), zero-shot and with a short budget, on a local file
GSM8K_YAML = """output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore:
      - ","
      - "\\\\$"
      - "(?s).*#### "
      - "\\\\.$"
generation_kwargs:
  until:
    - "Question:"
    - "</s>"
    - "<|im_end|>"
  do_sample: false
  temperature: 0.0
  max_gen_toks: 12
num_fewshot: 0
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{2,})|(-?[0-9]+)"
      - function: "take_first"
"""


def test_per_item_decisions_equal_the_harness_on_local_mc_and_gsm8k_files(trained_la, tmp_path):
    """The same files scored by lm_eval.simple_evaluate through the adapter and by `matcher eval`: every
    item's acc, acc_norm, strict and flexible decision is the same. The choices differ in length in
    characters and bytes (non-ASCII), so a per-byte acc_norm would not match."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from matcher.cli import main

    mc = tmp_path / "mc.jsonl"
    mc.write_text("".join(json.dumps({"question": f"x={i}+{i}", "choices": [str(2 * i), f"{i}é{i}", "éé" * (i + 1)],
                                      "answer": i % 3}, ensure_ascii=False) + "\n" for i in range(8)))
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"Q{i}: x={i}, y=x+1. y?", "answer": f"y={i + 1} #### {i + 1}"})
                           + "\n" for i in range(6)))
    write_task(tmp_path / "tasks", "parity_mc", f"""dataset_kwargs:
  data_files:
    test: {json.dumps(str(mc))}
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    write_task(tmp_path / "tasks", "parity_gsm8k", f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(gsm))}\n"
               + GSM8K_YAML)
    results = lm_eval.simple_evaluate(model=MatcherLM(str(trained_la.path), device="cpu"),
                                      tasks=["parity_mc", "parity_gsm8k"], log_samples=True,
                                      task_manager=TaskManager(include_path=str(tmp_path / "tasks")))

    def harness(task: str, metric: str, filter_name: str | None = None) -> str:
        samples = sorted((s for s in results["samples"][task] if filter_name in (None, s["filter"])),
                         key=lambda s: s["doc_id"])
        return "".join("1" if s[metric] else "0" for s in samples)

    assert main(["eval", str(trained_la.path), "--task", f"mc={mc},n_shot=0",
                 "--task", f"gsm8k={gsm},n_shot=0,max_new_tokens=12", "--device", "cpu"]) == 0
    ours = {row["task"]: row["outcomes"] for row in map(json.loads, trained_la.evals.read_text().splitlines())}
    assert len(ours["mc-mc"]["acc"]) == 8 and len(ours["gsm8k-gsm"]["strict"]) == 6
    assert ours["mc-mc"]["acc"] == harness("parity_mc", "acc")
    assert ours["mc-mc"]["acc_norm"] == harness("parity_mc", "acc_norm")
    assert ours["gsm8k-gsm"]["strict"] == harness("parity_gsm8k", "exact_match", "strict-match")
    assert ours["gsm8k-gsm"]["flexible"] == harness("parity_gsm8k", "exact_match", "flexible-extract")


@pytest.mark.parametrize("output", [
    " 3 + 4 = 7\n#### 7", " The answer is $1,250.", " #### 3.50\n\n", " no number", " 12 then #### 12 and 9",
    " -4 degrees", " it is 7, or 8", " $.", " #### 1,250.", " 5.", " ####7", " 10 #### -10", " 2.5.",
])
@pytest.mark.parametrize("reference", ["2 + 5 = 7\n#### 7", "#### 1,250", "#### 3.5", "x #### 8", "#### -10",
                                       "#### 5", "#### 12"])
def test_gsm8k_filters_and_exact_match_equal_the_harness(output, reference):
    """Our strict and flexible decisions against the harness's own RegexFilter and exact_match with
    gsm8k.yaml's settings, on outputs that trip simpler extractors."""
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    from matcher.eval import extract

    def harness(pattern: str, group_select: int) -> bool:
        filtered = RegexFilter(regex_pattern=pattern, group_select=group_select).apply([[output]], [{}])[0][0]
        score = exact_match_hf_evaluate([filtered], [reference], regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"],
                                        ignore_case=True, ignore_punctuation=False)
        return score["exact_match"] == 1.0

    assert extract.gsm8k_correct(extract.gsm8k_strict(output), reference) == harness(r"#### (\-?[0-9\.\,]+)", 0)
    assert extract.gsm8k_correct(extract.gsm8k_flexible(output), reference) == harness(
        r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1)


def test_matcher_lm_eval_runs_the_harness_cli_on_a_checkpoint(trained_la, tmp_path, capsys):
    from matcher.cli import main

    write_mc_task(tmp_path, "matcher_cli_mc", [f"k={i}" for i in range(4)])
    assert main(["lm-eval", str(trained_la.path), "--step", "5", "--", "--tasks", "matcher_cli_mc",
                 "--include_path", str(tmp_path / "tasks")]) == 0  # no --device: cpu on a CPU build
    rows = [row for row in map(json.loads, trained_la.evals.read_text().splitlines())
            if row["task"] == "lm-eval-matcher_cli_mc"]
    assert len(rows) == 1 and rows[0]["step"] == 5 and rows[0]["n"] == 4 and 0 <= rows[0]["scores"]["acc"] <= 1
    assert rows[0]["source"] == "lm-evaluation-harness"
    assert rows[0]["setting"].split(" ", 1)[1] == (  # its own eval identity, beside matcher's tasks
        f"lm-eval-matcher_cli_mc data=lm-eval n=4 shots=default budget=lm-eval depth=trained truncate=none "
        f"metrics=lm-eval-{lm_eval.__version__}")
    assert list((trained_la.path / "lm-eval" / "step-5").rglob("results_*.json"))
    assert main(["lm-eval", str(trained_la.path), "--", "--model", "hf", "--tasks", "x"]) == 2
    assert "--model: matcher lm-eval sets the model" in " ".join(capsys.readouterr().err.split())
