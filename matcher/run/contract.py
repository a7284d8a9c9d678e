"""The run folder `results/<sweep>/<run>/` as types: the contract between the planner (which names the
runs in a sweep file), the runner and trainer (which write the folder), and `matcher status`, `eval` and
`compare` (which read it). File by file:

- run.yaml (`RunInfo`): what the run is: run, group, seed, role (target | variant), variant, sweep,
  sweep_file (the resolved sweep file it was trained from), model (a ModelConfig), train (a
  TrainConfig), predicted (the matched costs, matcher.plan.sweep.PREDICTED_KEYS). Written by the runner
  from the sweep entry (`RunInfo.from_run`) before training; a folder whose recorded config differs from
  its entry is stale (`stale_runs`) and is refused rather than resumed or compared.
- status.json (`Status`): {"state", "reason", "step", "tokens", "updated", "os_error"?}, replaced
  atomically by the trainer; `state` is a `RunState` (running | finished | failed | interrupted as
  written; a reader sees "new" when there is no file yet and "unknown" when it cannot be read). os_error:
  [errno, strerror, filename] of the OSError a failed run stopped on (a full disk stops the whole sweep).
- metrics.jsonl: one JSON object per line ("event": train | eval | ...), each flushed and fsynced; a cut
  last line (a kill while writing) is not read. The last "eval" line is the run's latest accuracy.
- env.json: where it ran (torch version, device name, dtype, world size, Slurm job; no host names or paths).
- slurm.json: {"job", "submitted"}: the Slurm array task it was last submitted as.
- checkpoints/last.pt: the latest checkpoint, replaced atomically (a resume starts from it).
- checkpoints/step-<step>.safetensors: the model at each eval point (matcher.run.snapshots).
- evals.jsonl: benchmark scores `matcher eval` (and `matcher lm-eval`, as lm-eval-<task>) computed on
  those, one line per (task, step, depth).
- evals/<step>/<task>[-depth<D>].samples.jsonl[.gz]: one line per item of every eval, in training and by
  `matcher eval` (matcher.run.evaluate.write_samples; gzip-compressed when large).
- lm-eval/step-<step>[-depth<D>]/: lm-evaluation-harness's own results files (`matcher lm-eval`).
- tensorboard/, wandb_id, wandb/: the dashboards' copies of the metric lines (matcher.run.dashboards).
- lock: held by the process that trains the run and the processes it started (matcher.run.lock).
- train.log: output of a training subprocess (GPU queue, torchrun, Slurm).

Readers take a folder whole with `RunDir.snapshot()`: one `RunSnapshot` (info, status, last eval,
budget). `matcher run` reports each run as an `Outcome`, and its per-run entry
(`python -m matcher.run.runner`) exits with the `ExitCode` of that outcome (`ExitCode.of`), which the
Slurm task reads to requeue an interrupted run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.config import VARIANTS, ModelConfig, TrainConfig, field_problems
from matcher.errors import ConfigError, MatcherError
from matcher.plan.sweep import ROLES, load_sweep

if TYPE_CHECKING:
    from matcher.plan.sweep import Run

# TrainConfig fields that change how a run executes or is watched, not what it computes
EXECUTION_FIELDS = ("micro_batch_size", "compile", "recompute", "dashboards", "keep_checkpoints")


class _Name(str, Enum):
    """A str Enum that prints as its value (enum.StrEnum is Python 3.11+; matcher supports 3.10)."""

    def __str__(self) -> str:
        return self.value


class RunState(_Name):
    """A run's state in status.json."""

    NEW = "new"  # no status.json yet: never started (read only)
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # checkpointed and stopped before the end; resumes when started again
    UNKNOWN = "unknown"  # status.json cannot be read (read only)


WRITTEN_STATES = (RunState.RUNNING, RunState.FINISHED, RunState.FAILED, RunState.INTERRUPTED)
DONE_STATES = (RunState.FINISHED, RunState.FAILED)  # nothing more happens to the run by itself


class Outcome(_Name):
    """What `matcher run` did with a run: the state it left it in, or why it did not train it."""

    NEW = "new"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"  # already finished
    LOCKED = "locked"  # another process holds its lock
    PLANNED = "planned"  # a dry run
    SUBMITTED = "submitted"  # to Slurm


class ExitCode(IntEnum):
    """Exit codes of matcher's processes. The per-run entry (`python -m matcher.run.runner`) exits with
    `ExitCode.of(outcome)`; the Slurm task requeues on INTERRUPTED and ends with any other code."""

    OK = 0  # finished, or nothing left to do
    FAILED = 1  # the run failed for a reason of its own (a NaN loss, bad data, a code error)
    USER_ERROR = 2  # a user error, or a full or read-only disk
    INTERRUPTED = 3  # checkpointed and stopped before the end: the Slurm task requeues itself on it
    LOCKED = 75  # EX_TEMPFAIL: another process holds the run's lock
    STOPPED_BY_SIGNAL = 130  # as a shell reports SIGINT: `matcher run` stopped, or a trainer aborted

    @classmethod
    def of(cls, outcome: Outcome | str) -> ExitCode:
        """The per-run entry's exit code for a run's outcome; outcomes not in the table exit OK."""
        return _EXIT_BY_OUTCOME.get(Outcome(outcome), cls.OK)


_EXIT_BY_OUTCOME = {Outcome.FAILED: ExitCode.FAILED, Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
                    Outcome.LOCKED: ExitCode.LOCKED}


# ------------------------------------------------------------------------------------- run.yaml
@dataclass(kw_only=True)
class _RunYaml:
    """run.yaml's fields as YAML holds them, for field_problems."""

    run: str
    group: str
    seed: int
    role: str
    variant: str
    sweep: str | None = None
    sweep_file: str | None = None
    model: dict
    train: dict
    predicted: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class RunInfo:
    """run.yaml: what `matcher compare` needs to place the run, and everything training needs."""

    run: str  # the run's name: its folder
    group: str  # runs of one group differ only in seed
    seed: int
    role: str  # target | variant
    variant: str  # la | dr | dr_da (the model's)
    sweep: str | None = None  # the sweep file's stem
    sweep_file: str | None = None  # the sweep file it was trained from (resolved): stale results are refused
    model: ModelConfig
    train: TrainConfig
    predicted: dict = field(default_factory=dict)  # the matched costs (matcher.plan.sweep.PREDICTED_KEYS)

    def __post_init__(self) -> None:
        for key in ("run", "group"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must be a name, got {getattr(self, key)!r}")
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")

    @classmethod
    def from_run(cls, run: Run, sweep_name: str, sweep_file: str | None = None) -> RunInfo:
        """The run.yaml of a sweep file's run."""
        return cls(run=run.name, group=run.group, seed=run.train.seed, role=run.role, variant=run.model.variant,
                   sweep=sweep_name, sweep_file=sweep_file, model=run.model, train=run.train,
                   predicted=dict(run.predicted))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> tuple[list[str], RunInfo | None]:
        """run.yaml's mapping checked field by field (matcher.config.field_problems): its problems, or the
        RunInfo."""
        problems, raw = field_problems(_RunYaml, data, where)
        if raw is None:
            return problems, None
        try:
            return [], cls(**{**dataclasses.asdict(raw), "model": ModelConfig.from_dict(raw.model, f"{where} model"),
                              "train": TrainConfig.from_dict(raw.train, f"{where} train")})
        except MatcherError as error:
            return [str(error)], None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _as_dicts(cls: type, old: Any, new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Both as config dicts, so fields added since the old run.yaml was written count at their defaults;
    None when the old one is no config."""
    try:
        return cls.from_dict(old).to_dict(), cls.from_dict(new).to_dict()
    except (MatcherError, TypeError, AttributeError):
        return None


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two run.yaml configs ("train.lr: 0.001 -> 0.002"), bar EXECUTION_FIELDS:
    a non-empty list means one curve would mix two experiments."""
    changes = []
    for key, cls in (("model", ModelConfig), ("train", TrainConfig)):
        pair = _as_dicts(cls, old.get(key), new[key])
        if pair is None:
            changes.append(f"{key}: not a {key} config")
            continue
        before, after = pair
        changes += [f"{key}.{name}: {before.get(name)!r} -> {after.get(name)!r}" for name in after
                    if before.get(name) != after.get(name) and not (key == "train" and name in EXECUTION_FIELDS)]
    return changes


# ---------------------------------------------------------------------------------- status.json
@dataclass(kw_only=True)
class Status:
    """status.json."""

    state: RunState
    reason: str | None = None  # why it failed or stopped
    step: int = 0
    tokens: int = 0
    updated: str | None = None  # when it was written (local time, ISO 8601)
    os_error: tuple[int, str, str | None] | None = None  # (errno, strerror, filename) a failed run stopped on

    def to_json(self) -> str:
        data = {"state": self.state.value, "reason": self.reason, "step": self.step, "tokens": self.tokens,
                "updated": self.updated}
        if self.os_error is not None:
            data["os_error"] = list(self.os_error)
        return json.dumps(data) + "\n"

    @classmethod
    def read(cls, path: Path) -> tuple[Status, str | None]:
        """status.json and what is wrong with the file, if anything. No file: state NEW (never started).
        A file that is not a status (cut, edited, not JSON): state UNKNOWN, with the problem; the run's
        checkpoint, not this view, decides a resume."""
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(state=RunState.NEW), None
        except (ValueError, UnicodeDecodeError) as err:
            problem = f"{path}: not valid JSON ({err})"
            return cls(state=RunState.UNKNOWN, reason=problem), problem
        if not isinstance(data, dict) or data.get("state") not in WRITTEN_STATES:
            got = data.get("state") if isinstance(data, dict) else data
            problem = f"{path}: state must be one of {', '.join(WRITTEN_STATES)}, got {got!r}"
            return cls(state=RunState.UNKNOWN, reason=problem), problem
        counts = {key: data[key] if _is_count(data.get(key)) else 0 for key in ("step", "tokens")}
        reason = data.get("reason") if isinstance(data.get("reason"), str) and data["reason"] else None
        os_error = data.get("os_error")
        os_error = tuple(os_error) if isinstance(os_error, list) and len(os_error) == 3 else None
        updated = data.get("updated") if isinstance(data.get("updated"), str) else None
        return cls(state=RunState(data["state"]), reason=reason, updated=updated, os_error=os_error, **counts), None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# ------------------------------------------------------------------------------------- snapshot
@dataclass(kw_only=True)
class RunSnapshot:
    """One run folder as its readers see it (`RunDir.snapshot()`): the runner's summary line, `matcher
    status`, `eval` and `compare` all start from it."""

    name: str  # the folder's name
    info: RunInfo | None  # None: run.yaml is missing or cannot be read (see problems)
    problems: list[str]  # what is wrong with run.yaml
    metrics_problem: str | None  # what is wrong with metrics.jsonl (its lines are then not read)
    status: Status
    status_problem: str | None  # what is wrong with status.json, if anything
    last_eval: dict[str, Any] | None  # the last "eval" metrics line
    tokens_per_s: float | None  # of the last metrics line that measured it
    step: int  # the furthest of status.json and the metrics lines
    tokens: int

    @property
    def budget_tokens(self) -> int | None:
        """The tokens the run trains on in all (None: its run.yaml cannot be read)."""
        return None if self.info is None else self.info.train.budget_tokens


def snapshot_of(name: str, info: tuple[list[str], RunInfo | None], status: tuple[Status, str | None],
                records: list[dict[str, Any]], metrics_problem: str | None = None) -> RunSnapshot:
    """A RunSnapshot from what was read of the folder: (run.yaml's problems, its RunInfo), (Status, its
    problem), and the complete metrics lines (or what kept them from being read)."""
    problems, run_info = info
    evals = [line for line in records if line.get("event") == "eval"]
    speeds = [line["tokens_per_s"] for line in records if isinstance(line.get("tokens_per_s"), (int, float))]
    return RunSnapshot(
        name=name, info=run_info, problems=problems, metrics_problem=metrics_problem, status=status[0],
        status_problem=status[1], last_eval=evals[-1] if evals else None,
        tokens_per_s=speeds[-1] if speeds else None, step=furthest("step", status[0], records),
        tokens=furthest("tokens", status[0], records))


def furthest(key: str, status: Status, records: list[dict[str, Any]]) -> int:
    """How far the run got ("step" or "tokens"): the furthest of status.json and the metrics lines (a run
    killed before its status was written has logged further)."""
    return max([getattr(status, key), *(line[key] for line in records if isinstance(line.get(key), int))])


# ------------------------------------------------------------------------------------ staleness
@dataclass
class Staleness:
    """How run folders stand against their sweep file (`stale_runs`)."""

    edited: list[tuple[str, str | None, list[str]]]  # (folder, recorded sweep file, config changes)
    foreign: list[tuple[str, str]]  # (folder, recorded sweep file): another sweep file's runs
    gone: list[tuple[str, str]]  # (folder, sweep file): no longer a run of its sweep file
    unreadable: list[tuple[str, str]]  # (sweep file, why): could not be read to check its runs
    sweep_files: dict[str, list[str]]  # recorded sweep file -> its run folders


def stale_runs(recorded: dict[str, dict[str, Any]], against: tuple[str, list[Run]] | None = None) -> Staleness:
    """The one check of "is this results folder stale against its sweep". `recorded`: folder -> its
    run.yaml as read (a mapping). With `against` (sweep file, runs), the folders are checked against that
    sweep file (`matcher run`): folders of another sweep file that still exists are foreign, and the named
    runs' folders whose model or train config differs from their entry (bar how they execute:
    EXECUTION_FIELDS) are edited. Without it, each folder is checked against the sweep file it recorded
    (`matcher compare`), where that file exists here (results copied to another machine are not checked).
    Callers decide: the runner refuses foreign and edited folders, compare refuses edited ones and warns
    about the rest."""
    stale = Staleness([], [], [], [], {})
    for folder, info in recorded.items():
        if isinstance(info.get("sweep_file"), str):
            stale.sweep_files.setdefault(info["sweep_file"], []).append(folder)
    if against is not None:
        sweep_file, runs = against
        stale.foreign = [(folder, file) for file, folders in stale.sweep_files.items()
                         if file != sweep_file and Path(file).is_file() for folder in folders]
        entries = {sweep_file: {run.name: run for run in runs}}
        checked = {run.name: sweep_file for run in runs if run.name in recorded}
    else:
        entries = {}
        for file in stale.sweep_files:
            if not Path(file).is_file():
                continue
            try:
                entries[file] = {run.name: run for run in load_sweep(file).runs}
            except MatcherError as err:
                stale.unreadable.append((file, str(err).splitlines()[0]))
        checked = {folder: file for file, folders in stale.sweep_files.items() if file in entries
                   for folder in folders}
    for folder, file in checked.items():
        info = recorded[folder]
        entry = entries[file].get(info.get("run") if against is None else folder)
        if entry is None:
            stale.gone.append((folder, file))
            continue
        changes = config_changes(info, {"model": entry.model.to_dict(), "train": entry.train.to_dict()})
        if changes:
            recorded_file = info.get("sweep_file")
            stale.edited.append((folder, recorded_file if isinstance(recorded_file, str) else None, changes))
    return stale
