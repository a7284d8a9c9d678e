"""Causal multi-head attention over token positions, with RoPE, grouped-query KV heads and optional
QK-norm (per head as in Qwen3, or over the whole projection as in OLMoE) and q/k/v biases (Qwen2)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from matcher.config import ModelConfig
from matcher.models.cache import LayerKV
from matcher.models.norm import RMSNorm, apply_rotary


class SequenceAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm != "none":
            full = cfg.qk_norm == "full"
            self.q_norm = RMSNorm(cfg.n_heads * cfg.head_dim if full else cfg.head_dim, cfg.norm_eps, cfg.norm_bias)
            self.k_norm = RMSNorm(cfg.n_kv_heads * cfg.head_dim if full else cfg.head_dim, cfg.norm_eps,
                                  cfg.norm_bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                kv_cache: LayerKV | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        cos, sin = rope  # (T, hs/2) for the positions of this chunk, or (B, T, hs/2) for left-padded rows
        if cos.dim() == 3:
            cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, hs/2): one position per row and token
        q, k = self.wq(x), self.wk(x)  # (B, T, nh*hs), (B, T, nkv*hs)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, nkv, hs)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs), (B, nkv, T, hs)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        mask, causal = None, True
        if kv_cache is not None:
            start = kv_cache.pos
            k, v = kv_cache.update(k, v)  # (B, nkv, start+T, hs)
            k, v = k.type_as(q), v.type_as(q)
            if kv_cache.cache.pad_left is not None:
                causal, mask = False, _padded_causal_mask(kv_cache.cache.pad_left, start, T)
            elif start > 0:
                # SDPA's is_causal aligns the mask top-left; after cached tokens it must align bottom-right
                causal = False
                if T > 1:
                    query_pos = torch.arange(start, start + T, device=x.device)
                    mask = query_pos[:, None] >= torch.arange(start + T, device=x.device)  # (T, start+T)
        # GQA without repeating K/V in memory: SDPA shares each KV head with n_heads/n_kv_heads query heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, nh*hs)
        return self.wo(y)


def _padded_causal_mask(pad_left: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """(B, 1, T, start+T) bool: query i sees keys j <= i that are not padding. A padding query sees only
    itself, so its (unused) row of the softmax is never empty."""
    query_pos = torch.arange(start, start + T, device=pad_left.device)[:, None]  # (T, 1)
    key_pos = torch.arange(start + T, device=pad_left.device)[None, :]  # (1, S)
    real_key = key_pos[None] >= pad_left[:, None, None]  # (B, 1, S)
    return (((key_pos <= query_pos)[None] & real_key) | (key_pos == query_pos)[None])[:, None]
