"""`RunDir`: the paths of one run folder `results/<sweep>/<run>/`, and its readers and writers. What each
file holds, and the types that are their schema, is in matcher.run.contract."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from matcher.atomic import write_text_atomic
from matcher.config import dump_yaml, read_yaml
from matcher.errors import MatcherError, RunError
from matcher.run.contract import (
    WRITTEN_STATES,
    RunInfo,
    RunSnapshot,
    RunState,
    Status,
    config_changes,
    snapshot_of,
)


def read_run_yaml(path: Path) -> tuple[list[str], RunInfo | None]:
    """run.yaml checked field by field (matcher.config.field_problems): its problems, or the RunInfo."""
    return RunInfo.from_dict(read_yaml(path), str(path))


def different_config(path: Path, recorded_file: str | None, sweep_file: str | None, changes: list[str]) -> RunError:
    """The error for a run folder whose recorded model or train config differs from the one to train."""
    origin = f" (from {recorded_file})" if recorded_file and recorded_file != sweep_file else ""
    return RunError(f"{path} holds a run trained with a different config{origin}: "
                    f"{'; '.join(changes[:4])}{' ...' if len(changes) > 4 else ''}. To keep those results, "
                    "train this sweep into another folder (--results DIR); to retrain, move that folder away")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    run_yaml = property(lambda self: self.path / "run.yaml")
    env_json = property(lambda self: self.path / "env.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status_json = property(lambda self: self.path / "status.json")
    checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    evals = property(lambda self: self.path / "evals.jsonl")
    slurm_json = property(lambda self: self.path / "slurm.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    wandb_id = property(lambda self: self.path / "wandb_id")
    lock = property(lambda self: self.path / "lock")
    log = property(lambda self: self.path / "train.log")

    # --------------------------------------------------------------------------------- run.yaml
    def write_run_info(self, info: RunInfo) -> None:
        """Write run.yaml; a run folder that already holds a different model or train config is an
        error, because resuming it would mix two experiments in one curve. Settings of how a run executes
        (EXECUTION_FIELDS: micro-batching, compilation, recomputation) may change between attempts: the
        steps they compute are the same."""
        if self.run_yaml.is_file():
            self.check_same_config(info)
        write_text_atomic(self.run_yaml, dump_yaml(info.to_dict()))

    def recorded(self) -> dict[str, Any]:
        """run.yaml as a mapping, unchecked ({} when it is not one): what a staleness check compares."""
        data = read_yaml(self.run_yaml)
        return data if isinstance(data, dict) else {}

    def check_same_config(self, info: RunInfo) -> None:
        """Refuse `info` for this folder when its model or train config differs from the recorded one
        (a sweep entry edited after the run trained, or another sweep file of the same name)."""
        old = self.recorded()
        changes = config_changes(old, info.to_dict())
        if changes:
            raise different_config(self.path, old.get("sweep_file"), info.sweep_file, changes)

    def read_run_info(self) -> RunInfo:
        if not self.run_yaml.is_file():
            raise RunError(f"{self.run_yaml}: missing; start the run with `matcher run SWEEP`")
        problems, info = read_run_yaml(self.run_yaml)
        if problems:
            raise RunError("; ".join(problems))
        return info

    def snapshot(self, records: list[dict[str, Any]] | None = None) -> RunSnapshot:
        """The folder as its readers see it: run.yaml, status.json and the metrics lines, read once.
        `records`: the metrics lines, when the caller has read them already (compare checks each line)."""
        try:
            info = read_run_yaml(self.run_yaml) if self.run_yaml.is_file() else (
                [f"{self.run_yaml}: missing; start the run with `matcher run SWEEP`"], None)
        except MatcherError as error:
            info = [str(error)], None
        metrics_problem = None
        if records is None:
            try:
                records = self.read_metrics()
            except ValueError as error:
                records, metrics_problem = [], f"{self.metrics}: a line is not valid JSON ({error})"
        return snapshot_of(self.name, info, Status.read(self.status_json), records, metrics_problem)

    # ------------------------------------------------------------------------------ status.json
    def status(self) -> Status:
        """The run's status (see Status.read)."""
        return Status.read(self.status_json)[0]

    def write_status(self, state: RunState | str, *, step: int, tokens: int, reason: str | None = None,
                     os_error: tuple[int, str, str | None] | None = None) -> Status:
        """Write status.json; returns the Status written. `os_error`: (errno, strerror, filename) of the
        OSError a failed run stopped on, so the runner can tell a full disk (which every later run would
        hit too) from the run's own failure."""
        state = RunState(state)
        assert state in WRITTEN_STATES, state
        status = Status(state=state, reason=reason, step=step, tokens=tokens,
                        updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), os_error=os_error)
        text = status.to_json()
        try:
            write_text_atomic(self.status_json, text)
        except OSError as error:
            # A full disk has no room for the temporary file; the old status.json's own blocks still
            # take a short status in place, so a run that stops on a full disk is not left `running`.
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            if not full or state == RunState.RUNNING or not _overwrite(self.status_json, text):
                raise
        return status

    def write_env(self, env: dict[str, Any]) -> None:
        write_text_atomic(self.env_json, json.dumps(env, indent=2) + "\n")

    def read_env(self) -> dict[str, Any]:
        """env.json ({} when there is none yet, or it cannot be read: it only describes the run)."""
        return _read_json_object(self.env_json)

    def write_slurm_job(self, job: str) -> None:
        write_text_atomic(self.slurm_json, json.dumps({"job": job, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                          + "\n")

    def slurm_job(self) -> str | None:
        """The Slurm job of the run's latest attempt: the one its trainer ran in (env.json), unless it was
        submitted again since (slurm.json is newer); None for a run never trained through Slurm."""
        env, submitted = self.read_env(), _read_json_object(self.slurm_json)
        if env and (not submitted or self.env_json.stat().st_mtime >= self.slurm_json.stat().st_mtime):
            return env.get("slurm_job")
        return submitted.get("job")

    # ---------------------------------------------------------------------------- metrics.jsonl
    def read_metrics(self) -> list[dict[str, Any]]:
        """The complete metric lines (a run killed while writing leaves a cut last line: not read)."""
        if not self.metrics.is_file():
            return []
        return complete_records(self.metrics.read_bytes())[0]


def _overwrite(path: Path, text: str) -> bool:
    """Write `text` over the file in place (no new file, no new blocks where it fits); False if that fails."""
    try:
        with path.open("r+b") as handle:
            handle.write(text.encode("utf-8"))
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
        return True
    except OSError:
        return False


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def split_complete(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete (newline-ended) lines of `data`, and what follows the last newline: a line still
    being written, or cut off by a kill. The one rule every metrics.jsonl reader follows."""
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), data[end:]


def complete_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON records of the complete lines in `data`, and the bytes they span."""
    lines, rest = split_complete(data)
    return [json.loads(line) for line in lines if line.strip()], len(data) - len(rest)


class MetricsWriter:
    """Appends metric lines durably and knows where it is, so a checkpoint can record the file's length
    and a resume can cut off lines written after that checkpoint."""

    def __init__(self, path: Path, resume_at_bytes: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        size_bytes = path.stat().st_size if path.exists() else 0
        if size_bytes < resume_at_bytes:
            raise RunError(f"{path} has {size_bytes} bytes but the checkpoint recorded {resume_at_bytes}; "
                           "it was cut or replaced. Restore it, or delete the run folder to start over")
        self.file = path.open("ab")
        self.file.truncate(resume_at_bytes)
        self.file.seek(resume_at_bytes)
        os.fsync(self.file.fileno())

    @property
    def offset_bytes(self) -> int:
        return self.file.tell()

    def write(self, record: dict[str, Any]) -> None:
        # Strict JSON for every reader: a non-finite number (an inf eval loss, say) is written as null.
        record = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                  for key, value in record.items()}
        self.file.write((json.dumps(record, allow_nan=False) + "\n").encode("utf-8"))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
