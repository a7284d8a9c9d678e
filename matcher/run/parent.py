"""Training processes end with the process that launched them.

`python -m matcher.run.parent MODULE ARGS...` runs `python -m MODULE ARGS...` so that it is sent
SIGTERM when its parent dies, however the parent dies (kill -9, a closed terminal, out of memory): on
Linux through prctl(PR_SET_PDEATHSIG), elsewhere through a thread that polls os.getppid(). SIGTERM is
the trainers' graceful stop (finish the step, checkpoint, state `interrupted`), and torchrun's: it
passes it on to its workers, which are themselves started through this module, so a whole
launcher -> torchrun -> workers tree ends when its top is killed.

The expected parent comes in the environment (PARENT_ENV, set by whoever starts the process), so a
parent that died before this process could ask is noticed too; the process sets it to its own pid
for the processes it starts. With LOCK_ENV set, the process also adds its pid to the run's lock
(matcher.run.lock.join), so the lock stays held while any process of the tree lives.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time

from matcher.run.lock import join

PARENT_ENV = "MATCHER_PARENT_PID"
LOCK_ENV = "MATCHER_RUN_LOCK"
POLL_S = 0.5
PR_SET_PDEATHSIG = 1


def command(module: str, *args: str) -> list[str]:
    """The command that runs `python -m module args` as a child that ends with this process."""
    return [sys.executable, "-m", "matcher.run.parent", module, *args]


def child_env(lock_path: os.PathLike | str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child started with `command`: this process is its parent; with `lock_path`
    (a lock this process holds), the child joins it."""
    env = dict(os.environ if base is None else base)
    env[PARENT_ENV] = str(os.getpid())
    env.pop(LOCK_ENV, None)
    if lock_path is not None:
        env[LOCK_ENV] = str(lock_path)
    return env


def _set_death_signal(signum: int) -> bool:
    """Ask the kernel for `signum` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int) -> None:
    """End this process (SIGTERM) when `parent` is no longer its parent; at once if it already is not."""
    if not _set_death_signal(signal.SIGTERM):
        threading.Thread(target=_poll_parent, args=(parent,), name="matcher-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # died before the death signal was set: nothing has started yet
        sys.exit(f"matcher: the launching process (pid {parent}) is gone; not starting")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m matcher.run.parent MODULE [ARGS...]")
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        die_with_parent(int(parent))
    os.environ[PARENT_ENV] = str(os.getpid())
    lock = os.environ.get(LOCK_ENV)
    if lock:
        join(lock)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
