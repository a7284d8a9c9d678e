"""Evaluation at a checkpoint: the answer loss (teacher forced) and the exact-match accuracy of greedy
answers decoded through the KV cache.

- eval_loss: mean cross-entropy (nats per token) of the answer tokens (" <answer>" and EOS) given
  `BOS Q: <question> A:`; prompt tokens are not scored.
- eval_accuracy: share of problems whose generated final number (after the last `####`) equals the
  reference one.

Sequences longer than the training context are cut from the left (the question's start goes first),
so the model never decodes past positions it was trained on.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
import torch.nn.functional as F

from matcher.data.problems import Problem, final_number, prompt_text
from matcher.data.tokenizer import CHAR, Tokenizer
from matcher.models import IGNORE_INDEX

ANSWER_SLACK_TOKENS = 8  # generated beyond the reference answer's length: room for a longer wrong answer
EVAL_BATCH = 32


def _loss_rows(problems: list[Problem], seq_len: int, tokenizer: Tokenizer) -> list[tuple[list[int], list[int]]]:
    rows = []
    for problem in problems:
        # prompt and answer encoded apart, as `matcher data encode` writes question/answer records
        prompt = [tokenizer.bos_id, *tokenizer.encode(prompt_text(problem.question))]
        tokens = [*prompt, *tokenizer.encode(" " + problem.answer), tokenizer.eos_id]
        prompt_tokens = len(prompt)  # BOS + prompt
        inputs, targets = tokens[:-1], tokens[1:]
        targets = [IGNORE_INDEX] * (prompt_tokens - 1) + targets[prompt_tokens - 1:]
        rows.append((inputs[-seq_len:], targets[-seq_len:]))
    return rows


@torch.no_grad()
def answer_loss(model, problems: list[Problem], *, seq_len: int, device: torch.device,
                autocast: contextlib.AbstractContextManager, tokenizer: Tokenizer = CHAR) -> float:
    rows = _loss_rows(problems, seq_len, tokenizer)
    total_nats, total_tokens = 0.0, 0
    for start in range(0, len(rows), EVAL_BATCH):
        chunk = rows[start:start + EVAL_BATCH]
        width = max(len(inputs) for inputs, _ in chunk)
        x = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
        y = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for i, (inputs, targets) in enumerate(chunk):
            x[i, :len(inputs)] = torch.tensor(inputs)
            y[i, :len(targets)] = torch.tensor(targets)
        x, y = x.to(device), y.to(device)
        with autocast:
            logits = model(x)  # (B, T, vocab); padding sits after each row's tokens, causal: harmless
        total_nats += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX,
                                      reduction="sum").item()
        total_tokens += int((y != IGNORE_INDEX).sum())
    return total_nats / max(1, total_tokens)


@torch.no_grad()
def answer_accuracy(model, problems: list[Problem], *, seq_len: int, device: torch.device,
                    autocast: contextlib.AbstractContextManager, early_stop: bool = True,
                    tokenizer: Tokenizer = CHAR) -> float:
    """Greedy answers, batched over prompts of equal length (the model takes no padding mask).
    `early_stop: False` decodes every batch to its full budget, so that all ranks of a sharded
    model run the same number of forward passes."""
    by_length: dict[int, list[tuple[list[int], int, Problem]]] = defaultdict(list)
    for problem in problems:
        budget = len(tokenizer.encode(" " + problem.answer)) + 1 + ANSWER_SLACK_TOKENS
        prompt = [tokenizer.bos_id, *tokenizer.encode(prompt_text(problem.question))][-max(1, seq_len - budget):]
        by_length[len(prompt)].append((prompt, budget, problem))
    correct = 0
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), EVAL_BATCH):
            chunk = group[start:start + EVAL_BATCH]
            prompts = torch.tensor([prompt for prompt, _, _ in chunk], dtype=torch.long, device=device)
            budget = max(budget for _, budget, _ in chunk)
            with autocast:
                out = model.generate(prompts, budget, stop_token=tokenizer.eos_id if early_stop else None)
            for row, (_, _, problem) in zip(out[:, length:].tolist(), chunk):
                correct += final_number(tokenizer.decode(row)) == problem.final
    return correct / max(1, len(problems))
