"""Scoring a model on a task: one result per task with the number of items `n`, each metric's value,
its interval, and the per-item outcomes (what bootstrap intervals over problems resample).

- accuracies (embedded/latent acc, gsm8k strict and flexible, math acc, mc acc and acc_norm): the share
  of items right, with a Wilson interval (matcher/eval/intervals.py);
- mc, as lm-evaluation-harness scores multiple_choice: a choice's score is the sum of the
  log-probabilities of its continuation's tokens (target delimiter + choice) given the question; acc
  takes the best, acc_norm the best per character of the choice's text without the delimiter
  (`len(choice)`, the harness's completion_len); ties go to the first choice (np.argmax). Our variants
  have their own names: acc_norm_per_byte (per UTF-8 byte of the continuation) and acc_norm_per_token
  (per token of the continuation);
- gsm8k strict and flexible: the harness's strict-match and flexible-extract filters and exact_match
  (matcher/eval/extract.py);
- bpb: the gold continuations' nats summed, over ln 2 and their UTF-8 bytes, with a bootstrap interval
  over items; loss (embedded): mean nats per answer token, EOS included.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from matcher import fmt
from matcher.data.problems import final_number
from matcher.data.tokenizer import Tokenizer
from matcher.eval import engine, extract
from matcher.eval.fit import check_fit
from matcher.eval.intervals import ACCURACY_METRICS, binomial_interval, ratio_interval
from matcher.eval.tasks import Item, Task

# Part of every eval's setting (matcher/eval/setting.py): raise it when any metric's computation changes,
# so scores computed before and after never share a curve.
METRICS_VERSION = 1


def score_task(model, task: Task, tokenizer: Tokenizer, *, seq_len: int, device: torch.device,
               autocast: contextlib.AbstractContextManager | None = None, truncate: str | None = None,
               on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """{"task", "n", "scores", "intervals", "outcomes", "samples"} of `model` (in eval mode) on `task`
    (samples: one record per item, matcher/run/evaluate.py writes them beside the scores), and with
    `truncate` ("left") the count of items cut to the context (`truncated`); without it, items that do
    not fit the context are refused (matcher/eval/fit.py). Collective under torch.distributed: every
    rank calls it and gets the same result. `on_progress(text)` is told after each batch how far the
    task has come, such as "generation 64/200 items, ETA 12s"."""
    truncated = check_fit(task, tokenizer, seq_len, truncate)
    kwargs = dict(seq_len=seq_len, device=device, autocast=autocast,
                  on_rows=None if on_progress is None else _rows_reporter(task, on_progress))
    kind = task.spec.kind
    if kind == "embedded":
        per_item = engine.map_over_ranks(task.items, lambda items: _embedded(model, task, items, tokenizer, **kwargs))
    elif kind == "generate":
        per_item = engine.map_over_ranks(task.items, lambda items: _generated(model, task, items, tokenizer, **kwargs))
    elif kind == "choice":
        per_item = engine.map_over_ranks(task.items, lambda items: _choices(model, items, tokenizer, **kwargs))
    else:
        per_item = engine.map_over_ranks(task.items, lambda items: _gold_bits(model, items, tokenizer, **kwargs))
    result = summarise(task, per_item)
    if task.n_total is not None:
        result["n_total"] = task.n_total
    if truncate is not None:
        result["truncated"] = truncated
    return result


def _rows_reporter(task: Task, on_progress: Callable[[str], None]) -> engine.RowsDone:
    """The engine's rows done as text: a row is an item, or one choice of an item for multiple choice;
    the ETA is at the pass's rate so far."""
    unit = "choices" if task.spec.kind == "choice" else "items"
    started: dict[str, float] = {}

    def report(kind: str, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed_s = now - started.setdefault(kind, now)
        text = f"{kind} {done:,}/{total:,} {unit}"
        if 0 < done < total and elapsed_s > 0:
            text += f", ETA {fmt.duration((total - done) * elapsed_s / done)}"
        on_progress(text)

    return report


def summarise(task: Task, per_item: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's result from per-item records ({metric: bool} for accuracies; bits and bytes; nats and
    tokens for the answer loss)."""
    n = len(per_item)
    scores, intervals, outcomes = {}, {}, {}
    for metric in task.spec.metrics:
        if metric in ACCURACY_METRICS:
            right = [bool(item[metric]) for item in per_item]
            scores[metric] = sum(right) / n if n else None
            intervals[metric] = binomial_interval(sum(right), n)
            outcomes[metric] = "".join("1" if r else "0" for r in right)
        elif metric == "bpb":
            bits, size = [item["bits"] for item in per_item], [item["bytes"] for item in per_item]
            scores[metric] = sum(bits) / sum(size) if sum(size) else None
            intervals[metric] = ratio_interval(bits, size)
            outcomes["bits"] = [round(b, 4) for b in bits]
            outcomes["bytes"] = size
        elif metric in ("loss", "loss_answer", "loss_chain"):
            part = metric.removeprefix("loss")
            nats, tokens = [item["nats" + part] for item in per_item], [item["tokens" + part] for item in per_item]
            scores[metric] = sum(nats) / sum(tokens) if sum(tokens) else None
            intervals[metric] = ratio_interval(nats, tokens) if sum(tokens) else None
    return {"task": task.label, "n": n, "scores": scores, "intervals": intervals, "outcomes": outcomes,
            "samples": [sample(item, record) for item, record in zip(task.items, per_item)]}


def prompt_hash(prompt: str) -> str:
    """Which prompt an item was given (few-shot examples included): the first 16 hex digits of its sha256."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def sample(item: Item, record: dict[str, Any]) -> dict[str, Any]:
    """One line of a samples file: the item, what the model did, and every metric's decision; enough
    to compute each metric again without the model (tests/test_eval.py does)."""
    correct = {key: bool(value) for key, value in record.items() if key in ACCURACY_METRICS}
    details = {key: value for key, value in record.items() if key not in ACCURACY_METRICS}
    return {"id": item.item_id, "prompt_sha256": prompt_hash(item.prompt), **details, "correct": correct}


def _context(tokenizer: Tokenizer, item: Item) -> list[int]:
    return [tokenizer.bos_id, *tokenizer.encode(item.prompt)]


def _embedded(model, task: Task, items: list[Item], tokenizer: Tokenizer, **kwargs) -> list[dict[str, Any]]:
    pairs = [(_context(tokenizer, item), [*tokenizer.encode(item.reference), tokenizer.eos_id]) for item in items]
    nats = engine.continuation_nats(model, pairs, pad_id=tokenizer.pad_id, **kwargs)
    texts = engine.greedy_generate(model, [context for context, _ in pairs], max_new_tokens=task.max_new_tokens,
                                   pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id, decode=tokenizer.decode,
                                   **kwargs)
    records = []
    for item, item_nats, text in zip(items, nats, texts):
        chain = _chain_tokens(item, tokenizer)
        extracted = final_number(text)
        records.append({
            "acc": extracted == item.target, "generation": text, "extracted": extracted, "gold": item.target,
            "token_nats": item_nats, "chain_tokens": chain, "bytes": len(item.reference.encode("utf-8")),
            **loss_parts(item_nats, chain)})
    return records


def _chain_tokens(item: Item, tokenizer: Tokenizer) -> int:
    """The reference's tokens before its final value (` #### N`): the written-out chain; 0 in the latent
    form, or when there is no `####`."""
    marker = item.reference.rfind(" ####")
    return len(tokenizer.encode(item.reference[:marker])) if marker > 0 else 0


def loss_parts(token_nats: list[float], chain_tokens: int) -> dict[str, float]:
    """The answer's nats and token counts: whole (EOS included), chain, and final value (with EOS); bits
    of the gold text (EOS excluded) for bpb."""
    return {"nats": sum(token_nats), "tokens": len(token_nats),
            "nats_chain": sum(token_nats[:chain_tokens]), "tokens_chain": chain_tokens,
            "nats_answer": sum(token_nats[chain_tokens:]), "tokens_answer": len(token_nats) - chain_tokens,
            "bits": sum(token_nats[:-1]) / math.log(2)}


def _generated(model, task: Task, items: list[Item], tokenizer: Tokenizer, **kwargs) -> list[dict[str, Any]]:
    texts = engine.greedy_generate(model, [_context(tokenizer, item) for item in items],
                                   max_new_tokens=task.max_new_tokens, pad_id=tokenizer.pad_id,
                                   eos_id=tokenizer.eos_id, decode=tokenizer.decode, stop=task.spec.stop, **kwargs)
    if task.spec.answer_format == "final_number":
        records = []
        for item, text in zip(items, texts):
            strict, flexible = extract.gsm8k_strict(text), extract.gsm8k_flexible(text)
            records.append({"strict": extract.gsm8k_correct(strict, item.reference),
                            "flexible": extract.gsm8k_correct(flexible, item.reference), "generation": text,
                            "extracted": {"strict": strict, "flexible": flexible}, "gold": item.reference.strip()})
        return records
    use_math_verify = extract.has_math_verify()
    records = []
    for item, text in zip(items, texts):
        answer = extract.math_answer(text)
        records.append({"acc": extract.math_equal(answer, item.target, use_math_verify=use_math_verify),
                        "generation": text, "extracted": answer, "gold": item.target,
                        "equivalence": "math-verify" if use_math_verify else "exact"})
    return records


def choice_scores(model, items: list[Item], tokenizer: Tokenizer, token_counts: list[list[int]] | None = None,
                  **kwargs) -> list[list[float]]:
    """Per item, the log-likelihood (nats, negative) of each choice's continuation given the question;
    `token_counts`, a list, receives each continuation's length in tokens."""
    pairs, owners = [], []
    for i, item in enumerate(items):
        context = _context(tokenizer, item)
        for choice in item.choices:
            pairs.append((context, tokenizer.encode(item.target_delimiter + choice)))
            owners.append(i)
    nats = engine.continuation_nats(model, pairs, pad_id=tokenizer.pad_id, **kwargs)
    scores: list[list[float]] = [[] for _ in items]
    counts: list[list[int]] = [[] for _ in items]
    for owner, choice_nats in zip(owners, nats):
        scores[owner].append(-sum(choice_nats))
        counts[owner].append(len(choice_nats))
    if token_counts is not None:
        token_counts[:] = counts
    return scores


def choice_decisions(item: Item, lls: list[float], token_counts: list[int]) -> dict[str, int]:
    """The choice each mc metric picks from the choices' log-likelihoods."""
    continuations = [item.target_delimiter + choice for choice in item.choices]
    return {"acc": _argmax(lls),
            "acc_norm": _argmax([ll / len(choice) for ll, choice in zip(lls, item.choices)]),
            "acc_norm_per_byte": _argmax([ll / len(text.encode("utf-8")) for ll, text in zip(lls, continuations)]),
            "acc_norm_per_token": _argmax([ll / count for ll, count in zip(lls, token_counts)])}


def _choices(model, items: list[Item], tokenizer: Tokenizer, **kwargs) -> list[dict[str, Any]]:
    counts: list[list[int]] = []
    results = []
    for item, lls, item_counts in zip(items, choice_scores(model, items, tokenizer, counts, **kwargs), counts):
        picked = choice_decisions(item, lls, item_counts)
        results.append({**{metric: choice == item.answer_index for metric, choice in picked.items()},
                        "loglikelihoods": lls, "choice_chars": [len(choice) for choice in item.choices],
                        "choice_bytes": [len((item.target_delimiter + c).encode("utf-8")) for c in item.choices],
                        "choice_tokens": item_counts, "picked": picked, "gold": item.answer_index})
    return results


def _gold_bits(model, items: list[Item], tokenizer: Tokenizer, **kwargs) -> list[dict[str, Any]]:
    pairs = [(_context(tokenizer, item), tokenizer.encode(item.reference)) for item in items]
    nats = engine.continuation_nats(model, pairs, pad_id=tokenizer.pad_id, **kwargs)
    return [{"token_nats": item_nats, "bits": sum(item_nats) / math.log(2),
             "bytes": len(item.reference.encode("utf-8"))} for item, item_nats in zip(items, nats)]


def _argmax(values: list[float]) -> int:
    """The first index of the largest value, as numpy.argmax."""
    return max(range(len(values)), key=lambda i: values[i])
