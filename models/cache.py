"""Attention state: the sequence-attention KV cache for decoding (one slot per APPLIED layer, also for
dr, whose applications share weights but see different inputs) and the depth-attention keys/values of
the tokens in one forward (training and decoding)."""

import math

import torch


class KVCache:
    """Keys and values of every applied layer for a batch of sequences, filled left to right."""

    def __init__(self, n_applied_layers: int, batch_size: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 pad_left: torch.Tensor | None = None):
        shape = (n_applied_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, nkv, max_len, hs)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # tokens already written; the next chunk starts here
        # (B,) padding tokens before each row's prompt (left padding: prompts of different lengths in one
        # batch); positions count from each row's first real token and padding is never attended to
        self.pad_left = pad_left

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


class DepthKV:
    """Depth-attention keys and values of the tokens in one forward, each (B*T, da_heads, depth,
    da_head_dim): depth index i writes slot i once and attends over slots 0..i, so training keeps each
    depth's keys/values once instead of a growing copy per depth. Made fresh by each forward, so decoding
    keeps only the current step's tokens: constant memory in sequence length.

    In backward, depth index i sends key/value gradients to slots 0..i; they are summed here (fp32) until
    depth index j's own backward, which autograd runs after every later depth's (their inputs depend on
    depth j's output), hands slot j's sum to its k and v. Each depth's output joins the residual stream,
    so every depth's backward runs."""

    def __init__(self, depth: int):
        self.depth = depth
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.grad_keys: torch.Tensor | None = None
        self.grad_values: torch.Tensor | None = None
        # under torch.compile: each depth's own k, v (N, nh, 1, hs), in depth order (see attend_traced)
        self.traced_keys: list[torch.Tensor] = []
        self.traced_values: list[torch.Tensor] = []

    def write(self, depth: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (N, nh, 1, hs) at `depth`; return the keys/values so far, each (N, nh, depth+1, hs).
        A recomputed forward (activation checkpointing) writes the same values again."""
        if self.keys is None:
            N, nh, _, hs = k.shape
            self.keys = k.new_empty(N, nh, self.depth, hs)
            self.values = v.new_empty(N, nh, self.depth, hs)
        self.keys[:, :, depth:depth + 1] = k
        self.values[:, :, depth:depth + 1] = v
        return self.keys[:, :, :depth + 1], self.values[:, :, :depth + 1]

    def add_grads(self, depth: int, grad_scores: torch.Tensor, q: torch.Tensor, probs: torch.Tensor,
                  grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add depth index `depth`'s key gradients dS^T q and value gradients P^T dO to slots 0..depth, from
        its fp32 score gradients dS and probabilities P (N, nh, 1, depth+1), query q and output gradient
        dO (N, nh, 1, hs); return slot `depth`'s complete sums, each (N, nh, 1, hs)."""
        if self.grad_keys is None:
            self.grad_keys = torch.zeros_like(self.keys, dtype=torch.float32)
            self.grad_values = torch.zeros_like(self.values, dtype=torch.float32)
        N, nh, _, hs = q.shape
        slots = depth + 1
        # the products go straight into the sums, without a second pass over a separate (N, nh, depth+1, hs)
        # product; out= rather than baddbmm_, which FlopCounterMode does not count. (N, nh, 1, slots) read
        # as (N*nh, slots, 1) is its transpose
        for sums, left, right in ((self.grad_keys, grad_scores, q), (self.grad_values, probs, grad_out)):
            into = sums[:, :, :slots].view(N * nh, slots, hs)
            torch.baddbmm(into, left.reshape(N * nh, slots, 1), right.float().reshape(N * nh, 1, hs), out=into)
        return self.grad_keys[:, :, depth:depth + 1], self.grad_values[:, :, depth:depth + 1]

    def attend_traced(self, depth: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q K^T / sqrt(hs)) V over depths 0..depth, this depth's k, v (N, nh, 1, hs) included, for a
        forward that torch.compile traces. The keys/values stay one tensor per depth: no buffer written in
        place, which functionalization would turn into a copy of the whole buffer at every depth. Each
        earlier depth's key and value meets q in its own matmul, whose backward saves a reference to that
        key/value (linear in depth, whatever the partitioner saves), not an (N, nh, depth+1, hs) copy per
        depth. As in AttendOverDepth: matmuls in the keys' dtype, scores, softmax and the sum over depths
        in fp32; the same FLOPs as one matmul over the stacked keys."""
        if len(self.traced_keys) != depth:
            raise RuntimeError(f"depth attention at depth index {depth} after {len(self.traced_keys)} depths: "
                               "the depths of one forward must run in order, each once")
        self.traced_keys.append(k)
        self.traced_values.append(v)
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = torch.cat([q @ key.transpose(-2, -1) for key in self.traced_keys], dim=-1)  # (N, nh, 1, depth+1)
        probs = (scores.float() * scale).softmax(dim=-1).to(v.dtype)
        out = sum((probs[..., j:j + 1] @ value).float() for j, value in enumerate(self.traced_values))
        return out.to(v.dtype)  # (N, nh, 1, hs)
