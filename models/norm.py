"""RMSNorm and rotary position helpers shared by sequence attention, depth attention and the router."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain and, optionally (norm_bias), a learned bias."""

    def __init__(self, dim: int, eps: float, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in fp32 so bf16 activations do not lose the small mean square; the result goes to matmuls
        # only, so it leaves in their dtype: one low-precision copy, not one cast per consuming matmul
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(compute_dtype(x))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls on x run in: autocast's when it is on for x's device, else x's own."""
    if x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def rotary_cos_sin(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (len(positions), dim // 2), in fp32.

    `positions` are token positions for sequence attention and depth indices for depth attention and
    the router: the same helper encodes either axis. Elementwise only, so the FLOP counters see no work.
    """
    inv_freq = theta ** -(torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (P, dim/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + dim/2]) of the last axis; cos/sin broadcast against x[..., :dim/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)
