"""Fit or refuse: every item's prompt plus what is scored or generated after it must fit the model's
context (seq_len), measured in the run's tokens before anything is scored. An item that does not fit
would be scored on the last seq_len tokens only (matcher/eval/engine.py cuts the oldest), and a 5-shot
prompt cut to its tail is not the task the score is named after. So by default the eval refuses; with
`--truncate left` it scores anyway and the result carries `truncated: k`, the count of items cut.

What an item needs, in tokens (BOS included):
- generation (gsm8k, math, embedded): prompt + the generation budget (max_new_tokens);
- log-likelihood (mc choices, bpb and embedded gold answers): prompt + continuation - 1 (the last
  token is predicted, never fed).

Importing this module does not import torch: `matcher sweep validate` and `plan` run the same check.
"""

from __future__ import annotations

from dataclasses import dataclass

from matcher.data.tokenizer import Tokenizer
from matcher.errors import DataError
from matcher.eval.tasks import Task

TRUNCATE_MODES = ("left",)


@dataclass(frozen=True)
class Fit:
    seq_len: int
    needed_tokens: list[int]  # per item: the context it needs

    @property
    def too_long(self) -> list[int]:
        return [i for i, need in enumerate(self.needed_tokens) if need > self.seq_len]

    @property
    def longest_tokens(self) -> int:
        return max(self.needed_tokens, default=0)


def measure(task: Task, tokenizer: Tokenizer, seq_len: int) -> Fit:
    """The context each of `task`'s items needs."""
    items = task.items
    prompts = [1 + len(ids) for ids in tokenizer.encode_batch([item.prompt for item in items])]  # + BOS
    kind = task.spec.kind
    if kind == "choice":
        continuations = [[item.target_delimiter + choice for choice in item.choices] for item in items]
        flat = tokenizer.encode_batch([text for texts in continuations for text in texts])
        longest, at = [], 0
        for texts in continuations:
            longest.append(max(len(ids) for ids in flat[at:at + len(texts)]))
            at += len(texts)
        needed = [prompt + cont - 1 for prompt, cont in zip(prompts, longest)]
    elif kind == "bpb":
        references = tokenizer.encode_batch([item.reference for item in items])
        needed = [prompt + len(ids) - 1 for prompt, ids in zip(prompts, references)]
    elif kind == "embedded":  # the gold answer + EOS is scored, and an answer is generated
        references = tokenizer.encode_batch([item.reference for item in items])
        needed = [prompt + max(task.max_new_tokens, len(ids)) for prompt, ids in zip(prompts, references)]
    else:
        needed = [prompt + task.max_new_tokens for prompt in prompts]
    return Fit(seq_len, needed)


def check_fit(task: Task, tokenizer: Tokenizer, seq_len: int, truncate: str | None = None, *,
              in_training: bool = False) -> int:
    """The number of `task`'s items that do not fit a context of `seq_len` tokens; a DataError naming
    them when there are any and `truncate` is None. `in_training`: the run's own eval set, which has
    no --truncate, so the message names the train settings instead."""
    if truncate is not None and truncate not in TRUNCATE_MODES:
        raise DataError(f"--truncate {truncate}: choose {' or '.join(TRUNCATE_MODES)} (cut the oldest prompt tokens)")
    fit = measure(task, tokenizer, seq_len)
    too_long = fit.too_long
    if too_long and truncate is None:
        raise DataError(fit_message(task, fit, in_training))
    return len(too_long)


def fit_message(task: Task, fit: Fit, in_training: bool = False) -> str:
    budget = "generation budget" if task.spec.kind in ("generate", "embedded") else "scored continuation"
    head = (f"{task.label}: {len(fit.too_long)} of {len(fit.needed_tokens)} items do not fit the model's context "
            f"of {fit.seq_len} tokens with their {budget}; the longest needs {fit.longest_tokens} tokens.")
    if in_training:
        return (f"{head} The in-training eval scores whole problems: use train.seq_len >= {fit.longest_tokens}, or "
                "shorter eval problems (train.data_steps, train.eval_data)")
    n_shot = task.options.get("n_shot", task.spec.n_shot)
    changes = []
    if task.spec.kind != "embedded" and str(n_shot) != "0":
        changes.append(f"fewer few-shot examples (n_shot, now {n_shot})")
    if task.spec.kind == "generate":
        changes.append(f"a smaller max_new_tokens (now {task.max_new_tokens})")
    changes.append(f"a model trained with seq_len >= {fit.longest_tokens}")
    return (f"{head} Use {', or '.join(changes)}; or score them cut to their last tokens with --truncate left "
            "(the row then counts them as truncated)")
