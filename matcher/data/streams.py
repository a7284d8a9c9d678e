"""Training streams: fixed-length token rows, each a pure function of (seed, row index).

Row `i` of the stream is the same on every run with the same seed, so the stream's whole state is
the step count: resuming at step s reads rows from s * batch_size on, and rank r of a data-parallel
group reads its slice of the step's rows. A row holds seq_len + 1 tokens (inputs and the shifted
targets).
"""

from __future__ import annotations

import numpy as np

from matcher.data import math_task, shards
from matcher.data.problems import document_text
from matcher.data.tokenizer import VOCAB_SIZE, check_vocab, encode_document
from matcher.errors import DataError


class MathStream:
    """Generated problems packed back to back (BOS text EOS BOS text EOS ...); the last problem of a row
    is cut where the row ends. Row i draws its problems from its own generator."""

    def __init__(self, *, seed: int, n_steps: int, seq_len: int, vocab_size: int):
        math_task.check_steps(n_steps)
        check_vocab(vocab_size)
        self.seed, self.n_steps, self.row_tokens = seed, n_steps, seq_len + 1

    def row(self, index: int) -> np.ndarray:
        rng = math_task.problem_rng(self.seed, "train", index)
        tokens: list[int] = []
        while len(tokens) < self.row_tokens:
            tokens += encode_document(document_text(math_task.make_problem(rng, self.n_steps)))
        return np.asarray(tokens[:self.row_tokens], dtype=np.int64)


class ShardStream:
    """Windows of seq_len + 1 tokens at random offsets in the shards; a window's shard is drawn in
    proportion to the windows it holds, so every window of the data is equally likely."""

    def __init__(self, spec: str, *, seed: int, seq_len: int, vocab_size: int):
        self.seed, self.row_tokens = seed, seq_len + 1
        scanned = [shards.open_shard(path, vocab_size) for path in shards.shard_paths(spec)]
        self.shards = [tokens for tokens, _ in scanned]
        self.highest = max(highest for _, highest in scanned)  # the largest token id in the data
        windows = np.array([max(0, len(tokens) - self.row_tokens + 1) for tokens in self.shards])
        if windows.sum() == 0:
            raise DataError(f"{spec}: every shard is shorter than one training row "
                            f"({self.row_tokens} tokens)")
        self.first_window = np.concatenate([[0], np.cumsum(windows)])

    def row(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        window = int(rng.integers(self.first_window[-1]))
        shard = int(np.searchsorted(self.first_window, window, side="right")) - 1
        offset = window - int(self.first_window[shard])
        return np.asarray(self.shards[shard][offset:offset + self.row_tokens], dtype=np.int64)


def open_stream(data: str, *, seed: int, n_steps: int, seq_len: int, vocab_size: int
                ) -> MathStream | ShardStream:
    """`data` is "math" (the embedded generator) or a .bin shard / folder of shards."""
    if data == "math":
        return MathStream(seed=seed, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size)
    return ShardStream(data, seed=seed, seq_len=seq_len, vocab_size=vocab_size)


def open_training_data(data: str, eval_data: str, *, seed: int, n_steps: int, seq_len: int, vocab_size: int,
                       eval_examples: int) -> tuple[MathStream | ShardStream, list]:
    """A run's training stream and eval problems, checked before anything trains (the trainer and
    `sweep validate` both call this): data readable and inside the model's vocabulary, a vocabulary that
    holds the character tokenizer's, shards written with that tokenizer (evaluation encodes with it),
    and a readable eval set."""
    from matcher.data import math_task, problems

    stream = open_stream(data, seed=seed, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size)
    check_vocab(vocab_size)
    if isinstance(stream, ShardStream) and stream.highest >= VOCAB_SIZE:
        raise DataError(
            f"{data}: the shards hold token ids up to {stream.highest}, but evaluation "
            f"encodes problems with matcher's {VOCAB_SIZE}-token character tokenizer, so its "
            "loss and accuracy would be meaningless; write the shards with `matcher data encode`")
    if eval_data == "math":
        return stream, math_task.eval_problems(n_steps, eval_examples)
    return stream, problems.load_jsonl(eval_data)[:eval_examples]


def batch_rows(stream: MathStream | ShardStream, *, step: int, batch_size: int, rank: int = 0,
               world_size: int = 1) -> np.ndarray:
    """This rank's rows of optimizer step `step`: (batch_size // world_size, seq_len + 1) int64."""
    per_rank = batch_size // world_size
    first = step * batch_size + rank * per_rank
    return np.stack([stream.row(first + i) for i in range(per_rank)])
