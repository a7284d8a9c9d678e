"""Benchmark of the cost model.

Prints (1) the wall time of `matcher cost la-2b`, analytic only vs with the measured counts, each as a
fresh process (interpreter start included), medians of several runs measured side by side; and
(2) the analytic-vs-measured table for every preset: parameters, forward FLOPs per token
(FlopCounterMode on the meta device) and, for the tiny presets, training memory on fake tensors.

    python bench/cost_model.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from matcher import fmt
from matcher.commands.cost import MEMORY_ROWS
from matcher.cost.analytic import Conventions, cost_report
from matcher.plan.presets import PRESETS


def wall_time(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "matcher", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from matcher.cost import measured as measure

    analytic_s = wall_time(["cost", "la-2b", "--json", "--no-measure"], args.repeats)
    measured_s = wall_time(["cost", "la-2b", "--json"], args.repeats)
    print(f"matcher cost la-2b  (median of {args.repeats}, fresh process each)")
    print(f"  analytic only      {analytic_s * 1000:8.0f} ms")
    print(f"  with measurement   {measured_s * 1000:8.0f} ms   ({measured_s / analytic_s:.1f}x)")
    print()
    header = f"{'preset':14s} {'params analytic':>16s} {'measured':>16s} {'diff':>8s}   " \
             f"{'fwd FLOP/tok':>12s} {'measured':>12s} {'diff':>9s}   {'train mem':>10s} {'measured':>10s} {'diff':>8s}"
    print(header)
    conv = Conventions(activation_dtype="fp32")
    for name, make in PRESETS.items():
        cfg = make()
        report = cost_report(cfg, conv, batch=2)
        params = measure.measured_params(cfg)["total"]
        flops = measure.measured_forward_flops(cfg, seq_len=cfg.seq_len)["total"]
        fwd = sum(report.forward_flops_per_token.values())
        line = (f"{name:14s} {report.params.total:16,d} {params:16,d} "
                f"{fmt.percent(fmt.rel_diff(params, report.params.total), 3):>8s}   "
                f"{fmt.si(fwd):>12s} {fmt.si(flops):>12s} {fmt.percent(fmt.rel_diff(flops, fwd), 4):>9s}")
        if cfg.d_model <= 128:
            mem = measure.measured_training_memory(cfg, batch=2, seq_len=cfg.seq_len, recompute="none",
                                                   activation_dtype="fp32")
            measured_total = sum(mem[key] for _, key in MEMORY_ROWS)
            line += (f"   {fmt.bytes_(report.memory.training_bytes):>10s} {fmt.bytes_(measured_total):>10s} "
                     f"{fmt.percent(fmt.rel_diff(measured_total, report.memory.training_bytes), 1):>8s}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
