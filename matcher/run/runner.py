"""`matcher run`: train every run of a sweep into `results/<sweep>/<run>/`.

A finished run is skipped, a partial one resumes from its last checkpoint, a failed one is left alone
unless `retry_failed` (it resumes from its last good checkpoint), and a run another process is
training (its lock is held) is skipped with a note. Launchers:

- local, no GPU: runs one after another in this process (`nproc` > 1: each under torchrun, gloo);
- local, GPUs: a queue over the visible GPUs, `nproc` GPUs per run, each run a subprocess with its
  own CUDA_VISIBLE_DEVICES (under torchrun when `nproc` > 1: DDP, or FSDP2 with `fsdp`);
- slurm: one sbatch job array over the runs (matcher.run.slurm), submitted unless `dry_run`.

`python -m matcher.run.runner RUN_DIR [--nproc N] [--fsdp] [-- COMMAND...]` trains one prepared run
folder (or, with a COMMAND, runs that under the run's lock: the multi-node Slurm task's srun + torchrun);
the GPU queue and the Slurm tasks call it. Its exit code is the run's state (see main).
"""

# Function-local imports: the trainer (torch), in the process that trains, so `matcher status` and the Slurm parent
# stay light.

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.config import largest_divisors
from matcher.console import out
from matcher.errors import ConfigError, MatcherError, RunError
from matcher.names import resolve
from matcher.plan.sweep import Run, load_sweep
from matcher.run import parent
from matcher.run.contract import ExitCode, Outcome, RunInfo, RunState, stale_runs
from matcher.run.lock import RunLock, live_holder
from matcher.run.progress import MetricsTail, RunSummary, SweepProgress, summary_table
from matcher.run.rundir import RunDir, different_config
from matcher.run.slurm import SlurmOptions, job_script, submit, write_job_script

LAUNCHERS = ("local", "slurm")
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # no run can write here: stop the sweep
POLL_S = 1.0  # how often subprocess runs' metrics files are read for the progress bars


def check_not_stale(sweep_dir: Path, runs: list[Run], sweep_name: str, sweep_file: str) -> None:
    """Refuse to train into, or report as done, a results folder that belongs to something else: runs
    of another sweep file of the same name (while that file exists), or a run whose sweep entry was
    edited after it trained (bar the settings of how it executes: micro_batch_size, recompute, ...)."""
    if not sweep_dir.is_dir():
        return
    recorded = {}
    for folder in sorted(d for d in sweep_dir.iterdir() if (d / "run.yaml").is_file()):
        try:
            recorded[folder.name] = RunDir(folder).recorded()
        except MatcherError:
            recorded[folder.name] = {}  # an unreadable run.yaml: no config to train on
    stale = stale_runs(recorded, against=(sweep_file, runs))
    if stale.foreign:
        folder, recorded_file = stale.foreign[0]
        raise RunError(f"{sweep_dir} holds runs of another sweep file named {sweep_name}: {recorded_file} "
                       f"({folder}); train {sweep_file} into another folder (--results DIR), or move "
                       f"{sweep_dir} away")
    if stale.edited:
        folder, recorded_file, changes = stale.edited[0]
        raise different_config(sweep_dir / folder, recorded_file, sweep_file, changes)


def summarize(run_dir: RunDir, state: Outcome | str | None = None, note: str | None = None) -> RunSummary:
    """A run's line in the sweep table, from its status and its last eval line."""
    run = run_dir.snapshot()
    last = run.last_eval or {}
    return RunSummary(run=run_dir.name, state=Outcome(state or run.status.state), tokens=run.status.tokens,
                      eval_accuracy=last.get("eval_accuracy"), tokens_per_s=last.get("tokens_per_s"),
                      note=note or run.status.reason)


# ------------------------------------------------------------------------------------- one run
class _Forwarder:
    """Passes SIGINT/SIGTERM/SIGHUP that reach this process on to a child in its own session, once per
    signal, so a terminal's Ctrl-C reaches the trainer exactly once (a second one aborts it), and a
    closed terminal (SIGHUP) stops it the graceful way (SIGTERM: it checkpoints)."""

    def __init__(self):
        self.children: list[subprocess.Popen] = []
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[signum] = signal.signal(signum, self._forward)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)


def _worker_command(run_dir: Path, nproc: int, fsdp: bool, log_every_steps: int) -> list[str]:
    """The trainer's command: through matcher.run.parent, so torchrun and each of its workers end with
    the process that started them (a launcher killed with kill -9 leaves no trainer behind)."""
    train = ["matcher.run.trainer", str(run_dir), "--log-every-steps", str(log_every_steps),
             *(["--fsdp"] if fsdp else [])]
    if nproc == 1:
        return parent.command(*train)
    # --standalone: a private rendezvous on a free local port, so concurrent runs do not collide.
    return parent.command("torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                          "-m", "matcher.run.parent", *train)


def _start(command: list[str], lock: Path | None, log, *, own_command: bool, env: dict[str, str] | None = None):
    """Start a training subprocess in its own session (its process group: `_stop` ends it as one).
    Our own commands end with this process, and join `lock` (one this process holds); a given command
    (srun + torchrun) runs on other nodes too, so it is told neither."""
    if own_command:
        env = parent.child_env(lock, env)
    else:
        env = {k: v for k, v in (env or os.environ).items() if k not in (parent.PARENT_ENV, parent.LOCK_ENV)}
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(child: subprocess.Popen, grace_s: float = 60.0) -> None:
    """End a training subprocess this process leaves (an error in the launcher): SIGTERM to its process
    group (a checkpoint), SIGKILL after `grace_s`; its workers end with it (matcher.run.parent)."""
    if child.poll() is not None:
        return
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            return
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _watch(process: subprocess.Popen, tail: MetricsTail, on_record: Callable | None) -> int:
    """Wait for `process`, passing its new metrics lines on; returns its exit code."""
    while True:
        code = process.poll()
        for line in tail.new_records():
            if on_record is not None:
                on_record(line)
        if code is not None:
            return code
        time.sleep(POLL_S)


def launch_run(run_dir: str | Path, *, nproc: int = 1, fsdp: bool = False,
               on_record: Callable[[dict[str, Any]], None] | None = None, log_every_steps: int = 10,
               command: list[str] | None = None) -> RunSummary:
    """Train one prepared run folder under its lock: in this process when `nproc` is 1, else under
    torchrun; with `command`, that command trains it (srun + torchrun over several nodes). Returns its
    summary; never raises for a run's own failure (it is in the summary)."""
    run = RunDir(run_dir)
    if run.status().state == RunState.FINISHED:
        return summarize(run, Outcome.SKIPPED, "already finished")
    lock = RunLock(run.lock)
    holder = lock.acquire()
    if holder is not None:
        return summarize(run, Outcome.LOCKED, f"{holder.describe()}; skipped")
    child = None
    try:
        if nproc == 1 and command is None:
            return _train_here(run, on_record, log_every_steps)
        with _Forwarder() as forwarder, run.log.open("ab") as log:
            child = _start(command or _worker_command(run.path, nproc, fsdp, log_every_steps), run.lock, log,
                           own_command=command is None)
            forwarder.children.append(child)
            tail = MetricsTail(run.metrics)
            tail.new_records()  # skip what earlier attempts wrote
            code = _watch(child, tail, on_record)
        return _after_subprocess(run, code)
    finally:
        if child is not None:
            _stop(child)
        lock.release()


def _train_here(run: RunDir, on_record, log_every_steps: int) -> RunSummary:
    from matcher.run.trainer import train_run

    try:
        result = train_run(run.path, on_record=on_record, log_every_steps=log_every_steps)
    except KeyboardInterrupt:  # a second Ctrl-C; train_run has marked the run interrupted
        return summarize(run)
    except MatcherError as error:
        return summarize(run, Outcome.FAILED, str(error))
    except OSError as error:
        if error.errno in DISK_ERRNOS:  # every later run would fail the same way: the sweep stops, one message
            raise
        return _failed_with_traceback(run, error)
    except Exception as error:
        return _failed_with_traceback(run, error)
    return summarize(run, result.state, result.reason)


def _failed_with_traceback(run: RunDir, error: Exception) -> RunSummary:
    from matcher.run.trainer import describe_error

    with contextlib.suppress(OSError), run.log.open("a", encoding="utf-8") as log:
        traceback.print_exc(file=log)
    return summarize(run, Outcome.FAILED, f"{describe_error(error)} (traceback in {run.log})")


def _after_subprocess(run: RunDir, code: int) -> RunSummary:
    status = run.status()
    if status.state == RunState.FAILED and status.os_error is not None and status.os_error[0] in DISK_ERRNOS:
        raise OSError(*status.os_error)  # a full disk in the trainer: the sweep stops, one message
    if code == ExitCode.LOCKED:
        return summarize(run, Outcome.LOCKED, "another process holds its lock; skipped")
    if code != ExitCode.OK and status.state in (RunState.RUNNING, RunState.NEW):
        # Killed before it could say why (out of host memory, SIGKILL, a crash in native code).
        run.write_status(RunState.FAILED, step=status.step, tokens=status.tokens,
                         reason=f"the training process exited with code {code}; see {run.log}")
    return summarize(run)


# ----------------------------------------------------------------------------------- the sweep
@dataclass
class _Planned:
    run: Run
    dir: RunDir
    action: str  # train | resume


def _select(runs: list[Run], only: str | list[str] | None) -> list[Run]:
    """The runs named in `only` (a list, or one comma-separated string), in sweep order."""
    if not only:
        return runs
    wanted = only.split(",") if isinstance(only, str) else list(only)
    wanted = [name.strip() for name in wanted if name.strip()]
    names = {resolve(name, [run.name for run in runs], "run").name for name in wanted}
    return [run for run in runs if run.name in names]


def _plan(runs: list[Run], sweep_dir: Path, retry_failed: bool) -> tuple[list[_Planned], list[RunSummary]]:
    planned, skipped = [], []
    for run in runs:
        run_dir = RunDir(sweep_dir / run.name)
        status = run_dir.status()
        holder = live_holder(run_dir.lock)
        if status.state == RunState.FINISHED:
            skipped.append(summarize(run_dir, Outcome.SKIPPED, "already finished"))
        elif status.state == RunState.FAILED and not retry_failed:
            skipped.append(summarize(run_dir, Outcome.FAILED, f"failed earlier ({status.reason}); "
                                                                "pass --retry-failed to resume it"))
        elif holder is not None:
            skipped.append(summarize(run_dir, Outcome.LOCKED, f"{holder.describe()}; skipped"))
        else:
            planned.append(_Planned(run, run_dir, "resume" if run_dir.checkpoint.is_file() else "train"))
    return planned, skipped


def run_sweep(sweep_path: str | Path, results_root: str | Path = "results", *, launcher: str = "local",
              nproc: int = 1, only: str | list[str] | None = None, dry_run: bool = False, fsdp: bool = False,
              retry_failed: bool = False, slurm: SlurmOptions | None = None, gpus: list[str] | None = None,
              console=None, log_every_steps: int = 10) -> list[RunSummary]:
    """Train (or submit) the runs of a sweep file; returns one summary per selected run, in sweep
    order, after printing the progress and the summary table on `console` (default: stdout).
    `gpus`: the GPU ids the local queue hands out (default: the visible ones; none: CPU, in sequence)."""
    console = console or out()
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    sweep = load_sweep(sweep_path)
    sweep_dir = Path(results_root) / sweep.name
    runs = _select(sweep.runs, only)
    sweep_file = str(Path(sweep_path).resolve())
    check_not_stale(sweep_dir, runs, sweep.name, sweep_file)
    planned, skipped = _plan(runs, sweep_dir, retry_failed)
    if launcher == "slurm":  # every option checked before anything is written
        slurm = slurm or SlurmOptions()
        _check_world_size([item.run for item in planned], slurm.world_size)
        script_text = job_script(sweep_name=sweep.name, sweep_dir=sweep_dir, options=slurm, fsdp=fsdp,
                                 run_names=[item.run.name for item in planned]) if planned else None
    if not (dry_run and launcher == "local"):
        for item in planned:  # before any training: a config clash stops the sweep, not one run
            item.dir.path.mkdir(parents=True, exist_ok=True)
            item.dir.write_run_info(RunInfo.from_run(item.run, sweep.name, sweep_file))

    if launcher == "slurm":
        done = _submit_slurm(sweep.name, sweep_dir, planned, script_text, dry_run, console)
    elif dry_run:
        done = [RunSummary(run=item.run.name, state=Outcome.PLANNED, note=f"would {item.action}")
                for item in planned]
    else:
        done = _run_local(planned, nproc=nproc, fsdp=fsdp, gpus=_visible_gpus() if gpus is None else gpus,
                          console=console, log_every_steps=log_every_steps)
    by_name = {summary.run: summary for summary in done + skipped}
    summaries = [by_name[run.name] for run in runs if run.name in by_name]
    console.print(summary_table(sweep.name, summaries))
    return summaries


def _check_world_size(runs: list[Run], world_size: int) -> None:
    """Each run's batch must split over the job's processes: found at submission, not hours later."""
    for run in runs:
        if run.train.batch_size % world_size:
            raise ConfigError(f"{run.name}: batch_size {run.train.batch_size} does not split over "
                              f"{world_size} GPUs (--nodes x --gpus-per-node); use a total that divides it "
                              f"({largest_divisors(run.train.batch_size, 6)})")


def _submit_slurm(sweep_name: str, sweep_dir: Path, planned: list[_Planned], text: str | None, dry_run: bool,
                  console) -> list[RunSummary]:
    if not planned:
        return []
    script = write_job_script(text, sweep_dir, sweep_name)
    if dry_run:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {script} (dry run: not submitted; submit with `sbatch {script}`)", markup=False,
                      soft_wrap=True)
        return [RunSummary(run=p.run.name, state=Outcome.PLANNED, note=f"in {script}") for p in planned]
    job = submit(script)
    console.print(f"submitted job array {job} ({len(planned)} runs): {script}", markup=False, soft_wrap=True)
    for i, item in enumerate(planned):  # `matcher status` shows it until the task itself starts
        item.dir.write_slurm_job(f"{job}_{i}")
    return [RunSummary(run=p.run.name, state=Outcome.SUBMITTED, note=f"job {job}_{i}")
            for i, p in enumerate(planned)]


def _visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in listed.split(",") if d.strip()] if listed else []
    return ids[:torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def _run_local(planned: list[_Planned], *, nproc: int, fsdp: bool, gpus: list[str], console,
               log_every_steps: int) -> list[RunSummary]:
    if not planned:
        return []
    totals = {p.run.name: p.run.train.budget_tokens for p in planned}
    with SweepProgress(console, totals) as progress:
        if gpus:
            return _gpu_queue(planned, gpus, nproc=nproc, fsdp=fsdp, progress=progress,
                              log_every_steps=log_every_steps)
        summaries = []
        for item in planned:
            name = item.run.name
            progress.start(name)
            summary = launch_run(item.dir.path, nproc=nproc, fsdp=fsdp, log_every_steps=log_every_steps,
                                 on_record=lambda line, name=name: progress.record(name, line))
            progress.end(name, summary.state)
            summaries.append(summary)
            if summary.state == Outcome.INTERRUPTED:
                break  # the user stopped the sweep: leave the remaining runs for the next `matcher run`
        return summaries


def _gpu_queue(planned: list[_Planned], gpus: list[str], *, nproc: int, fsdp: bool, progress: SweepProgress,
               log_every_steps: int) -> list[RunSummary]:
    """Runs in subprocesses, `nproc` GPUs each, as many at once as the GPUs allow."""
    if nproc > len(gpus):
        raise RunError(f"--nproc {nproc} needs {nproc} GPUs per run, but {len(gpus)} are visible")
    free = [gpus[i:i + nproc] for i in range(0, len(gpus) - nproc + 1, nproc)]
    waiting = list(planned)
    active: dict[str, tuple[subprocess.Popen, list[str], RunDir, MetricsTail, Any]] = {}
    summaries = []
    with _Forwarder() as forwarder:
        while waiting or active:
            while waiting and free and not forwarder.stopping:
                item, devices = waiting.pop(0), free.pop(0)
                env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices)}
                command = parent.command("matcher.run.runner", str(item.dir.path), "--nproc", str(nproc),
                                         "--log-every-steps", str(log_every_steps), *(["--fsdp"] if fsdp else []))
                log = item.dir.log.open("ab")
                child = _start(command, None, log, own_command=True, env=env)  # it takes the lock
                forwarder.children.append(child)
                tail = MetricsTail(item.dir.metrics)
                tail.new_records()
                progress.start(item.run.name)
                active[item.run.name] = (child, devices, item.dir, tail, log)
            for name, (child, devices, run_dir, tail, log) in list(active.items()):
                for line in tail.new_records():
                    progress.record(name, line)
                code = child.poll()
                if code is None:
                    continue
                log.close()
                summary = _after_subprocess(run_dir, code)
                progress.end(name, summary.state)
                summaries.append(summary)
                free.append(devices)
                del active[name]
            if forwarder.stopping:
                waiting.clear()
            time.sleep(POLL_S if active else 0)
    return summaries


def main(argv: list[str] | None = None) -> int:
    """`python -m matcher.run.runner RUN_DIR [--nproc N] [--fsdp] [-- COMMAND...]`: train one prepared run
    folder under its lock (with a COMMAND: run it under the lock; it trains the run). Its exit code is the
    run's outcome (matcher.run.contract.ExitCode): 0 finished or already finished; 1 failed; 2 a user error
    or a full or read-only disk; 3 interrupted (checkpointed; resumes when started again); 75 another
    process holds the lock."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else None
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m matcher.run.runner", description=main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) for this run")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP when nproc > 1")
    parser.add_argument("--log-every-steps", type=int, default=10, help="steps between train metric lines")
    args = parser.parse_args(own)
    try:
        if not RunDir(args.run_dir).run_yaml.is_file():
            raise RunError(f"{args.run_dir}: no run.yaml; prepare the run with `matcher run SWEEP`")
        if command == []:
            raise RunError("nothing after `--`: give the command that trains the run")
        summary = launch_run(args.run_dir, nproc=args.nproc, fsdp=args.fsdp,
                             log_every_steps=args.log_every_steps, command=command)
    except MatcherError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except OSError as error:  # a full or read-only disk (the trainer's, or this process's own writes)
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}; check that the disk has space and is writable, then "
              "start the run again", file=sys.stderr)
        return ExitCode.USER_ERROR
    print(f"{summary.run}: {summary.state}" + (f" ({summary.note})" if summary.note else ""), file=sys.stderr)
    return ExitCode.of(summary.state)


if __name__ == "__main__":
    sys.exit(main())
