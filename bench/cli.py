"""Benchmark the CLI's start-up: median wall time of `matcher --help`, `matcher cost` and an analytic
`matcher plan --dry-run` as subprocesses (interpreter start included), and whether torch, pandas, scipy or
numpy were imported on the way. `--compare DIR` runs another checkout's matcher in the same rounds,
alternated with this one, so that a busy machine slows both alike (a before/after of a change).

    python bench/cli.py [--repeats 7] [--compare OTHER_CHECKOUT]

Goal: no command here imports torch, pandas, scipy or numpy; `cost` and `plan` well under a second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "--help": ["--help"],
    "cost": ["cost", "la-1b", "--no-measure"],
    "plan": ["plan", "--target", "la-1b", "--variants", "dr,dr_da", "--no-measure", "--dry-run"],
}
HEAVY = ("torch", "pandas", "scipy", "numpy")
# Which heavy modules the command imported, printed by the interpreter at exit.
PROBE = ("import atexit, sys; atexit.register(lambda: print('HEAVY', *[m for m in {heavy} if m in sys.modules], "
         "file=sys.stderr)); sys.argv = ['matcher', *sys.argv[1:]]; import runpy; "
         "runpy.run_module('matcher', run_name='__main__')")


def environment(root: Path) -> dict[str, str]:
    # Bytecode caching on, as in a normal install (the warm-up run writes it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(root), "COLUMNS": "100"}


def run_once(root: Path, args: list[str]) -> tuple[float, str]:
    """Wall seconds of one run, and the heavy modules it imported."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], env=environment(root),
                          capture_output=True, text=True, cwd=root)
    wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{root}: matcher {' '.join(args)} failed:\n{done.stderr}")
    heavy = next((line.split()[1:] for line in done.stderr.splitlines() if line.startswith("HEAVY")), [])
    return wall_s, ",".join(heavy) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare", type=Path, help="another checkout, run alternated with this one")
    args = parser.parse_args()
    roots = {"this": ROOT, **({"other": args.compare.resolve()} if args.compare else {})}
    times: dict[tuple[str, str], list[float]] = {}
    heavy: dict[tuple[str, str], str] = {}
    for label, command in COMMANDS.items():
        for root in roots.values():
            run_once(root, command)  # warm-up: writes the bytecode cache
        for _ in range(args.repeats):
            for name, root in roots.items():
                wall_s, heavy[name, label] = run_once(root, command)
                times.setdefault((name, label), []).append(wall_s)
    print(f"median of {args.repeats} runs each (interpreter start included); heavy: torch/pandas/scipy/numpy imported")
    for (name, label), walls in times.items():
        print(f"  {name:5s} matcher {label:7s} {statistics.median(walls) * 1000:7.0f} ms   heavy: {heavy[name, label]}")


if __name__ == "__main__":
    main()
