"""The Slurm launcher: one sbatch job array over a sweep's runs, one array task per run.

Each task runs `python -m matcher.run.runner <run dir> --nproc <gpus per run>`, the same per-run entry
the local launcher uses (it takes the run's lock, resumes from the last checkpoint, and skips a run
that is already finished). Paths in the script are the ones given to `matcher run`, so submit it
from that directory (the runner does). Slurm sends SIGTERM two minutes before the time limit; the
run checkpoints and stops as `interrupted`, and `matcher run --launcher slurm` again resumes it.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from matcher.errors import ConfigError, RunError

SIGNAL_LEAD_S = 120  # SIGTERM this long before the time limit: time to finish a step and checkpoint


@dataclass(kw_only=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None  # None: the user's default account
    time: str = "24:00:00"  # wall-clock limit per run (Slurm's format: [D-]HH:MM:SS)
    gpus_per_run: int = 1  # one node; more than one GPU runs the run under torchrun (DDP or FSDP2)
    cpus_per_gpu: int = 8
    mem: str | None = None  # memory per node, e.g. "64G"; None: the partition's default
    max_parallel: int | None = None  # at most this many runs at once (the array's %N throttle)
    python: str = "python"  # interpreter with matcher installed, as the compute nodes see it

    def __post_init__(self) -> None:
        if self.gpus_per_run < 1:
            raise ConfigError(f"gpus per run must be at least 1, got {self.gpus_per_run}")
        if self.cpus_per_gpu < 1:
            raise ConfigError(f"cpus per GPU must be at least 1, got {self.cpus_per_gpu}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"max parallel runs must be at least 1, got {self.max_parallel}")


def job_script(*, sweep_name: str, sweep_dir: Path, run_names: list[str], options: SlurmOptions,
               fsdp: bool) -> str:
    """The sbatch script text (deterministic: tests compare it with a golden file)."""
    if not run_names:
        raise RunError("no runs to submit")
    throttle = f"%{options.max_parallel}" if options.max_parallel else ""
    directives = [
        f"--job-name=matcher-{sweep_name}",
        f"--array=0-{len(run_names) - 1}{throttle}",
        *([f"--partition={options.partition}"] if options.partition else []),
        *([f"--account={options.account}"] if options.account else []),
        "--nodes=1",
        "--ntasks=1",
        f"--gpus={options.gpus_per_run}",
        f"--cpus-per-task={options.cpus_per_gpu * options.gpus_per_run}",
        *([f"--mem={options.mem}"] if options.mem else []),
        f"--time={options.time}",
        f"--signal=B:TERM@{SIGNAL_LEAD_S}",
        f"--output={(sweep_dir / 'slurm' / '%x-%A_%a.out').as_posix()}",
        "--open-mode=append",
    ]
    # The run folder: the sweep folder quoted for the shell, then "$RUN" expanded by it.
    run_dir = f'{shlex.quote(sweep_dir.as_posix())}/"$RUN"'
    command = " ".join([shlex.quote(options.python), "-m", "matcher.run.runner", run_dir,
                        "--nproc", str(options.gpus_per_run), *(["--fsdp"] if fsdp else [])])
    lines = [
        "#!/bin/bash",
        f"# matcher sweep {sweep_name}: one array task per run. Submit from the directory that holds",
        f"# {sweep_dir.as_posix()}:  sbatch {(sweep_dir / 'slurm' / f'{sweep_name}.sbatch').as_posix()}",
        *(f"#SBATCH {directive}" for directive in directives),
        "set -euo pipefail",
        f"RUNS=({' '.join(shlex.quote(name) for name in run_names)})",
        'RUN="${RUNS[$SLURM_ARRAY_TASK_ID]}"',
        "# exec: Slurm's SIGTERM before the time limit reaches the run, which checkpoints and stops",
        f"exec {command}",
        "",
    ]
    return "\n".join(lines)


def write_job_script(text: str, sweep_dir: Path, sweep_name: str) -> Path:
    from matcher.atomic import write_text_atomic

    path = sweep_dir / "slurm" / f"{sweep_name}.sbatch"
    write_text_atomic(path, text)
    return path


def submit(script: Path) -> str:
    """`sbatch --parsable SCRIPT` from the current directory; returns the job id."""
    if shutil.which("sbatch") is None:
        raise RunError(f"sbatch is not installed here (not a Slurm login node?); the job script is at "
                       f"{script}: run `sbatch {script}` from this directory on the cluster")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        why = message[-1] if message else f"exit code {done.returncode}"
        raise RunError(f"sbatch refused {script}: {why}")
    return done.stdout.strip().split(";")[0]
