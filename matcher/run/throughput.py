"""Throughput and load statistics reported at evaluation points: model FLOPs utilisation against the
device's dense bf16 peak, and the Gini coefficient of expert load. No torch."""

from __future__ import annotations

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' datasheets. Matched by
# substring of the device name, most specific first.
BF16_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
)


def peak_flops(device_name: str | None, dtype: str) -> float | None:
    """Peak FLOP/s of one device for `dtype`; None on CPU, for fp32, or for an unknown device."""
    if device_name is None or dtype != "bf16":
        return None
    for key, peak in BF16_PEAK_FLOPS:
        if key in device_name:
            return peak
    return None


def mfu(train_flops_per_token: float, tokens_per_s: float, peak_flops_per_device: float | None,
        world_size: int) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all devices used."""
    if peak_flops_per_device is None:
        return None
    return train_flops_per_token * tokens_per_s / (peak_flops_per_device * world_size)


def gini(shares: list[float]) -> float:
    """Gini coefficient of a load distribution: 0 when every expert gets the same share, (n-1)/n when
    one expert gets everything."""
    n = len(shares)
    total = sum(shares)
    if n == 0 or total <= 0:
        return 0.0
    ordered = sorted(shares)
    weighted = sum((2 * (i + 1) - n - 1) * share for i, share in enumerate(ordered))
    return weighted / (n * total)
