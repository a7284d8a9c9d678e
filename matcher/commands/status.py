"""`matcher status results/SWEEP [--watch] [--json]`: where every run of a sweep stands, wherever it
trains (this machine, another one, a Slurm cluster): state, step, tokens, last eval accuracy, tokens/s,
the time left at that speed, the Slurm job, and why a run failed or stopped.

Read from the run folders alone (status.json, run.yaml, metrics.jsonl, env.json / slurm.json), with the
readers of matcher.run.rundir; nothing is written, so it is safe beside a running sweep.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.live import Live
from rich.table import Table
from rich.text import Text

from matcher import console as consoles
from matcher import fmt
from matcher.config import VARIANTS, read_yaml
from matcher.console import escape, notice
from matcher.errors import ConfigError, MatcherError
from matcher.fmt import duration
from matcher.report.results import find_run_dirs
from matcher.run.contract import DONE_STATES, RunState
from matcher.run.lock import live_holder
from matcher.run.rundir import RunDir

WATCH_INTERVAL_S = 5.0
# --watch also stops when no run is trained or waits for Slurm on this many reads in a row: two, so the
# instant between one run's end and the next run's start under a sequential `matcher run` is not an end.
WATCH_IDLE_READS = 2


KILLED = "no process holds its lock: its trainer was killed; `matcher run` resumes it"
SUBMITTED = "submitted; waiting for Slurm to start it"


@dataclass
class RunStatus:
    run: str
    state: RunState
    step: int
    tokens: int
    total_tokens: int | None  # the run's budget (None: its run.yaml cannot be read)
    eval_accuracy: float | None  # of the last eval line
    eval_tokens: int | None  # where that eval was taken
    tokens_per_s: float | None  # of the last line that measured it
    eta_s: float | None  # the remaining tokens at that speed (runs not finished or failed)
    slurm_job: str | None  # the array task of its latest Slurm attempt
    reason: str | None  # why it failed, stopped, or cannot be read
    updated: str | None  # when status.json was last written
    role: str | None  # target | variant (None: its run.yaml cannot be read)
    variant: str | None
    mfu: float | None = None  # of the last eval line: model FLOP/s over its device's peak (CUDA, bf16 only)
    device: str | None = None  # where it trains (env.json)


@dataclass
class MfuAgainstPlan:
    """The MFU the runs measure against the one `matcher plan --gpu --mfu` assumed for its GPU-hours."""

    gpu: str  # the plan's --gpu
    assumed_mfu: float  # the plan's --mfu
    measured_mfu: float | None  # mean over the runs that report one (None: none yet)
    runs: int  # runs that report one
    devices: list[str]  # the devices those runs train on

    def __str__(self) -> str:
        plan = f"the plan assumed MFU {self.assumed_mfu:g} on {self.gpu} (--mfu, --gpu)"
        if self.measured_mfu is None:
            return f"MFU: no run reports one yet (measured on CUDA in bf16); {plan}"
        where = f" on {', '.join(self.devices)}" if self.devices else ""
        scale = self.assumed_mfu / self.measured_mfu
        verdict = (f"the plan's GPU-hours are {scale:.2f}x too few" if scale > 1.05
                   else f"the plan's GPU-hours are {1 / scale:.2f}x too many" if scale < 1 / 1.05
                   else "the plan's GPU-hours hold")
        return (f"MFU measured {self.measured_mfu:.3g} (mean of {self.runs} run(s)' last eval{where}) against "
                f"{plan}: {verdict}")


def mfu_against_plan(runs: list[RunStatus], sweep_meta: dict | None) -> MfuAgainstPlan | None:
    """None when the sweep records no assumption (written before it did, or its file cannot be read)."""
    if not sweep_meta or not sweep_meta.get("assumed_mfu") or not sweep_meta.get("gpu"):
        return None
    measured = [r for r in runs if isinstance(r.mfu, (int, float)) and r.mfu > 0]
    return MfuAgainstPlan(gpu=sweep_meta["gpu"], assumed_mfu=float(sweep_meta["assumed_mfu"]),
                          measured_mfu=sum(r.mfu for r in measured) / len(measured) if measured else None,
                          runs=len(measured), devices=sorted({r.device for r in measured if r.device}))


def sweep_meta(run_dirs: list[RunDir]) -> dict | None:
    """The meta of the sweep file the first readable run.yaml names (None where there is none)."""
    for run_dir in run_dirs:
        try:
            info = run_dir.read_run_info()
        except MatcherError:
            continue
        if not info.sweep_file:
            return None
        try:
            meta = read_yaml(Path(info.sweep_file)).get("meta")
        except (MatcherError, OSError, AttributeError):
            return None
        return meta if isinstance(meta, dict) else None
    return None


def run_status(run_dir: RunDir) -> RunStatus:
    run = run_dir.snapshot()
    state, reason, last_eval = run.status.state, run.status.reason, run.last_eval or {}
    eta = None
    if state not in DONE_STATES and run.tokens_per_s and run.budget_tokens is not None:
        eta = max(0, run.budget_tokens - run.tokens) / run.tokens_per_s
    problems = [*run.problems, *([run.metrics_problem] if run.metrics_problem else [])]
    if problems:
        reason = "; ".join(problems)
    elif state == RunState.RUNNING and live_holder(run_dir.lock) is None:
        reason = KILLED
    slurm_job = run_dir.slurm_job()
    if state == RunState.NEW and slurm_job and not reason:
        reason = SUBMITTED
    return RunStatus(run=run_dir.name, state=state, step=run.step, tokens=run.tokens, total_tokens=run.budget_tokens,
                     eval_accuracy=last_eval.get("eval_accuracy"), eval_tokens=last_eval.get("tokens"),
                     tokens_per_s=run.tokens_per_s, eta_s=eta, slurm_job=slurm_job, reason=reason,
                     updated=run.status.updated, role=run.info and run.info.role,
                     variant=run.info and run.info.variant, mfu=last_eval.get("mfu"),
                     device=run_dir.read_env().get("device"))


def sweep_status(results_dir: str | Path) -> tuple[Path, list[RunStatus]]:
    """The sweep folder and its runs: the target first, then by variant (la, dr, dr_da) and name."""
    sweep_dir, run_dirs = find_run_dirs(Path(results_dir))
    runs = [run_status(RunDir(path)) for path in run_dirs]
    order = {variant: i for i, variant in enumerate(VARIANTS)}
    runs.sort(key=lambda r: (r.role != "target", order.get(r.variant, len(order)), r.run))
    return sweep_dir, runs


def planned(sweep_dir: Path) -> dict | None:
    """The sweep meta of a results folder's runs (see sweep_meta)."""
    return sweep_meta([RunDir(path) for path in find_run_dirs(sweep_dir)[1]])


def in_progress(run: RunStatus) -> bool:
    """A process trains the run now, or Slurm will start it: something --watch can wait for."""
    return (run.state == "running" and run.reason != KILLED) or (run.state == "new" and run.reason == SUBMITTED)


def status_table(sweep_dir: Path, runs: list[RunStatus], meta: dict | None = None):
    """`meta`: the sweep's meta, whose assumed MFU is set against the measured one under the table; runs
    that report an MFU get a column."""
    mfu = mfu_against_plan(runs, meta)
    table = Table(title=f"{escape(sweep_dir.name)}: {sum(r.state == 'finished' for r in runs)}/{len(runs)} finished",
                  title_justify="left", caption=Text(str(mfu)) if mfu is not None else None, caption_justify="left")
    with_mfu = any(r.mfu is not None for r in runs)
    columns = ("run", "state", "step", "tokens", "accuracy", "tokens/s", *(("MFU",) if with_mfu else ()), "ETA",
               "job", "note")
    for column in columns:
        table.add_column(column, justify="right" if column in ("step", "tokens", "accuracy", "tokens/s", "MFU", "ETA")
                         else "left", overflow="fold")
    colours = {"finished": "green", "failed": "red", "interrupted": "yellow", "unknown": "red", "running": "cyan"}
    for r in runs:
        colour = colours.get(r.state)
        state = f"[{colour}]{r.state}[/]" if colour else r.state
        tokens = fmt.si(r.tokens) + (f"/{fmt.si(r.total_tokens)}" if r.total_tokens else "")
        accuracy = "-" if r.eval_accuracy is None else f"{r.eval_accuracy:.1%} @{fmt.si(r.eval_tokens)}"
        measured = (("-" if r.mfu is None else f"{r.mfu:.3f}",) if with_mfu else ())
        table.add_row(escape(r.run), state, str(r.step), tokens, accuracy, fmt.si(r.tokens_per_s), *measured,
                      duration(r.eta_s), escape(r.slurm_job or "-"), escape(r.reason or ""))
    return table


def status_command(results_dir: str | Path, *, watch: bool = False, as_json: bool = False,
                   interval_s: float = WATCH_INTERVAL_S, console=None) -> int:
    """Print the table (or JSON) once; with `watch`, redraw it every `interval_s` until every run is
    finished or failed, nothing trains any more (a killed trainer, an unreadable status.json), or Ctrl-C.
    Off a terminal, the table is printed again whenever it changes, so a log shows the progress. Returns
    the exit code: 1 when a watch ended with runs that did not finish, else 0."""
    if watch and as_json:
        raise ConfigError("--watch redraws a table; --json prints the status once (call it again to poll)")
    if interval_s <= 0:
        raise ConfigError(f"--interval must be positive, got {interval_s}")
    console = console or consoles.out()
    sweep_dir, runs = sweep_status(results_dir)
    meta = planned(sweep_dir)
    if as_json:
        mfu = mfu_against_plan(runs, meta)
        console.print_json(json.dumps({"sweep": sweep_dir.name, "path": str(sweep_dir),
                                       "runs": [dataclasses.asdict(r) for r in runs],
                                       "mfu": None if mfu is None else {**dataclasses.asdict(mfu), "text": str(mfu)}}))
        return 0
    if not watch:
        console.print(status_table(sweep_dir, runs, meta))
        return 0
    if console.is_terminal:
        with Live(status_table(sweep_dir, runs, meta), console=console, auto_refresh=False) as live:
            runs = _watch(sweep_dir, runs, interval_s, lambda runs: live.update(status_table(sweep_dir, runs, meta),
                                                                                refresh=True))
    else:
        console.print(status_table(sweep_dir, runs, meta))
        shown = [_content(runs)]

        def print_changed(runs: list[RunStatus]) -> None:
            if _content(runs) != shown[0]:
                console.print(status_table(sweep_dir, runs, meta))
                shown[0] = _content(runs)

        runs = _watch(sweep_dir, runs, interval_s, print_changed)
    if runs is None:  # Ctrl-C: the way to stop watching, not an error
        return 0
    unfinished = [r for r in runs if r.state != "finished"]
    if not unfinished:
        return 0

    notice("watch ended: no run is training or waiting for Slurm; not finished: " + "; ".join(
        f"{r.run} ({r.state}{': ' + r.reason if r.reason else ''})" for r in unfinished))
    return 1


def _content(runs: list[RunStatus]) -> list[RunStatus]:
    """What the table shows: the runs without the time status.json was written."""
    return [dataclasses.replace(r, updated=None) for r in runs]


def _watch(sweep_dir: Path, runs: list[RunStatus], interval_s: float, show) -> list[RunStatus] | None:
    """Read the sweep every `interval_s` and `show` it, until it is done or idle; the last read, or None
    after Ctrl-C."""
    idle_reads = 0
    try:
        while True:
            idle_reads = 0 if any(in_progress(r) for r in runs) else idle_reads + 1
            if all(r.state in DONE_STATES for r in runs) or idle_reads >= WATCH_IDLE_READS:
                return runs
            time.sleep(interval_s)
            sweep_dir, runs = sweep_status(sweep_dir)
            show(runs)
    except KeyboardInterrupt:
        return None
