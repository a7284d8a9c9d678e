"""Decode-time state: the sequence-attention KV cache (one slot per APPLIED layer, also for dr, whose
applications share weights but see different inputs) and the depth-attention keys/values of the
tokens in flight."""

from typing import NamedTuple

import torch


class KVCache:
    """Keys and values of every applied layer for a batch of sequences, filled left to right."""

    def __init__(self, n_applied_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        shape = (n_applied_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nkv, max_len, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already written; the next chunk starts here

    def slot(self, layer: int) -> "LayerKV":
        return LayerKV(self, layer)

    def advance(self, n_tokens: int) -> None:
        """Called once per model forward, after every applied layer has written its chunk."""
        self.pos += n_tokens


class LayerKV:
    """One applied layer's view of a KVCache."""

    def __init__(self, cache: KVCache, layer: int):
        self.cache, self.layer = cache, layer

    @property
    def pos(self) -> int:
        return self.cache.pos

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nkv, T, hs) at the cache position; return the keys/values so far,
        each (B, nkv, pos+T, hs)."""
        start, end = self.cache.pos, self.cache.pos + k.shape[2]
        if end > self.cache.max_len:
            raise ValueError(f"KV cache holds {self.cache.max_len} tokens; writing up to {end}: "
                             "make the cache with a larger max_len")
        keys, values = self.cache.keys[self.layer], self.cache.values[self.layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]


class DepthKV(NamedTuple):
    """Depth-attention keys and values of the tokens in this forward at depth indices 0..i, each
    (B*T, da_heads, i + 1, da_head_dim). Made fresh by each forward and carried through the depth loop,
    so decoding keeps only the current step's tokens: constant memory in sequence length."""

    keys: torch.Tensor
    values: torch.Tensor
