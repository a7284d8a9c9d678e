"""Validation loss at every eval point, on the same windows for every run of a sweep (whatever the run's
seed), so grid points and variants are compared on identical tokens:

- a shard folder: its val split (`matcher data encode --val-fraction`), the first VAL_ROWS rows of the
  split's stream under a fixed seed;
- the embedded generated task (train.data math or math-latent): the first VAL_ROWS rows of a generated
  stream of its own (split `val`, seed VAL_STREAM_SEED: never a training row of any run seed, whose split
  is `train`), packed like the training rows, leaving out every problem whose question is one of the
  run's eval problems (the reported benchmark).

Every token of a window is a target (the language-modelling loss, whatever train.loss_on says). Bits per
byte divide by the UTF-8 bytes of the target tokens' text (special tokens have none).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from matcher.data.math_task import MATH_DATA
from matcher.data.shard_streams import ShardStream
from matcher.data.shards import MANIFEST
from matcher.data.streams import MathStream

VAL_ROWS = 64  # windows of seq_len + 1 tokens scored at every eval point (fewer where the split is smaller)
VAL_STREAM_SEED = 0  # fixed, so that the windows do not depend on the run's seed
VAL_SPLIT = "val"  # the generated task's validation problems: a generator family apart from train and eval


def val_windows(data: str | dict, *, seq_len: int, vocab_size: int, tokenizer, n_steps: int = 1,
                eval_problems: list = ()) -> np.ndarray | None:
    """The fixed val windows (rows, seq_len + 1) when train.data is the generated task (`n_steps` steps per
    problem, none of `eval_problems` among them) or one shard folder with a val split; None otherwise
    (a mixture, or a corpus encoded without --val-fraction)."""
    if data in MATH_DATA:
        stream = MathStream(seed=VAL_STREAM_SEED, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size,
                            tokenizer=tokenizer, latent=data == "math-latent", split=VAL_SPLIT,
                            exclude=frozenset(problem.question for problem in eval_problems))
        return np.stack([stream.row(i) for i in range(VAL_ROWS)])
    if not isinstance(data, str) or not (Path(data) / MANIFEST).is_file():
        return None
    split = json.loads((Path(data) / MANIFEST).read_text(encoding="utf-8")).get("val")
    if not split:
        return None
    stream = ShardStream(str(Path(data) / split["folder"]), seed=VAL_STREAM_SEED, seq_len=seq_len,
                         vocab_size=vocab_size, tokenizer=tokenizer)
    return np.stack([stream.row(i) for i in range(min(VAL_ROWS, stream.windows))])


def text_bytes_of(tokenizer, ids: list[int]) -> int:
    """UTF-8 bytes of the text of `ids`, every document in them: the tokenizer's decode stops at the
    first EOS (it decodes one completion), so each document between EOS tokens is decoded on its own."""
    total, document = 0, []
    for token in ids:
        if token == tokenizer.eos_id:
            total += len(tokenizer.decode(document).encode("utf-8"))
            document = []
        else:
            document.append(token)
    return total + len(tokenizer.decode(document).encode("utf-8"))


@torch.no_grad()
def val_scores(model, windows: np.ndarray, tokenizer, *, device: torch.device, autocast,
               batch_rows: int) -> dict[str, Any]:
    """val_loss (nats per target token) and val_bpb (bits per byte of the targets' text; None when
    the targets decode to no bytes) of `model` on `windows`."""
    nats, targets = 0.0, 0
    rows = torch.from_numpy(windows.astype(np.int64))
    for chunk in rows.split(max(1, batch_rows)):
        x, y = chunk[:, :-1].to(device), chunk[:, 1:].to(device)
        with autocast:
            _, loss = model(x, y)
        nats += float(loss) * y.numel()
        targets += y.numel()
    text_bytes = sum(text_bytes_of(tokenizer, row[1:].tolist()) for row in windows)
    return {"val_loss": nats / targets, "val_bpb": nats / math.log(2) / text_bytes if text_bytes else None,
            "val_tokens": targets}

