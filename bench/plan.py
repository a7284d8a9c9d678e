"""Benchmark `matcher plan`: median wall time as a subprocess (interpreter start included), the
search's cost evaluations, and a brute-force lattice scan beside it as the reference.

    python bench/plan.py [--target la-2b] [--variants dr,dr_da] [--repeats 7]

Goals: the analytic plan (--no-measure --dry-run) under 0.5 s, the plan with the measured check
under 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Bytecode caching on, as in a normal install (the warm-up run writes it): without it every start
# recompiles matcher's modules from source.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(ROOT)}

# The reference: every (d_ff, n_experts) of the box [align, 2 x d_ff*] x [top_k, 2 x n_experts*] around
# the search's answer (*) on the lattice it chose (any third free variable held at its choice), scored by
# the search's own objective.
SCAN = """
import json, sys, time
from matcher.plan.planner import make_plan
from matcher.plan.request import PlanRequest
from matcher.plan.search import brute_force
start = time.perf_counter()
plan = make_plan(PlanRequest(target=sys.argv[1], variants=sys.argv[2]))
rows = []
for run in plan.runs[1:]:
    found, align = run.config, run.match.align  # the lattice the search chose for this variant
    d_ff, n_experts, evaluations = brute_force(found, plan.spec, range(align, 2 * found.d_ff + 1, align),
                                               range(found.top_k, 2 * found.n_experts + 1))
    rows.append(dict(variant=run.label, d_ff=d_ff, n_experts=n_experts, evaluations=evaluations,
                     agrees=(d_ff, n_experts) == (found.d_ff, found.n_experts)))
print(json.dumps(rows))
"""


def timed(command: list[str], repeats: int) -> tuple[float, float, str]:
    """Median wall and CPU (user + system) seconds of `command` over `repeats` runs after one warm-up,
    and its last output. On a busy machine wall time grows with the load; CPU time much less."""
    subprocess.run(command, env=ENV, capture_output=True, check=True, cwd=ROOT)
    walls, cpus, output = [], [], ""
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=True, cwd=ROOT)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        output = done.stdout
    return statistics.median(walls), statistics.median(cpus), output


def show(label: str, wall_s: float, cpu_s: float, goal: str = "") -> None:
    print(f"  {label:36} {wall_s:6.3f} s wall  {cpu_s:6.3f} s CPU  {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="la-2b")
    parser.add_argument("--variants", default="dr,dr_da")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    plan = [sys.executable, "-m", "matcher", "plan", "--target", args.target, "--variants", args.variants,
            "--dry-run"]
    print(f"matcher plan --target {args.target} --variants {args.variants} (median of {args.repeats}, "
          f"{os.cpu_count()} cores, interpreter start included)")

    print(f"  (load average {os.getloadavg()[0]:.1f} at the start)")
    # Floors beside the figures: on a loaded machine they grow as much as the plan does.
    show("python -c pass", *timed([sys.executable, "-c", "pass"], args.repeats)[:2])
    version = [sys.executable, "-m", "matcher", "version"]
    show("matcher version (the CLI's floor)", *timed(version, args.repeats)[:2])
    show("analytic (--no-measure --dry-run)", *timed([*plan, "--no-measure"], args.repeats)[:2],
         "goal < 0.5 s")
    show("with the measured check", *timed(plan, max(1, args.repeats // 2))[:2], "goal < 5 s")

    planned = subprocess.run([*plan, "--json", "--no-measure"], env=ENV, capture_output=True, text=True,
                             check=True, cwd=ROOT)
    runs = json.loads(planned.stdout)["runs"][1:]
    scan_command = [sys.executable, "-c", SCAN, args.target, args.variants]
    scan_wall_s, scan_cpu_s, output = timed(scan_command, max(1, args.repeats // 2))
    scans = {row["variant"]: row for row in json.loads(output)}
    show("brute-force scan (plan, then scan)", scan_wall_s, scan_cpu_s)
    print(f"  {'variant':8} {'d_ff':>6} {'experts':>8} {'steps':>6} {'search evals':>13} {'scan evals':>11}"
          "  same point")
    for run in runs:
        scan = scans[run["label"]]
        model = run["model"]
        print(f"  {run['label']:8} {model['d_ff']:6d} {model['n_experts']:8d} {run['steps']:6d} "
              f"{run['evaluations']:13d} {scan['evaluations']:11d}  {'yes' if scan['agrees'] else 'NO'}")


if __name__ == "__main__":
    main()
