"""CPU forward + backward time of the FLOP-matched 100m presets (la-100m, dr-100m, dr_da-100m): fp32, one
batch (default 2 x 256 tokens), the three models alternated in one process so that a busy machine slows
them alike; the median of `--repeats` rounds after one warm-up round, and the ratios to la. At matched
FLOPs the ratios show what the shared layer's dispatch (dr: many narrow experts) and depth attention
(dr_da) cost beyond their FLOPs. Each expert sees batch x seq_len x top_k / n_experts rows per
application (dr-100m: ~10 at 2 x 256, la-100m: 128), so a larger `--batch` shows how much of a ratio is
the small-matrix regime rather than the dispatch. `--before` adds dr and dr_da as they ran before their
shared layer's expert weight gradients were computed once per backward (each application's backward
writing its own: Model.forward's weight_gradients="per_application"), alternated in the same rounds. `--breakdown`
splits each step, under the profiler (median of 3 profiled steps each), into the expert GEMMs (the
grouped GEMMs' own time: the same FLOPs in all three, but la's 8 experts see ~128 rows each and dr's 105
~10, a regime in which the CPU's GEMM reads a whole expert's weights for a few rows) and everything else
(attention, LM head, routing, sorting, gathering, summing: the dispatch's own work), with the ratios of
each to la. `--keep-freed-memory` keeps glibc from returning freed memory to the system, so large tensors
are not page-faulted in again at every step. `--profile` adds the top ops of one dr and one dr_da step.

    python bench/dispatch.py [--repeats 5] [--threads 2] [--batch 2] [--seq-len 256] [--before]
                             [--breakdown] [--keep-freed-memory] [--profile] [--presets A,B,C]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from matcher.models import Model
from matcher.plan.presets import get_preset

PRESETS = ("la-100m", "dr-100m", "dr_da-100m")


def step(model: Model, idx: torch.Tensor, weight_gradients: str = "combined") -> None:
    _, loss = model(idx, idx, weight_gradients=weight_gradients)
    loss.backward()
    model.zero_grad(set_to_none=True)


def timed(model: Model, idx: torch.Tensor, weight_gradients: str) -> float:
    start = time.perf_counter()
    step(model, idx, weight_gradients)
    return time.perf_counter() - start


def breakdown(model: Model, idx: torch.Tensor, weight_gradients: str, steps: int = 3) -> tuple[float, float]:
    """Seconds of one step in the experts' grouped GEMMs (aten::_grouped_mm, their kernels included) and in
    everything else, each the median of `steps` profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    gemms, rest = [], []
    for _ in range(steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model, idx, weight_gradients)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        gemms.append(sum(e.cpu_time_total for e in events if e.key == "aten::_grouped_mm") / 1e6)
        rest.append(total - gemms[-1])
    return statistics.median(gemms), statistics.median(rest)


def keep_freed_memory() -> None:
    """glibc's malloc serves allocations over its mmap threshold (at most 32 MB) with fresh pages and returns
    them on free, so every step page-faults its large tensors in again (the shared layer's expert weight
    gradients are 110 MB each at dr-100m; the logits 65 MB in all three). Turning mmap off and never trimming
    keeps freed memory for reuse, as jemalloc or tcmalloc would: what the step costs without that kernel
    time. It changes no result, only the time."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # malloc.h
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, 2**62)):
        raise SystemExit("--keep-freed-memory: mallopt refused (not glibc?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="sequences per forward")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--before", action="store_true",
                        help="also time dr and dr_da with a weight gradient per application")
    parser.add_argument("--breakdown", action="store_true",
                        help="split each step into expert GEMMs and everything else (profiled)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="comma-separated; the first is the baseline of every ratio")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc: never return freed memory to the system (no page faults on reuse)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    presets = args.presets.split(",")
    base = presets[0]
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    # each timed entry: a model and how its forward computes a shared layer's expert weight gradients
    models = {name: (Model(get_preset(name)), "combined") for name in presets}
    if args.before:
        for name in presets[1:]:
            before = Model(get_preset(name))
            before.load_state_dict(models[name][0].state_dict())
            models[f"{name} before"] = (before, "per_application")
    idx = torch.randint(0, min(get_preset(name).vocab_size for name in presets), (args.batch, args.seq_len))
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(args.repeats + 1):
        for name, (model, weight_gradients) in models.items():
            seconds = timed(model, idx, weight_gradients)
            if round_:  # the first round warms the allocator and the kernels
                times[name].append(seconds)

    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, fp32, "
          f"batch {args.batch} x {args.seq_len}, forward + backward, median of {args.repeats}")
    median = {name: statistics.median(values) for name, values in times.items()}
    for name in models:
        spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
        print(f"{name:19s} {median[name]:6.2f} s  (range {spread} s)")
    for name in models:
        if name != base:
            print(f"{name}/{base}: {median[name] / median[base]:.2f}")

    if args.breakdown:
        parts = {name: breakdown(model, idx, weight_gradients) for name, (model, weight_gradients) in models.items()}
        print("profiled (median of 3 steps each): expert GEMMs + everything else")
        for name, (gemms, rest) in parts.items():
            ratio = "" if name == base else (
                f"   ratios to {base}: {gemms / parts[base][0]:.2f} + {rest / parts[base][1]:.2f}")
            print(f"{name:19s} {gemms:7.3f} s + {rest:7.3f} s{ratio}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name in presets[1:]:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step(models[name][0], idx)
            print(f"{name}, one step:")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
