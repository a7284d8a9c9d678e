"""One layer: sequence attention, depth attention (dr_da only) and the feed-forward part (dense MLP or
expert attention), mixed sequentially (each pre-norm residual) or in parallel (all read one norm)."""

import torch
import torch.nn as nn

from matcher.config import ModelConfig
from matcher.models.cache import DepthKV, LayerKV
from matcher.models.depth_attention import DepthAttention
from matcher.models.expert_attention import MLP, ExpertAttention, ExpertsForward
from matcher.models.norm import RMSNorm
from matcher.models.sequence_attention import SequenceAttention


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig, n_applications: int, trained_depth: int | None = None):
        super().__init__()
        self.parallel = cfg.mixture == "parallel"
        if self.parallel:
            self.norm = RMSNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias)
        else:
            self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias)
            self.da_norm = RMSNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias) if cfg.has_depth_attention else None
            self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, bias=cfg.norm_bias)
        self.attn = SequenceAttention(cfg)
        self.depth_attn = DepthAttention(cfg, trained_depth) if cfg.has_depth_attention else None
        if cfg.is_moe:
            self.ffn = ExpertAttention(cfg, n_applications)
        else:
            self.ffn = MLP(cfg.d_model, cfg.d_ff, cfg.mlp_act)

    def forward(self, h: torch.Tensor, depth: int, rope: tuple[torch.Tensor, torch.Tensor],
                kv_cache: LayerKV | None = None, depth_kv: DepthKV | None = None,
                experts_forward: ExpertsForward | None = None) -> torch.Tensor:
        """h (B, T, d) at depth index `depth` -> new h; depth attention adds this depth to depth_kv.
        `experts_forward`: what this layer's applications share in one forward of the model (expert
        attention only; see ExpertsForward)."""
        if self.parallel:
            x = self.norm(h)
            out = self.attn(x, rope, kv_cache) + self._ffn(x, depth, experts_forward)
            if self.depth_attn is not None:
                out = out + self.depth_attn(x, depth, depth_kv)
            return h + out
        h = h + self.attn(self.attn_norm(h), rope, kv_cache)
        if self.depth_attn is not None:
            h = h + self.depth_attn(self.da_norm(h), depth, depth_kv)
        return h + self._ffn(self.ffn_norm(h), depth, experts_forward)

    def _ffn(self, x: torch.Tensor, depth: int, experts_forward: ExpertsForward | None) -> torch.Tensor:
        return self.ffn(x, depth, experts_forward) if isinstance(self.ffn, ExpertAttention) else self.ffn(x)
