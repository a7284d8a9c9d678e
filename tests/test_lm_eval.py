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

pytest.importorskip("lm_eval")
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


def test_simple_evaluate_scores_a_checkpoint_on_a_local_task(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from matcher.run.trainer import train_run

    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(eval_examples=1)))
    assert train_run(run_dir.path, device="cpu").state == "finished"
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": f"k={i}; k?", "choices": [str(i), str(i + 5)], "answer": 0}) + "\n"
                            for i in range(6)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny.yaml").write_text(f"""task: matcher_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}} A:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""")
    lm = MatcherLM(str(run_dir.path), device="cpu")
    results = lm_eval.simple_evaluate(model=lm, tasks=["matcher_tiny_mc"],
                                      task_manager=TaskManager(include_path=str(tasks)))
    accuracy = results["results"]["matcher_tiny_mc"]["acc,none"]
    assert 0 <= accuracy <= 1 and results["n-samples"]["matcher_tiny_mc"]["effective"] == 6
