"""`matcher lm-eval RUN [--step N] [--depth D] -- <lm_eval args>`: lm-evaluation-harness's own command
line on a saved checkpoint of a run. The `matcher` model is registered first (importing the adapter
does that), so `--model matcher` needs no code of the user's; the device defaults to what this
machine has (cpu on a CPU build). The harness writes its results under the run folder,
lm-eval/step-<N>[-depth<D>]/, and each task's scores become rows of the run's evals.jsonl named
`lm-eval-<task>` (a metric with a filter: `<metric>-<filter>`), apart from matcher's own tasks, so
`matcher compare` can plot a harness task's curve.
"""

# Function-local imports: lm-evaluation-harness (an optional extra) and torch, loaded when the command runs; a
# missing extra is one clear error.

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from matcher.errors import ConfigError, RunError
from matcher.eval.setting import harness_setting
from matcher.run.rundir import RunDir

OWN_OPTIONS = ("--model", "--model_args", "-a", "--output_path", "-o")  # set here, from RUN, --step and --depth
Z_95 = 1.959964  # the normal quantile of a 95% interval from the harness's standard error


def lm_eval_command(run_dir: str | Path, harness_args: list[str], *, step: int | None = None,
                    depth: int | None = None) -> list[dict[str, Any]]:
    try:
        import lm_eval
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise ConfigError("matcher lm-eval needs lm-evaluation-harness: pip install 'matcher[lm-eval]'") from None
    import torch

    import matcher.run.lm_eval_adapter  # noqa: F401  (registers the model name `matcher`)
    from matcher.run.evaluate import choose_steps, store_rows
    from matcher.run.snapshots import list_snapshots, read_metadata

    taken = [arg for arg in harness_args if arg.split("=")[0] in OWN_OPTIONS]
    if taken:
        raise ConfigError(f"{taken[0]}: matcher lm-eval sets the model, its arguments and the output folder from "
                          "RUN, --step and --depth; leave it out of the harness's arguments")
    if not any(arg.split("=")[0] == "--tasks" or arg == "-t" for arg in harness_args):
        raise ConfigError("give the harness's tasks after --, e.g. matcher lm-eval RUN -- --tasks arc_easy")
    run = RunDir(run_dir)
    info = run.read_run_info()
    model_cfg = info.model
    snapshots = dict(list_snapshots(run.path))
    chosen = choose_steps(sorted(snapshots), step, False, run.path)[0]
    meta = read_metadata(snapshots[chosen])
    at_depth = depth if depth is not None and depth != model_cfg.depth else None
    out = run.path / "lm-eval" / (f"step-{chosen}" + (f"-depth{at_depth}" if at_depth else ""))
    model_args = f"run_dir={run.path},step={chosen}" + (f",depth={at_depth}" if at_depth else "")
    device = [] if any(arg.split("=")[0] == "--device" for arg in harness_args) else [
        "--device", "cuda" if torch.cuda.is_available() else "cpu"]
    before = set(out.rglob("results_*.json")) if out.is_dir() else set()
    argv = ["lm-eval", "run", "--model", "matcher", "--model_args", model_args, "--output_path", str(out), *device,
            *harness_args]
    saved_argv, sys.argv = sys.argv, argv
    try:
        cli_evaluate()
    finally:
        sys.argv = saved_argv
    written = sorted(set(out.rglob("results_*.json")) - before, key=lambda p: p.stat().st_mtime)
    if not written:
        raise RunError(f"lm-evaluation-harness wrote no results under {out}; see its messages above")
    results = json.loads(written[-1].read_text(encoding="utf-8"))
    rows = harness_rows(results, run=info.run, step=meta["step"], tokens=meta["tokens"],
                        depth=depth or model_cfg.depth, trained_depth=model_cfg.depth,
                        spec=" ".join(harness_args), version=lm_eval.__version__, results_file=written[-1])
    store_rows(run.evals, rows)
    return rows


def _fewshot(harness_args: list[str]) -> str:
    """The harness's --num_fewshot, or `default` (each task's own)."""
    for i, arg in enumerate(harness_args):
        if arg.startswith("--num_fewshot="):
            return arg.split("=", 1)[1]
        if arg in ("--num_fewshot", "-f") and i + 1 < len(harness_args):
            return harness_args[i + 1]
    return "default"


def harness_rows(results: dict[str, Any], *, run: str, step: int, tokens: int, depth: int, trained_depth: int,
                 spec: str, version: str, results_file: Path) -> list[dict[str, Any]]:
    """evals.jsonl rows from the harness's results: one per task, its metrics with a 95% interval from
    the harness's standard error (normal approximation) where it gives one, and its setting
    (matcher/eval/setting.py; the shots are the --num_fewshot of the harness's arguments `spec`)."""
    shots = _fewshot(spec.split())
    rows = []
    for task, metrics in results.get("results", {}).items():
        scores, intervals = {}, {}
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            name = metric if filter_name == "none" else f"{metric}-{filter_name}"
            scores[name] = float(value)
            stderr = metrics.get(f"{metric}_stderr,{filter_name}")
            intervals[name] = ([value - Z_95 * stderr, value + Z_95 * stderr]
                               if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None)
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        setting = harness_setting(f"lm-eval-{task}", n=n, shots=shots, depth=depth, trained_depth=trained_depth,
                                  version=version)
        rows.append({"event": "bench", "run": run, "task": f"lm-eval-{task}", "n": n, "scores": scores,
                     "setting": setting,
                     "intervals": intervals, "outcomes": {}, "spec": f"lm-eval {spec}",
                     "source": "lm-evaluation-harness", "harness_version": version,
                     "results_file": results_file.name, "step": step, "tokens": tokens, "depth": depth,
                     "trained_depth": trained_depth})
    return rows
