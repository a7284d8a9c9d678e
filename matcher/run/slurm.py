"""The Slurm launcher: one sbatch job array over a sweep's runs, one array task per run, on one node or
several, that requeues itself until its run is finished.

One node: the task runs `python -m matcher.run.runner <run dir> --nproc <gpus per node>`, the per-run
entry the local launcher uses (it takes the run's lock, resumes from the last checkpoint, skips a run
that is already finished, and starts torchrun when the node has more than one GPU).
Several nodes: the runner holds the lock on the first node and starts one srun step of one task per
node, each a torchrun agent (`--nnodes $SLURM_NNODES --nproc-per-node G --rdzv-backend c10d`) that
meets the others at the first node on a port derived from the job id (two jobs that share a head node
do not clash; a requeued job keeps its id and its port).

Paths in the script are the ones given to `matcher run`, so submit it from that directory (the runner
does). Extra `#SBATCH` lines and setup lines (module load, environment activation) pass through.

The requeue protocol:
- `--signal=B:TERM@120`: Slurm sends SIGTERM to the batch shell alone, 120 s before the time limit. The
  shell traps it and passes it to the runner, which passes it to the trainer (through srun and torchrun
  on several nodes); the trainer finishes its step, checkpoints, writes state `interrupted` to
  status.json and exits. Preemption sends SIGTERM to every process of the job at once: a trainer that
  gets it twice stops at once, also as `interrupted`, and resumes from its last checkpoint.
- The runner's exit code is the run's state in status.json once the trainer has exited:
  0 finished (or already finished), 1 failed, 2 a user error (bad run folder), 3 interrupted,
  75 locked (another process trains the run).
- On 3 the shell calls `scontrol requeue ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}` (`#SBATCH
  --requeue` allows it) and exits 0; the task runs again later and resumes. Any other code ends the
  task with that code: a run that failed for a reason of its own (a NaN loss, bad data, a code error)
  is not requeued, and neither is a finished one.
- A lock left by an earlier attempt of the same job (its batch step was killed before the runner let go)
  is stale by definition: Slurm runs one attempt of a job at a time (matcher.run.lock).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from matcher.atomic import write_text_atomic
from matcher.errors import ConfigError, RunError
from matcher.run.contract import ExitCode

SIGNAL_LEAD_S = 120  # SIGTERM this long before the time limit: time to finish a step and checkpoint
# torchrun's wait for its workers after passing a signal on, before it kills them: most of the lead
SHUTDOWN_TIMEOUT_S = SIGNAL_LEAD_S - 20
PORT_BASE, PORT_SPAN = 20000, 20000  # rendezvous ports 20000-39999, from the job id

# [D-]HH:MM:SS and Slurm's shorter forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME = re.compile(r"(?:(?P<days>\d+)-(?P<day_rest>\d+(?::\d+){0,2})|(?P<plain>\d+(?::\d+){0,2}))")
_NAME = re.compile(r"[A-Za-z0-9_.,:@+-]+")
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
# sbatch options the script sets itself, and the `matcher run` option that sets each
_MANAGED = {"job-name": None, "array": "--max-parallel", "partition": "--partition", "account": "--account",
            "nodes": "--nodes", "ntasks": None, "ntasks-per-node": None, "gpus": "--gpus-per-node",
            "gpus-per-node": "--gpus-per-node", "gres": "--gpus-per-node", "cpus-per-task": "--cpus-per-gpu",
            "mem": "--mem", "time": "--time", "signal": None, "requeue": None, "no-requeue": None,
            "output": None, "error": None, "open-mode": None}
_SHORT = {"J": "job-name", "a": "array", "p": "partition", "A": "account", "N": "nodes", "n": "ntasks",
          "G": "gpus", "c": "cpus-per-task", "t": "time", "o": "output", "e": "error"}


def time_limit_seconds(text: str) -> int | None:
    """Seconds in a Slurm time limit; None when `text` is not one."""
    match = _TIME.fullmatch(text.strip())
    if match is None:
        return None
    if match["days"] is not None:
        hours, minutes, seconds = ([int(p) for p in match["day_rest"].split(":")] + [0, 0])[:3]
        return ((int(match["days"]) * 24 + hours) * 60 + minutes) * 60 + seconds
    parts = [int(p) for p in match["plain"].split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


@dataclass(kw_only=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None  # None: the user's default account
    time: str = "24:00:00"  # wall-clock limit per attempt (Slurm's format: [D-]HH:MM:SS); requeued until done
    nodes: int = 1  # nodes per run; more than one: srun + torchrun with a c10d rendezvous
    gpus_per_node: int = 1  # more than one GPU (or node) runs the run under torchrun (DDP or FSDP2)
    cpus_per_gpu: int = 8
    mem: str | None = None  # memory per node, e.g. "64G"; None: the partition's default
    max_parallel: int | None = None  # at most this many runs at once (the array's %N throttle)
    python: str = "python"  # interpreter with matcher installed, as the compute nodes see it
    sbatch_args: list[str] = field(default_factory=list)  # extra #SBATCH lines, e.g. "--constraint=h100"
    setup: list[str] = field(default_factory=list)  # shell lines before training: module load, activation

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "cpus_per_gpu"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"--max-parallel must be at least 1, got {self.max_parallel}")
        seconds = time_limit_seconds(self.time)
        if seconds is None:
            raise ConfigError(f"--time {self.time!r} is not a Slurm time limit; give [D-]HH:MM:SS, e.g. "
                              "24:00:00 or 2-00:00:00")
        if seconds <= SIGNAL_LEAD_S:
            raise ConfigError(f"--time {self.time} leaves no time to train: the run is told to checkpoint "
                              f"{SIGNAL_LEAD_S} s before the limit; give a longer limit")
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and not _NAME.fullmatch(value):
                raise ConfigError(f"--{name} {value!r} is not a Slurm {name} name (letters, digits, _.,:@+-)")
        if self.mem is not None and not _MEM.fullmatch(self.mem):
            raise ConfigError(f"--mem {self.mem!r} is not a Slurm memory size; give a number with K, M, G or T, "
                              "e.g. 64G")
        if not self.python.strip() or "\n" in self.python:
            raise ConfigError(f"--python {self.python!r} must be an interpreter path or command")
        for arg in self.sbatch_args:
            _check_sbatch_arg(arg)
        for line in self.setup:
            if not line.strip() or "\n" in line or "\r" in line:
                raise ConfigError(f"--setup {line!r} must be one non-empty shell line; repeat --setup for more")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node


def _check_sbatch_arg(arg: str) -> None:
    if "\n" in arg or "\r" in arg or not arg.startswith("-"):
        raise ConfigError(f"--sbatch-arg {arg!r} must be one sbatch option, e.g. --constraint=h100 or "
                          "--qos=long")
    name = arg.lstrip("-").split("=")[0].split()[0] if arg.lstrip("-") else ""
    if not arg.startswith("--"):
        name = _SHORT.get(name[:1], name)
    if name in _MANAGED:
        instead = _MANAGED[name]
        raise ConfigError(f"--sbatch-arg {arg!r}: matcher writes #SBATCH --{name} itself"
                          + (f"; use `matcher run {instead}`" if instead else ""))


def _directives(sweep_name: str, sweep_dir: Path, n_runs: int, options: SlurmOptions) -> list[str]:
    throttle = f"%{options.max_parallel}" if options.max_parallel else ""
    return [
        f"--job-name=matcher-{sweep_name}",
        f"--array=0-{n_runs - 1}{throttle}",
        *([f"--partition={options.partition}"] if options.partition else []),
        *([f"--account={options.account}"] if options.account else []),
        f"--nodes={options.nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={options.gpus_per_node}",
        f"--cpus-per-task={options.cpus_per_gpu * options.gpus_per_node}",
        *([f"--mem={options.mem}"] if options.mem else []),
        f"--time={options.time}",
        f"--signal=B:TERM@{SIGNAL_LEAD_S}",
        "--requeue",
        f"--output={(sweep_dir / 'slurm' / '%x-%A_%a.out').as_posix()}",
        "--open-mode=append",
        *options.sbatch_args,
    ]


def torchrun_command(*, python: str, nnodes: str, nproc_per_node: int, endpoint: str, rdzv_id: str,
                     run_dir: str, fsdp: bool) -> list[str]:
    """What srun starts on every node: one torchrun agent whose workers train `run_dir`. The arguments
    are shell words (the script passes "$SLURM_NNODES" and the like for the shell to expand)."""
    return [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}",
            "-m", "matcher.run.trainer", run_dir, *(["--fsdp"] if fsdp else [])]


def job_script(*, sweep_name: str, sweep_dir: Path, run_names: list[str], options: SlurmOptions,
               fsdp: bool) -> str:
    """The sbatch script text (deterministic: tests compare it with golden files)."""
    if not run_names:
        raise RunError("no runs to submit")
    python = shlex.quote(options.python)
    runner = [python, "-m", "matcher.run.runner", '"$RUN_DIR"']
    if options.nodes == 1:
        launch = [*runner, "--nproc", str(options.gpus_per_node), *(["--fsdp"] if fsdp else [])]
        rendezvous = []
    else:
        # srun no longer inherits the job's --cpus-per-task (Slurm 22.05+): without it each agent gets one core
        launch = [*runner, "--", "srun", '--nodes="$SLURM_NNODES"', "--ntasks-per-node=1",
                  '--cpus-per-task="$SLURM_CPUS_PER_TASK"',
                  *torchrun_command(python=python, nnodes='"$SLURM_NNODES"', nproc_per_node=options.gpus_per_node,
                                    endpoint='"$HEAD_NODE:$PORT"', rdzv_id='"$SLURM_JOB_ID"',
                                    run_dir='"$RUN_DIR"', fsdp=fsdp)]
        rendezvous = [
            'NODES=$(scontrol show hostnames "$SLURM_JOB_NODELIST")',
            "HEAD_NODE=${NODES%%$'\\n'*}  # the first line (not `| head -n1`: under pipefail its SIGPIPE "
            "would end the script)",
            f"PORT=$(({PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN}))  # from the job id: jobs on one head node "
            "do not clash",
            f"export TORCH_ELASTIC_SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT_S}  # torchrun's wait for the "
            "trainers to checkpoint after SIGTERM",
            "# the runner holds the run's lock on this node; srun starts one torchrun agent on every node",
        ]
    shape = f"{options.nodes} node{'s' if options.nodes > 1 else ''} x {options.gpus_per_node} GPU"
    script = (sweep_dir / "slurm" / f"{sweep_name}.sbatch").as_posix()
    lines = [
        "#!/bin/bash",
        f"# matcher sweep {sweep_name}: one array task per run ({shape}), requeued until the run is finished.",
        f"# Submit from the directory that holds {sweep_dir.as_posix()}:  sbatch {script}",
        *(f"#SBATCH {directive}" for directive in _directives(sweep_name, sweep_dir, len(run_names), options)),
        *(["set -eo pipefail", *options.setup,
           "set -u  # after the setup lines: environment scripts often read unset variables"]
          if options.setup else ["set -euo pipefail"]),
        f"RUNS=({' '.join(shlex.quote(name) for name in run_names)})",
        f'RUN_DIR={shlex.quote(sweep_dir.as_posix())}/"${{RUNS[$SLURM_ARRAY_TASK_ID]}}"',
        'TASK="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        *rendezvous,
        " ".join(launch) + " &",
        "RUNNER=$!",
        "# Slurm's SIGTERM before the time limit reaches this shell only: pass it to the run, which checkpoints",
        "trap 'kill -TERM \"$RUNNER\" 2>/dev/null || true' TERM",
        "CODE=0",
        'wait "$RUNNER" || CODE=$?',
        'while kill -0 "$RUNNER" 2>/dev/null; do  # the trap ended `wait` early: wait for the checkpoint',
        "  CODE=0",
        '  wait "$RUNNER" || CODE=$?',
        "done",
        f'if [ "$CODE" -eq {ExitCode.INTERRUPTED:d} ]; then  # interrupted and checkpointed: run again later',
        '  echo "matcher: $RUN_DIR interrupted; requeueing $TASK"',
        '  scontrol requeue "$TASK"',
        "  exit 0",
        "fi",
        'exit "$CODE"',
        "",
    ]
    return "\n".join(lines)


def write_job_script(text: str, sweep_dir: Path, sweep_name: str) -> Path:
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
