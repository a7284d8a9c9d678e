"""One trainer per run: a lock file created with O_CREAT | O_EXCL holding the owner's pid and host (and
its Slurm job id, under Slurm).

A lock whose owner is on this host and no longer alive is stale (the trainer was killed with
SIGKILL, or the machine rebooted) and is taken over. So is one taken by an earlier attempt of the
Slurm job this process runs in: Slurm runs one attempt of a job at a time, so a requeued job that
lands on another node takes over the lock its killed attempt left. Any other lock from another host
is never broken: this host cannot tell whether that process still runs. (Two processes that break the
same stale lock at the same instant could both win; starts are human-paced, so this is not guarded
further.)
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

# A lock file without a readable owner is one being written right now, unless it is older than this.
_UNREADABLE_GRACE_S = 10.0


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    slurm_job: str | None = None  # SLURM_JOB_ID of the holder (kept by a requeued job)
    slurm_restart: int = 0  # SLURM_RESTART_COUNT of the holder: how often its job had been requeued

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _is_stale(path: Path, holder: Holder | None, host: str) -> bool:
    if holder is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except FileNotFoundError:
            return False
    if holder.host == host:
        return not _pid_alive(holder.pid)
    # Another host: stale only when it is an earlier attempt of this same job (a requeue restarts the job
    # under its id, one count higher); a step of the same attempt on another node is alive.
    return (holder.slurm_job is not None and holder.slurm_job == os.environ.get("SLURM_JOB_ID")
            and holder.slurm_restart < _restart_count())


def _restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def read_holder(path: Path) -> Holder | None:
    """The owner written in the lock file; None when there is none to read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        job = data.get("slurm_job")
        return Holder(pid=int(data["pid"]), host=str(data["host"]), slurm_job=None if job is None else str(job),
                      slurm_restart=int(data.get("slurm_restart", 0)))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def live_holder(path: Path) -> Holder | None:
    """Who holds the lock, unless nobody does or the lock is stale (a look; takes nothing)."""
    holder = read_holder(path)
    if not path.exists() or _is_stale(path, holder, socket.gethostname()):
        return None
    return holder or Holder(pid=-1, host="(lock being written)")


class RunLock:
    """`acquire()` returns None when this process now holds the lock, else who holds it."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> Holder | None:
        me = Holder(pid=os.getpid(), host=socket.gethostname(), slurm_job=os.environ.get("SLURM_JOB_ID"),
                    slurm_restart=_restart_count())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if _is_stale(self.path, holder, me.host):
                    self.path.unlink(missing_ok=True)
                    continue
                if holder is None and not self.path.exists():
                    continue  # released between our open and our read
                return holder or Holder(pid=-1, host="(lock being written)")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"pid": me.pid, "host": me.host, "slurm_job": me.slurm_job,
                           "slurm_restart": me.slurm_restart}, handle)
            self.held = True
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
