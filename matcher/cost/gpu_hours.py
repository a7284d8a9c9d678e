"""Compute before launch: a run's training FLOPs as GPU-hours on a named device at an assumed MFU.

GPU-hours = train_flops_per_token x tokens / (peak FLOP/s x MFU) / 3600, with model FLOPs (3 x forward,
matcher.cost.analytic), as MFU is defined (PaLM, Chowdhery et al. 2022, appendix B: model FLOPs per
second over the peak).

Peaks are dense bf16 tensor-core FLOP/s from each vendor's datasheet; the datasheets' headline figures
for NVIDIA Hopper and Blackwell are "with sparsity" (2:4), twice the dense rate, and are halved here.
"""

from __future__ import annotations

from dataclasses import dataclass

from matcher.errors import ConfigError

DEFAULT_GPU = "h100"
DEFAULT_MFU = 0.4  # a well-tuned dense LM on Hopper reaches 0.4-0.5; MoE and small models fewer


@dataclass(frozen=True)
class Device:
    peak_bf16_flops: float  # dense bf16 tensor-core FLOP/s
    source: str


DEVICES = {
    "h100": Device(989e12, "NVIDIA H100 Tensor Core GPU datasheet, SXM: 1,979 TFLOPS bf16 with sparsity"),
    "h100-pcie": Device(756e12, "NVIDIA H100 Tensor Core GPU datasheet, PCIe: 1,513 TFLOPS bf16 with sparsity"),
    "h200": Device(989e12, "NVIDIA H200 Tensor Core GPU datasheet, SXM: 1,979 TFLOPS bf16 with sparsity"),
    "a100": Device(312e12, "NVIDIA A100 Tensor Core GPU datasheet: 312 TFLOPS bf16 dense"),
    "b200": Device(2.25e15, "NVIDIA HGX B200 datasheet: 36 PFLOPS FP16/bf16 with sparsity for 8 GPUs"),
    "l40s": Device(362e12, "NVIDIA L40S datasheet: 362 TFLOPS bf16 dense (733 with sparsity)"),
    "mi300x": Device(1307e12, "AMD Instinct MI300X datasheet: 1,307.4 TFLOPS bf16 dense"),
}


def device(name: str) -> Device:
    key = name.strip().lower()
    if key not in DEVICES:
        raise ConfigError(f"--gpu {name}: unknown device; known (peak dense bf16): "
                          + ", ".join(f"{n} {d.peak_bf16_flops / 1e12:,.0f} TFLOP/s" for n, d in DEVICES.items()))
    return DEVICES[key]


def check_mfu(mfu: float) -> float:
    if not 0 < mfu <= 1:
        raise ConfigError(f"--mfu is the share of the device's peak the training reaches, between 0 and 1 "
                          f"(such as 0.4), got {mfu:g}")
    return mfu


def gpu_hours(train_flops: float, gpu: str, mfu: float) -> float:
    """GPU-hours that `train_flops` model FLOPs take on `gpu` at `mfu`."""
    return train_flops / (device(gpu).peak_bf16_flops * check_mfu(mfu)) / 3600
