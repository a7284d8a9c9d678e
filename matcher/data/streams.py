"""Training streams: fixed-length token rows, each a pure function of (seed, row index).

Row `i` of the stream is the same on every run with the same seed, so the stream's whole state is
the step count: resuming at step s reads rows from s * batch_size on, rank r of a data-parallel
group reads its slice of the step's rows, and every run of a sweep (one seed) sees the same rows. A
row holds seq_len + 1 tokens (inputs and the shifted targets).

Shards are cut into windows of seq_len + 1 tokens at a stride of seq_len (each token is a target
once). They are sampled without replacement: epoch e visits every window once, in the order of a
seeded permutation of the windows (a Feistel bijection of the window index, so no table is held
however many windows there are). A mixture `{PATH: WEIGHT, ...}` gives each source its share of every
block of rows, each source sampled without replacement on its own. Those two streams live in
matcher/data/shard_streams.py; this module opens every kind.
"""

# Function-local imports: numpy and the shard streams (matcher.data.shard_streams), only when rows are made or
# shards are opened, so that `matcher plan`'s check of a sweep on the generated task runs without them.

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeAlias

from matcher.data import math_task, problems
from matcher.data.math_task import MATH_DATA
from matcher.data.problems import document_parts
from matcher.data.tokenizer import CHAR, VOCAB_SIZE, Tokenizer
from matcher.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from matcher.data.shard_streams import MixtureStream, ShardStream


class MathStream:
    """Generated problems packed back to back (BOS text EOS BOS text EOS ...); the last problem of a row
    is cut where the row ends. Row i draws its problems from its own generator. The answer tokens (and
    EOS) are the row's answers (train.loss_on: answers). `latent` (data: math-latent): the answer is the
    final value only, ` #### N` (the latent eval task's reference), so the chain has to be worked out in depth.
    `split` names the generator family (`train`; `val`: the validation windows, matcher/run/validation.py),
    and a problem whose question is in `exclude` is skipped (the validation windows leave out the eval problems)."""

    has_mask = True

    def __init__(self, *, seed: int, n_steps: int, seq_len: int, vocab_size: int, tokenizer: Tokenizer = CHAR,
                 latent: bool = False, split: str = "train", exclude: frozenset[str] = frozenset()):
        math_task.check_steps(n_steps)
        tokenizer.check_vocab(vocab_size)
        self.seed, self.n_steps, self.row_tokens, self.tokenizer = seed, n_steps, seq_len + 1, tokenizer
        self.latent, self.split, self.exclude = latent, split, exclude
        # row() and row_mask() of one batch (loss_on: answers reads both) generate each row once
        self._row = functools.lru_cache(maxsize=1024)(self._row)

    def _row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        rng = math_task.problem_rng(self.seed, self.split, index)
        tokens: list[int] = []
        mask: list[int] = []
        tok = self.tokenizer
        while len(tokens) < self.row_tokens:
            problem = math_task.make_problem(rng, self.n_steps)
            if problem.question in self.exclude:
                continue
            prompt_part, answer_part = document_parts(
                problem.question, f"#### {problem.final}" if self.latent else problem.answer)
            prompt = [tok.bos_id, *tok.encode(prompt_part)]
            answer = [*tok.encode(answer_part), tok.eos_id]
            tokens += prompt + answer
            mask += [0] * len(prompt) + [1] * len(answer)
        rows = (np.asarray(tokens[:self.row_tokens], dtype=np.int64),
                np.asarray(mask[:self.row_tokens], dtype=np.uint8))
        for array in rows:
            array.setflags(write=False)  # cached (see __init__): shared by every caller
        return rows

    def row(self, index: int) -> np.ndarray:
        return self._row(index)[0]

    def row_mask(self, index: int) -> np.ndarray:
        return self._row(index)[1]

    def unique_tokens(self, rows: int) -> int:
        return rows * (self.row_tokens - 1)  # generated: every row is new


Stream: TypeAlias = "MathStream | ShardStream | MixtureStream"


def open_stream(data: str | dict, *, seed: int, n_steps: int, seq_len: int, vocab_size: int,
                tokenizer: Tokenizer | None = None) -> Stream:
    """`data` is "math" (the embedded generator; "math-latent": its final values only), a shard folder /
    .bin shard, or a mixture {source: weight}."""
    if isinstance(data, dict):
        from matcher.data.shard_streams import MixtureStream

        if not data:
            raise DataError("data: a mixture needs at least one {path: weight}")
        sources = [open_stream(source, seed=seed, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size,
                               tokenizer=tokenizer) for source in data]
        return MixtureStream(sources, [float(w) for w in data.values()])
    if data in MATH_DATA:
        return MathStream(seed=seed, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size,
                          tokenizer=tokenizer or CHAR, latent=data == "math-latent")
    from matcher.data.shard_streams import ShardStream

    return ShardStream(data, seed=seed, seq_len=seq_len, vocab_size=vocab_size, tokenizer=tokenizer)


def _legacy_sources(stream: Stream) -> list[ShardStream]:
    if isinstance(stream, MathStream):
        return []
    from matcher.data.shard_streams import MixtureStream, ShardStream

    sources = stream.sources if isinstance(stream, MixtureStream) else [stream]
    return [s for s in sources if isinstance(s, ShardStream) and s.data.manifest is None]


def open_training_data(data: str | dict, eval_data: str, *, seed: int, n_steps: int, seq_len: int, vocab_size: int,
                       eval_examples: int, tokenizer: Tokenizer = CHAR, loss_on: str = "all") -> tuple[Stream, list]:
    """A run's training stream and eval problems, checked before anything trains (the trainer and
    `sweep validate` both call this): the tokenizer fits the model's vocabulary; shards were written with
    the run's tokenizer (their manifest's hash; shards without one only with the character tokenizer, and
    then every id inside its vocabulary); a loss mask where loss_on is answers; a readable eval set."""
    tokenizer.check_vocab(vocab_size)
    stream = open_stream(data, seed=seed, n_steps=n_steps, seq_len=seq_len, vocab_size=vocab_size,
                         tokenizer=tokenizer)
    for source in _legacy_sources(stream):
        if source.highest >= VOCAB_SIZE:
            raise DataError(
                f"{source.data.spec}: the shards hold token ids up to {source.highest}, but the run's tokenizer is "
                f"matcher's {VOCAB_SIZE}-token character tokenizer, so loss and accuracy would be meaningless; "
                "encode the corpus with `matcher data encode ... --tokenizer PATH --out DIR` and plan with "
                "--tokenizer PATH")
    if loss_on == "answers" and not stream.has_mask:
        raise DataError(f"{data}: train.loss_on is answers, but the data has no loss mask (it holds no "
                        "question/answer or chat records); use loss_on: all, or encode JSONL question/answer "
                        "or chat data with `matcher data encode`")
    return stream, eval_problems(eval_data, n_steps, eval_examples)


def eval_problems(eval_data: str, n_steps: int, eval_examples: int) -> list:
    """A run's eval problems: the first `eval_examples` held-out generated problems (math, math-latent) or
    records of the JSONL file `eval_data`; the same for every run and seed."""
    if eval_data in MATH_DATA:
        return math_task.eval_problems(n_steps, eval_examples)
    return problems.load_jsonl(eval_data)[:eval_examples]


def _rank_rows(step: int, batch_size: int, rank: int, world_size: int) -> range:
    per_rank = batch_size // world_size
    first = step * batch_size + rank * per_rank
    return range(first, first + per_rank)


def batch_rows(stream: Stream, *, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's rows of optimizer step `step`: (batch_size // world_size, seq_len + 1) int64."""
    import numpy as np

    return np.stack([stream.row(i) for i in _rank_rows(step, batch_size, rank, world_size)])


def batch_masks(stream: Stream, *, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """The loss mask of batch_rows' rows (1: an answer token, trained on under loss_on: answers)."""
    import numpy as np

    return np.stack([stream.row_mask(i) for i in _rank_rows(step, batch_size, rank, world_size)])
