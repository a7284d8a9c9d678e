"""`matcher run SWEEP`: train every run of a sweep into results/<sweep>/ (matcher.runner), locally or
as a Slurm job array. `--nproc N` is the number of processes (GPUs) per run for both launchers."""

from __future__ import annotations

from pathlib import Path


def run_command(sweep: str | Path, *, results: str | Path = "results", launcher: str = "local",
                nproc: int = 1, only: list[str] | None = None, dry_run: bool = False, fsdp: bool = False,
                retry_failed: bool = False, partition: str | None = None, account: str | None = None,
                time: str = "24:00:00", cpus_per_gpu: int = 8, mem: str | None = None,
                max_parallel: int | None = None, python: str = "python") -> int:
    """Returns the exit code: 1 when a run failed, else 0 (skipped, interrupted and submitted runs
    included; the summary table says which)."""
    from matcher.runner import run_sweep
    from matcher.slurm import SlurmOptions

    slurm = SlurmOptions(partition=partition, account=account, time=time, gpus_per_run=nproc,
                         cpus_per_gpu=cpus_per_gpu, mem=mem, max_parallel=max_parallel, python=python)
    summaries = run_sweep(sweep, results, launcher=launcher, nproc=nproc, only=only, dry_run=dry_run,
                          fsdp=fsdp, retry_failed=retry_failed, slurm=slurm)
    return 1 if any(summary.state == "failed" for summary in summaries) else 0
