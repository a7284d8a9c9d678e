"""Helpers for the training and runner tests: tiny run folders and their metrics without timings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from matcher.config import TrainConfig
from matcher.cost.analytic import Conventions
from matcher.plan.presets import get_preset
from matcher.plan.sweep import Run, predict
from matcher.run.contract import RunInfo
from matcher.run.rundir import RunDir

# Test machines are small and shared: with two OpenMP threads per process, threads spin against the
# other processes on the cores and tiny runs take 5-10x longer. One thread here and in the subprocesses
# the tests start (torchrun already gives each of its workers one).
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

TIMING_FIELDS = ("tokens_per_s", "mfu", "elapsed_s", "peak_memory_bytes")


def tiny_train(**changes) -> TrainConfig:
    """24 steps of 8 x 64 tokens with 3 small evaluations (greedy decoding dominates): seconds on a CPU."""
    base = dict(total_tokens=24 * 8 * 64, batch_size=8, seq_len=64, data_steps=2, eval_examples=3, n_evals=3)
    return TrainConfig(**{**base, **changes})


def tiny_run(name: str = "la-tiny", train: TrainConfig | None = None, role: str = "target") -> Run:
    train = train or tiny_train()
    model = dataclasses.replace(get_preset(name), seq_len=train.seq_len)  # one context (sweep validation)
    return Run(name=name, group=name, role=role, model=model, train=train,
               predicted=predict(model, train, Conventions()))


def prepare(folder: Path, run: Run | None = None) -> RunDir:
    run = run or tiny_run()
    run_dir = RunDir(folder / run.name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_run_info(RunInfo.from_run(run, "tests"))
    return run_dir


def comparable(run_dir: RunDir) -> list[dict]:
    """Metric lines as an uninterrupted run writes them: no resume events, no timings."""
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS}
            for line in run_dir.read_metrics() if line["event"] != "resume"]
