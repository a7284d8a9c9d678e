"""Running a model over eval items: log-likelihoods of continuations and greedy generation, batched over
prompts of different lengths, and the split of items over the ranks of a torchrun group.

- Log-likelihoods: context + continuation rows, right-padded (causal attention: padding after a row's
  tokens changes none of its logits); sorted by length so a batch holds similar lengths.
- Generation: prompts left-padded, with the padding masked and positions counted from each row's
  first token (Model.new_cache(pad_left=...)), decoded through the KV cache until every row has emitted
  EOS or a stop string, or the budget is spent.
- A row longer than the training context loses its oldest tokens: the model never sees positions it
  was not trained on. A generation prompt keeps at most seq_len - budget tokens (at least half the
  context), and generation stops at the context's end.
- Under torch.distributed (`synced`) every rank runs the same number of forwards, so the collectives a
  sharded (FSDP) model runs inside each forward stay paired: batch counts and decoding steps are agreed
  with an all-reduce, and a rank with less work runs padding batches.
- `on_rows(kind, done, total)`, when given, is told before the first batch and after each one how many
  of this process's rows are done ("log-likelihoods" or "generation"), for progress in a log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

EVAL_BATCH = 32  # rows per forward
RowsDone = Callable[[str, int, int], None]  # (kind, rows done, rows in all)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _agree_max(value: int, device: torch.device) -> int:
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def map_over_ranks(items: Sequence[Any], work: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """work(items) on one process; under torch.distributed each rank works on items[rank::world] and the
    results are gathered back into item order on every rank."""
    if not distributed():
        return list(work(list(items)))

    rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(items[rank::world])
    results = list(work(mine))
    gathered: list[list[Any] | None] = [None] * world
    dist.all_gather_object(gathered, results)
    ordered: list[Any] = [None] * len(items)
    for r, part in enumerate(gathered):
        for i, result in enumerate(part):
            ordered[r + i * world] = result
    return ordered


@torch.no_grad()
def continuation_nats(model, pairs: Sequence[tuple[list[int], list[int]]], *, seq_len: int, pad_id: int,
                      device: torch.device, autocast: contextlib.AbstractContextManager | None = None,
                      batch_size: int = EVAL_BATCH, greedy: list[bool] | None = None,
                      on_rows: RowsDone | None = None) -> list[list[float]]:
    """For each (context, continuation) token pair: the nats (-log p) of each continuation token given
    everything before it. The continuation must not be empty. `greedy`, a list, receives per pair
    whether every continuation token is the model's argmax (lm-evaluation-harness's is_greedy)."""
    autocast = autocast or contextlib.nullcontext()
    rows = []
    for context, continuation in pairs:
        tokens = [*context, *continuation]
        inputs, targets = tokens[:-1][-seq_len:], tokens[1:][-seq_len:]
        rows.append((inputs, targets, min(len(continuation), len(targets))))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    n_batches = _agree_max(len(batches), device) if distributed() else len(batches)
    out: list[list[float]] = [[] for _ in rows]
    flags = [False] * len(rows)
    done = 0
    if on_rows is not None:
        on_rows("log-likelihoods", done, len(rows))
    for b in range(n_batches):
        chunk = batches[b] if b < len(batches) else []
        width = max([len(rows[i][0]) for i in chunk] or [1])
        x = torch.full((max(1, len(chunk)), width), pad_id, dtype=torch.long)
        y = torch.zeros_like(x)
        for r, i in enumerate(chunk):
            inputs, targets, _ = rows[i]
            x[r, :len(inputs)], y[r, :len(targets)] = torch.tensor(inputs), torch.tensor(targets)
        with autocast:
            logits = model(x.to(device))  # (B, T, vocab)
        y = y.to(device)
        nats = -torch.gather(F.log_softmax(logits.float(), dim=-1), 2, y[..., None])[..., 0]  # (B, T)
        hits = (logits.argmax(dim=-1) == y).cpu() if greedy is not None else None
        nats = nats.cpu()
        for r, i in enumerate(chunk):
            inputs, _, n_cont = rows[i]
            out[i] = nats[r, len(inputs) - n_cont:len(inputs)].tolist()
            if hits is not None:
                flags[i] = bool(hits[r, len(inputs) - n_cont:len(inputs)].all())
        done += len(chunk)
        if chunk and on_rows is not None:
            on_rows("log-likelihoods", done, len(rows))
    if greedy is not None:
        greedy[:] = flags
    return out


@torch.no_grad()
def greedy_generate(model, prompts: Sequence[list[int]], *, max_new_tokens: int, seq_len: int, pad_id: int,
                    eos_id: int, device: torch.device, decode: Callable[[list[int]], str],
                    stop: Sequence[str] = (), autocast: contextlib.AbstractContextManager | None = None,
                    batch_size: int = EVAL_BATCH, on_rows: RowsDone | None = None) -> list[str]:
    """The greedy completion of each prompt (token ids, BOS included) as text, cut before EOS and before
    the first stop string."""
    autocast = autocast or contextlib.nullcontext()
    synced = distributed()
    keep = max(seq_len // 2, seq_len - max_new_tokens, 1)
    prompts = [list(p)[-keep:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    n_batches = _agree_max(len(batches), device) if synced else len(batches)
    texts = [""] * len(prompts)
    tail = max((len(s) for s in stop), default=0) + 4
    finished_rows = 0
    if on_rows is not None:
        on_rows("generation", finished_rows, len(prompts))
    for b in range(n_batches):
        chunk = batches[b] if b < len(batches) else []
        rows = [prompts[i] for i in chunk] or [[eos_id]]  # a padding batch: one token, results dropped
        width = max(len(row) for row in rows)
        budget = max(1, min(max_new_tokens, seq_len - width))
        if synced:
            budget = _agree_max(budget, device)
        pad_left = torch.tensor([width - len(row) for row in rows])
        idx = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], dtype=torch.long, device=device)
        cache = model.new_cache(len(rows), width + budget, pad_left=pad_left)
        generated: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows) if chunk else [True]
        with autocast:
            logits = model(idx, cache=cache)
        for step in range(budget):
            next_token = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
            for r, token in enumerate(next_token[:, 0].tolist()):
                if not done[r]:
                    generated[r].append(token)
                    # a stop string the last token completes lies within its last `tail` tokens (a token
                    # decodes to at least one character): decode those, not the whole completion each step
                    done[r] = token == eos_id or (bool(stop) and any(s in decode(generated[r][-tail:]) for s in stop))
            finished = all(done)
            if synced:
                finished = _agree_max(int(not finished), device) == 0
            if finished or step == budget - 1:
                break
            with autocast:
                logits = model(next_token, cache=cache)
        for r, i in enumerate(chunk):
            text = decode(generated[r])
            for s in stop:
                text = text.split(s)[0]
            texts[i] = text
        finished_rows += len(chunk)
        if chunk and on_rows is not None:
            on_rows("generation", finished_rows, len(prompts))
    return texts
