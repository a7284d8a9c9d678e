"""One trainer per run: a lock file created with O_CREAT | O_EXCL holding the owner's pid and host (and
its Slurm job id, under Slurm), one JSON object a line. The processes the owner starts to train the
run (torchrun and its workers, matcher.run.parent) add a line each with their pid (`join`): the lock
is held while any of them lives, so a launcher killed with kill -9 whose workers still finish their
last step does not let a rerun in beside them.

A lock whose processes are all on this host and no longer alive is stale (the trainer was killed with
SIGKILL, or the machine rebooted) and is taken over; a pid reused since by another process does not
count (its start time differs, where /proc tells it). So is one taken by an earlier attempt of the
Slurm job this process runs in: Slurm runs one attempt of a job at a time, so a requeued job that
lands on another node takes over the lock its killed attempt left. Any other lock from another host
is never broken: this host cannot tell whether that process still runs; nor is a lock file that
cannot be read. Both say how to clear them (`Holder.describe`). (Two processes that break the
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
_BEING_WRITTEN = "(lock being written)"


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    slurm_job: str | None = None  # SLURM_JOB_ID of the holder (kept by a requeued job)
    slurm_restart: int = 0  # SLURM_RESTART_COUNT of the holder: how often its job had been requeued
    started: int | None = None  # the holder's start time (clock ticks since boot), against pid reuse
    members: tuple[tuple[int, int | None], ...] = ()  # (pid, start time) of the processes it started
    path: Path | None = None  # the lock file, for the hint on how to clear it

    def describe(self) -> str:
        """Who holds the lock, and, for a lock this host cannot check, how to clear it."""
        if self.pid < 0 and self.host == _BEING_WRITTEN:
            return "being started by another process (its lock is being written)"
        if self.pid < 0:
            return f"{self.path} cannot be read; if no process trains this run any more, delete it and start again"
        here = socket.gethostname()
        if self.host != here:
            return (f"being trained by pid {self.pid} on {self.host}; if that process no longer runs, delete "
                    f"{self.path} and start again")
        alive = [pid for pid, started in ((self.pid, self.started), *self.members) if _pid_alive(pid, started)]
        if alive and alive[0] != self.pid:
            return (f"being trained by pid {', '.join(map(str, alive))} on {self.host} (started by pid {self.pid}, "
                    "which is gone; they stop within seconds)")
        return f"being trained by pid {self.pid} on {self.host}"


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int, started: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    now = _start_time(pid) if started is not None else None
    return now is None or now == started


def _is_stale(path: Path, holder: Holder | None, host: str) -> bool:
    if holder is None:  # unreadable: never guessed at (see describe)
        return False
    if holder.host == host:
        return not any(_pid_alive(pid, started) for pid, started in ((holder.pid, holder.started), *holder.members))
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
    """The owner written in the lock file, with the processes that joined it; None when there is none
    to read."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        data = json.loads(lines[0])
        job = data.get("slurm_job")
        members = []
        for line in lines[1:]:
            try:  # a member killed while adding itself leaves a cut line: it never trained
                member = json.loads(line)
                members.append((int(member["pid"]), member.get("started")))
            except (ValueError, KeyError, TypeError):
                continue
        started = data.get("started")
        return Holder(pid=int(data["pid"]), host=str(data["host"]), slurm_job=None if job is None else str(job),
                      slurm_restart=int(data.get("slurm_restart", 0)),
                      started=started if isinstance(started, int) else None, members=tuple(members), path=path)
    except (FileNotFoundError, IndexError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def _unreadable(path: Path) -> Holder:
    return Holder(pid=-1, host="(unreadable lock)", path=path)


def _being_written(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime <= _UNREADABLE_GRACE_S
    except FileNotFoundError:
        return False


def live_holder(path: Path) -> Holder | None:
    """Who holds the lock, unless nobody does or the lock is stale (a look; takes nothing). An unreadable
    lock counts as held: by its writer while it is new, else by someone this host cannot name."""
    holder = read_holder(path)
    if not path.exists() or _is_stale(path, holder, socket.gethostname()):
        return None
    if holder is None:
        return Holder(pid=-1, host=_BEING_WRITTEN, path=path) if _being_written(path) else _unreadable(path)
    return holder


def join(path: str | os.PathLike) -> None:
    """Add this process to the lock its launcher holds (a line with its pid): the lock is held while it
    lives. A lock that is gone (its launcher let go) is not recreated."""
    record = json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid())}) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return
    try:
        os.write(fd, record.encode("utf-8"))  # one short O_APPEND write: lines of several joiners never mix
    finally:
        os.close(fd)


class RunLock:
    """`acquire()` returns None when this process now holds the lock, else who holds it."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def acquire(self) -> Holder | None:
        me = Holder(pid=os.getpid(), host=socket.gethostname(), slurm_job=os.environ.get("SLURM_JOB_ID"),
                    slurm_restart=_restart_count(), started=_start_time(os.getpid()))
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
                return holder or live_holder(self.path) or _unreadable(self.path)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"pid": me.pid, "host": me.host, "slurm_job": me.slurm_job,
                                         "slurm_restart": me.slurm_restart, "started": me.started}) + "\n")
            self.held = True
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
