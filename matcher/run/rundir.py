"""The files of one run under `results/<sweep>/<run>/`, as `matcher compare` reads them.

- run.yaml: what the run is (run, group, seed, role, variant, sweep, sweep_file, model, train, predicted);
  `matcher run` and `compare` refuse a folder whose config no longer matches its sweep file's entry;
- env.json: where it ran (torch version, device name, dtype, world size, Slurm job; no host names or paths);
- slurm.json: {"job", "submitted"}: the Slurm array task it was last submitted as (`matcher run --launcher slurm`);
- metrics.jsonl: one JSON object per line, each line flushed and fsynced as it is written;
- status.json: {"state": running|finished|failed|interrupted, "reason", "step", "tokens", "updated"},
  replaced atomically;
- checkpoints/last.pt: the latest checkpoint, replaced atomically;
- checkpoints/step-<step>.safetensors: the model at each eval point (matcher.run.snapshots);
- evals.jsonl: benchmark scores `matcher eval` computed on those, one line per (task, step, depth);
- tensorboard/, wandb_id, wandb/: the dashboards' copies of the metric lines (matcher.run.dashboards);
- lock: held by the process that trains the run and the processes it started (see matcher.run.lock);
- train.log: output of a training subprocess (GPU queue, torchrun, Slurm).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matcher.atomic import write_text_atomic
from matcher.config import VARIANTS, ModelConfig, TrainConfig, dump_yaml, field_problems, read_yaml
from matcher.errors import ConfigError, MatcherError, RunError
from matcher.plan.sweep import ROLES

STATES = ("running", "finished", "failed", "interrupted")


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
    model: dict  # ModelConfig fields
    train: dict  # TrainConfig fields
    predicted: dict = field(default_factory=dict)  # the matched costs (matcher.plan.sweep.PREDICTED_KEYS)

    def __post_init__(self) -> None:
        for key in ("run", "group"):
            if not getattr(self, key):
                raise ConfigError(f"{key} must be a name, got {getattr(self, key)!r}")
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")


def read_run_yaml(path: Path) -> tuple[list[str], RunInfo | None]:
    """run.yaml checked field by field (matcher.config.field_problems): its problems, or the RunInfo."""
    return field_problems(RunInfo, read_yaml(path), str(path))


# TrainConfig fields that change how a run executes or is watched, not what it computes
EXECUTION_FIELDS = ("micro_batch_size", "compile", "recompute", "dashboards", "keep_checkpoints")


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
    def write_run_info(self, info: dict[str, Any]) -> None:
        """Write run.yaml; a run folder that already holds a different model or train config is an
        error, because resuming it would mix two experiments in one curve. Settings of how a run executes
        (EXECUTION_FIELDS: micro-batching, compilation, recomputation) may change between attempts: the
        steps they compute are the same."""
        if self.run_yaml.is_file():
            self.check_same_config(info)
        write_text_atomic(self.run_yaml, dump_yaml(info))

    def check_same_config(self, info: dict[str, Any]) -> None:
        """Refuse `info` for this folder when its model or train config differs from the recorded one
        (a sweep entry edited after the run trained, or another sweep file of the same name)."""
        old = read_yaml(self.run_yaml) or {}
        changes = config_changes(old if isinstance(old, dict) else {}, info)
        if changes:
            source = old.get("sweep_file") if isinstance(old, dict) else None
            origin = f" (from {source})" if source and source != info.get("sweep_file") else ""
            raise RunError(f"{self.path} holds a run trained with a different config{origin}: "
                           f"{'; '.join(changes[:4])}{' ...' if len(changes) > 4 else ''}. To keep those results, "
                           "train this sweep into another folder (--results DIR); to retrain, move that folder away")

    def read_run_info(self) -> tuple[dict[str, Any], ModelConfig, TrainConfig]:
        if not self.run_yaml.is_file():
            raise RunError(f"{self.run_yaml}: missing; start the run with `matcher run SWEEP`")
        problems, info = read_run_yaml(self.run_yaml)
        if problems:
            raise RunError("; ".join(problems))
        return (dataclasses.asdict(info), ModelConfig.from_dict(info.model, f"{self.run_yaml} model"),
                TrainConfig.from_dict(info.train, f"{self.run_yaml} train"))

    # ------------------------------------------------------------------------------ status.json
    def status(self) -> dict[str, Any]:
        """The run's status (see read_status)."""
        return read_status(self.status_json)[0]

    def write_status(self, state: str, *, step: int, tokens: int, reason: str | None = None,
                     os_error: tuple[int, str, str | None] | None = None) -> None:
        """`os_error`: (errno, strerror, filename) of the OSError a failed run stopped on, so the runner
        can tell a full disk (which every later run would hit too) from the run's own failure."""
        assert state in STATES, state
        status = {"state": state, "reason": reason, "step": step, "tokens": tokens,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if os_error is not None:
            status["os_error"] = list(os_error)
        text = json.dumps(status) + "\n"
        try:
            write_text_atomic(self.status_json, text)
        except OSError as error:
            # A full disk has no room for the temporary file; the old status.json's own blocks still
            # take a short status in place, so a run that stops on a full disk is not left `running`.
            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            if not full or state == "running" or not _overwrite(self.status_json, text):
                raise

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


def read_status(path: Path) -> tuple[dict[str, Any], str | None]:
    """status.json as {"state", "reason", "step", "tokens", ...} and what is wrong with the file, if
    anything. No file: state "new" (never started). A file that is not a status (cut, edited, not
    JSON): state "unknown", with the problem; the run's checkpoint, not this view, decides a resume."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"state": "new", "reason": None, "step": 0, "tokens": 0}, None
    except (ValueError, UnicodeDecodeError) as err:
        problem = f"{path}: not valid JSON ({err})"
        return {"state": "unknown", "reason": problem, "step": 0, "tokens": 0}, problem
    if not isinstance(data, dict) or data.get("state") not in STATES:
        got = data.get("state") if isinstance(data, dict) else data
        problem = f"{path}: state must be one of {', '.join(STATES)}, got {got!r}"
        return {"state": "unknown", "reason": problem, "step": 0, "tokens": 0}, problem
    for key in ("step", "tokens"):
        if not isinstance(data.get(key), int) or isinstance(data.get(key), bool) or data[key] < 0:
            data[key] = 0
    if not isinstance(data.get("reason"), str) or not data["reason"]:
        data["reason"] = None
    return data, None


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
