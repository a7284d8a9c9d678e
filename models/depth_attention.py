"""Depth attention (dr_da): each token attends over its own states at the depth indices so far.

At depth index i a token's query attends over keys/values computed from that same token's DA inputs at
depth indices 0..i (the current one included). Tokens never mix here (sequence attention does that), so
the problem is a batch of B*T independent length-(i+1) attentions: per token 4*(i+1)*heads*head_dim FLOPs.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from matcher.models.cache import DepthKV
from matcher.models.norm import apply_rotary, rotary_cos_sin

from matcher.config import ModelConfig


class DepthAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.da_heads, cfg.da_head_dim
        self.rope, self.rope_theta = cfg.da_rope, cfg.rope_theta
        width = cfg.da_heads * cfg.da_head_dim
        self.wq = nn.Linear(cfg.d_model, width, bias=False)
        self.wk = nn.Linear(cfg.d_model, width, bias=False)
        self.wv = nn.Linear(cfg.d_model, width, bias=False)
        self.wo = nn.Linear(width, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, depth: int, past: DepthKV | None) -> tuple[torch.Tensor, DepthKV]:
        B, T, _ = x.shape
        # one token per row: (B*T, nh, 1, hs)
        q = self.wq(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            # the depth index plays the role of the position; keys keep the rotation of their own depth
            at_depth = torch.full((1,), depth, device=x.device)
            cos, sin = rotary_cos_sin(at_depth, self.head_dim, self.rope_theta)  # (1, hs/2)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k = torch.cat((past.keys.type_as(k), k), dim=2)  # (B*T, nh, i+1, hs)
            v = torch.cat((past.values.type_as(v), v), dim=2)
        y = F.scaled_dot_product_attention(q, k, v)  # (B*T, nh, 1, hs); every depth so far is visible
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.wo(y), DepthKV(k, v)
