"""Depth attention (dr_da): each token attends over its own states at the depth indices so far.

At depth index i a token's query attends over keys/values computed from that same token's DA inputs at
depth indices 0..i (the current one included). Tokens never mix here (sequence attention does that), so
the problem is a batch of B*T independent length-(i+1) attentions: per token 4*(i+1)*heads*head_dim FLOPs.

Each depth's keys/values are stored once, in a DepthKV shared by all depths of one forward. Attending
over a concatenated prefix instead would make every depth save its own (i+1)-long copy for backward:
O(depth^2) bytes and copies in training.

Under torch.compile the keys/values are kept as one tensor per depth instead (DepthKV.attend_traced): q
meets each earlier depth's key and value in its own small matmul, whose backward saves only references
to the keys and values the earlier depths made (still linear in depth), and Dynamo traces it without a
graph break, so a compiled dr_da model is one graph like dr's.
"""

import contextlib
import math

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from matcher.config import ModelConfig
from matcher.models.cache import DepthKV
from matcher.models.norm import apply_rotary, rotary_cos_sin


class DepthAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, trained_depth: int | None = None):
        """`trained_depth`: D of da_rope forward_reversed's reversed index D - d; None: cfg.depth (a model
        applied at a test-time depth keeps the D it was trained with)."""
        super().__init__()
        self.n_heads, self.head_dim = cfg.da_heads, cfg.da_head_dim
        self.rope, self.rope_theta = cfg.da_rope, cfg.rope_theta
        self.trained_depth = cfg.depth if trained_depth is None else trained_depth
        width = cfg.da_heads * cfg.da_head_dim
        self.wq = nn.Linear(cfg.d_model, width, bias=False)
        self.wk = nn.Linear(cfg.d_model, width, bias=False)
        self.wv = nn.Linear(cfg.d_model, width, bias=False)
        self.wo = nn.Linear(width, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, depth: int, depth_kv: DepthKV) -> torch.Tensor:
        B, T, _ = x.shape
        # one token per row: (B*T, nh, 1, hs)
        q = self.wq(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B * T, 1, self.n_heads, self.head_dim).transpose(1, 2)
        if self.rope != "none":
            # the depth index plays the role of the position; keys keep the rotation of their own depth
            cos, sin = depth_rotary_cos_sin(depth, self.trained_depth, self.head_dim, self.rope_theta,
                                            reversed_pairs=self.rope == "forward_reversed", device=x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if torch.is_grad_enabled() and torch.compiler.is_compiling():
            y = depth_kv.attend_traced(depth, q, k, v)  # (B*T, nh, 1, hs); Dynamo cannot trace the Function's state
        elif torch.is_grad_enabled():
            y = AttendOverDepth.apply(q, k, v, depth_kv, depth)  # (B*T, nh, 1, hs); every depth so far is visible
        else:  # decoding, evaluation, FLOP tracing: nothing to save, and jit tracing cannot record the Function
            y, _ = _attend(q, *depth_kv.write(depth, k, v))
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.wo(y)


def depth_rotary_cos_sin(depth: int, trained_depth: int, dim: int, theta: float, *, reversed_pairs: bool,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (1, dim/2) that rotate every pair by the depth index `depth` (forward); with
    `reversed_pairs` the odd-numbered pairs (1, 3, ...) by the reversed index trained_depth - depth instead,
    so both directions keep pairs of every frequency band."""
    if not reversed_pairs:
        return rotary_cos_sin(torch.full((1,), depth, device=device), dim, theta)
    cos, sin = rotary_cos_sin(torch.tensor([depth, trained_depth - depth], device=device), dim, theta)  # (2, dim/2)
    odd_pair = torch.arange(dim // 2, device=device) % 2 == 1  # (dim/2,)
    return torch.where(odd_pair, cos[1], cos[0])[None], torch.where(odd_pair, sin[1], sin[0])[None]


class AttendOverDepth(torch.autograd.Function):
    """softmax(q K^T / sqrt(hs)) V of one query (N, nh, 1, hs) over the keys/values K, V (N, nh, i+1, hs)
    of depth indices 0..i, after writing this depth's k, v into the shared DepthKV.

    Backward keeps q, the output and the fp32 log-sum-exp (O(1) per depth) and reads K, V from the
    DepthKV, recomputing the scores as flash attention does (one more QK^T: backward costs 2.5x the
    forward's score/value FLOPs, not 2x). Gradients for earlier depths' keys/values are summed in the
    DepthKV, since those keys/values are inputs of earlier depths' nodes.

    Matmuls that read K, V run in their dtype (like SDPA's math path); scores, softmax and the gradient
    sums in fp32. Autocast is off inside, so q, k, v keep their dtype.
    """

    @staticmethod
    def forward(ctx, q, k, v, depth_kv: DepthKV, depth: int):
        out, lse = _attend(q, *depth_kv.write(depth, k, v))
        ctx.save_for_backward(q, out, lse)
        ctx.depth_kv, ctx.depth = depth_kv, depth
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, out, lse = ctx.saved_tensors
        depth_kv, depth = ctx.depth_kv, ctx.depth
        scale = 1.0 / math.sqrt(q.shape[-1])
        with _autocast_off(q):
            keys, values = depth_kv.keys[:, :, :depth + 1], depth_kv.values[:, :, :depth + 1]
            grad_out = grad_out.type_as(q)
            probs = ((q @ keys.transpose(-2, -1)).float() * scale - lse).exp()  # (N, nh, 1, i+1)
            grad_probs = (grad_out @ values.transpose(-2, -1)).float()  # (N, nh, 1, i+1)
            # softmax backward: dS = P * (dP - rowsum(dO * O))
            rowsum = (grad_out.float() * out.float()).sum(dim=-1, keepdim=True)  # (N, nh, 1, 1)
            grad_scores = probs * (grad_probs - rowsum) * scale
            grad_q = grad_scores.type_as(q) @ keys  # (N, nh, 1, hs)
            grad_k, grad_v = depth_kv.add_grads(depth, grad_scores, q, probs, grad_out)
        # copies: autograd may accumulate into a returned gradient in place, and the sums live on
        return grad_q, grad_k.to(q.dtype, copy=True), grad_v.to(q.dtype, copy=True), None, None


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q (N, nh, 1, hs) over keys/values (N, nh, i+1, hs) -> output (N, nh, 1, hs), fp32 log-sum-exp."""
    with _autocast_off(q):
        scores = (q @ keys.transpose(-2, -1)).float() * (1.0 / math.sqrt(q.shape[-1]))  # (N, nh, 1, i+1)
        lse = scores.logsumexp(dim=-1, keepdim=True)  # (N, nh, 1, 1)
        return (scores - lse).exp().type_as(values) @ values, lse


def _autocast_off(x: torch.Tensor):
    """Autocast exists only for real devices; on meta there is nothing to turn off."""
    if x.device.type in ("cpu", "cuda"):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
