"""The streams over token shards on disk (matcher.data.shards): a shard folder's windows sampled without
replacement, epoch by epoch, in the order of a seeded Feistel permutation, and a mixture of sources by
weight (see matcher.data.streams, which opens them, for the contract every stream keeps)."""

from __future__ import annotations

import math

import numpy as np

from matcher.data import shards
from matcher.data.tokenizer import Tokenizer
from matcher.errors import DataError

MIXTURE_BLOCK_ROWS = 1000  # a mixture's shares are exact over every block of this many rows


def feistel_permute(index: int, n: int, key: int) -> int:
    """Position `index` of a seeded permutation of range(n): a 4-round Feistel network on the smallest
    even number of bits that holds n, cycle-walked back into range (a bijection, O(1) memory)."""
    bits = max(2, math.ceil(math.log2(max(2, n))))
    bits += bits % 2
    half, mask = bits // 2, (1 << (bits // 2)) - 1
    keys = [(key >> (16 * r)) & 0xFFFF for r in range(4)]
    value = index
    while True:
        left, right = value >> half, value & mask
        for round_key in keys:
            mixed = ((right * 0x9E3779B1) ^ (round_key * 0x85EBCA6B) ^ (right >> 3)) & 0xFFFFFFFF
            mixed ^= mixed >> 15
            left, right = right, left ^ (mixed & mask)
        value = (left << half) | right
        if value < n:
            return value


class ShardStream:
    """Windows of the shards, without replacement (see the module docstring)."""

    def __init__(self, spec: str, *, seed: int, seq_len: int, vocab_size: int, tokenizer: Tokenizer | None = None):
        self.seed, self.seq_len, self.row_tokens = seed, seq_len, seq_len + 1
        self.data = shards.open_data(spec, vocab_size, tokenizer)
        self.shards, self.masks, self.highest = self.data.tokens, self.data.masks, self.data.highest
        self.has_mask = self.masks is not None
        windows = np.array([max(0, (len(tokens) - 1) // seq_len) for tokens in self.shards])
        if windows.sum() == 0:
            raise DataError(f"{spec}: every shard is shorter than one training row "
                            f"({self.row_tokens} tokens)")
        self.windows = int(windows.sum())
        self.first_window = np.concatenate([[0], np.cumsum(windows)])
        self._keys: dict[int, int] = {}  # epoch -> permutation key

    def _epoch_key(self, epoch: int) -> int:
        if epoch not in self._keys:
            self._keys[epoch] = int(np.random.default_rng([self.seed, epoch, 0x5EED]).integers(1 << 62))
        return self._keys[epoch]

    def _locate(self, index: int) -> tuple[int, int]:
        epoch, position = divmod(index, self.windows)
        window = feistel_permute(position, self.windows, self._epoch_key(epoch))
        shard = int(np.searchsorted(self.first_window, window, side="right")) - 1
        return shard, (window - int(self.first_window[shard])) * self.seq_len

    def row(self, index: int) -> np.ndarray:
        shard, offset = self._locate(index)
        return np.asarray(self.shards[shard][offset:offset + self.row_tokens], dtype=np.int64)

    def row_mask(self, index: int) -> np.ndarray:
        if self.masks is None:
            return np.ones(self.row_tokens, dtype=np.uint8)
        shard, offset = self._locate(index)
        return np.asarray(self.masks[shard][offset:offset + self.row_tokens], dtype=np.uint8)

    def unique_tokens(self, rows: int) -> int:
        return min(rows, self.windows) * self.seq_len


class MixtureStream:
    """Several sources by weight: of every block of MIXTURE_BLOCK_ROWS rows, each source gets its share
    (largest remainder), interleaved evenly; row i of the mixture is row j of its source, j a function of i."""

    def __init__(self, sources: list, weights: list[float]):
        self.sources, self.row_tokens = sources, sources[0].row_tokens
        self.has_mask = any(s.has_mask for s in sources)
        self.highest = max(getattr(s, "highest", 0) for s in sources)
        shares = np.asarray(weights, dtype=float) / sum(weights) * MIXTURE_BLOCK_ROWS
        quota = np.maximum(1, np.floor(shares)).astype(int)
        for i in np.argsort(-(shares - np.floor(shares))):
            if quota.sum() >= MIXTURE_BLOCK_ROWS:
                break
            quota[i] += 1
        self.quota = quota
        slots = sorted((( k + 0.5) / q, s, k) for s, q in enumerate(quota) for k in range(q))
        self.slot_source = np.array([s for _, s, _ in slots])
        self.slot_rank = np.array([k for _, _, k in slots])
        self.block = len(slots)

    def _locate(self, index: int) -> tuple[int, int]:
        block, slot = divmod(index, self.block)
        source = int(self.slot_source[slot])
        return source, block * int(self.quota[source]) + int(self.slot_rank[slot])

    def row(self, index: int) -> np.ndarray:
        source, local = self._locate(index)
        return self.sources[source].row(local)

    def row_mask(self, index: int) -> np.ndarray:
        source, local = self._locate(index)
        return self.sources[source].row_mask(local)

    def rows_of(self, rows: int) -> list[int]:
        """Rows each source has given among the mixture's first `rows`."""
        block, rest = divmod(rows, self.block)
        return [block * int(q) + int((self.slot_source[:rest] == s).sum()) for s, q in enumerate(self.quota)]

    def unique_tokens(self, rows: int) -> int:
        return sum(source.unique_tokens(n) for source, n in zip(self.sources, self.rows_of(rows)))
