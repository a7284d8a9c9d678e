"""Fault injection: a 2-process run (torchrun, gloo) killed at random steps, its checkpoint corrupted and
its disk filled, each time resumed the way matcher's messages say; then its metrics are checked for
lost or doubled points.

    python bench/faults.py [--quick] [--seed N] [--kills K] [--steps S] [--keep DIR]

Faults, in a random order of steps:
- kill -9 of the launcher (`python -m matcher.run.runner RUN --nproc 2`): torchrun and its workers must
  end with it (within 15 s) and the rerun resume from the last checkpoint;
- kill -9 of one worker (full mode): torchrun stops the other, the rerun resumes;
- a corrupted checkpoint (bytes flipped in checkpoints/last.pt): the next attempt must name it damaged
  and not load it; recovered as the message says (delete it, restart from the beginning);
- a full disk while training: a small tmpfs holding the run where this process may mount one (root
  on Linux; full mode), else every write failing with ENOSPC in an in-process attempt (quick mode and
  elsewhere). The attempt must end with one "No space left on device" message (exit 2 from the runner),
  status.json not `running` and the previous checkpoint intact; recovered by freeing the space.

It ends with "N faults injected, N recovered, 0 points lost or doubled", every number computed from the
run's files: a fault is recovered when its check above held and a later attempt carried the run past
the step the fault hit; the points are the train lines (every --log-every-steps) and eval lines
(matcher.run.schedule.eval_steps) an uninterrupted run writes, each expected exactly once in
metrics.jsonl. Exit 0 when every fault was recovered and no point was lost or doubled, else 1.
`--quick` (one launcher kill, one corrupted checkpoint, one simulated full disk) is what the test
suite runs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

LOG_EVERY_STEPS = 2
TRAINERS_GONE_S = 15.0  # a killed launcher's trainers finish their step, checkpoint and stop within this


@dataclass
class Fault:
    kind: str
    step: int  # the run's step when the fault hit (status.json)
    ok: bool  # the fault's own check held (see the module docstring)
    detail: str
    recovered: bool = False


def make_run(folder: Path, total_steps: int):
    """A fresh dr_da-tiny run folder: 8 x 64 tokens a step, 4 evaluations."""
    from matcher.config import TrainConfig
    from matcher.cost.analytic import Conventions
    from matcher.plan.presets import get_preset
    from matcher.plan.sweep import Run, predict
    from matcher.run.contract import RunInfo
    from matcher.run.rundir import RunDir

    model = get_preset("dr_da-tiny")
    train = TrainConfig(total_tokens=total_steps * 8 * 64, batch_size=8, seq_len=64, data_steps=2,
                        eval_examples=3, n_evals=4)
    run = Run(name="dr_da-tiny", group="dr_da-tiny", role="target", model=model, train=train,
              predicted=predict(model, train, Conventions()))
    run_dir = RunDir(folder / run.name)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.write_run_info(RunInfo.from_run(run, "faults"))
    return run_dir, train


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([root, *sys.path])}


def _step(run_dir) -> int:
    return run_dir.status().step


def _reached(run_dir, step: int, process: subprocess.Popen) -> bool:
    """This attempt is training (not the status an earlier one left) at `step` or later, or it ended."""
    status = run_dir.status()
    return (status.state == "running" and status.step >= step) or process.poll() is not None


def _hash(path: Path) -> str | None:
    from matcher.atomic import sha256_file

    return sha256_file(path) if path.is_file() else None


def _wait(condition, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _alive(pid: int) -> bool:
    from matcher.run.lock import _pid_alive

    return _pid_alive(pid)


class Attempts:
    """Starts the run's attempts (2 processes under the runner) and keeps their output."""

    def __init__(self, run_dir, log: Path, in_process: bool = False):
        self.run_dir, self.log, self.count = run_dir, log, 0
        self.in_process = in_process  # attempts that are not killed run in this process, one rank (quick)

    def start(self) -> subprocess.Popen:
        self.count += 1
        out = self.log.open("a")
        out.write(f"--- attempt {self.count}\n")
        out.flush()
        return subprocess.Popen([sys.executable, "-m", "matcher.run.runner", str(self.run_dir.path), "--nproc", "2",
                                 "--log-every-steps", str(LOG_EVERY_STEPS)], env=_env(), stdout=out,
                                stderr=subprocess.PIPE, text=True)

    def run(self) -> tuple[int, str]:
        """One attempt to its end: exit code and stderr."""
        if self.in_process:
            from matcher.run.contract import ExitCode
            from matcher.run.runner import launch_run

            self.count += 1
            summary = launch_run(self.run_dir.path, log_every_steps=LOG_EVERY_STEPS)
            return ExitCode.of(summary.state), f"{summary.state}: {summary.note}"
        process = self.start()
        _, err = process.communicate(timeout=600)
        return process.returncode, err


def kill_at(attempts: Attempts, step: int, target: str, rng: random.Random) -> Fault:
    """kill -9 the launcher (target "launcher") or one worker once the run reaches `step`."""
    from matcher.run.lock import read_holder

    run_dir = attempts.run_dir
    process = attempts.start()
    _wait(lambda: _reached(run_dir, step, process), 300)
    holder = read_holder(run_dir.lock)
    if process.poll() is not None or holder is None:
        _, err = process.communicate()
        status = run_dir.status()
        last = ([line for line in err.splitlines() if line.strip()] or [""])[-1]
        return Fault(f"kill -9 {target}", _step(run_dir), False,
                     f"the attempt ended before the kill (exit {process.returncode}, state {status.state}: "
                     f"{status.reason}; {last})")
    trainers = [pid for pid, _ in holder.members]
    hit = _step(run_dir)
    if target == "launcher":
        process.kill()
        started = time.time()
        gone = _wait(lambda: not any(_alive(pid) for pid in trainers), TRAINERS_GONE_S)
        process.communicate()
        detail = (f"{len(trainers)} trainer processes gone {time.time() - started:.1f} s after their launcher"
                  if gone else f"trainers still alive {TRAINERS_GONE_S:.0f} s after their launcher was killed")
        return Fault("kill -9 launcher", hit, gone and len(trainers) == 3, detail)
    worker = rng.choice(trainers[1:])  # trainers[0] is torchrun, the rest its workers
    os.kill(worker, signal.SIGKILL)
    code = process.wait(timeout=120)
    process.communicate()
    gone = _wait(lambda: not any(_alive(pid) for pid in trainers), TRAINERS_GONE_S)
    return Fault("kill -9 worker", hit, gone and code != 0 and run_dir.status().state != "running",
                 f"launcher exited {code}, state {run_dir.status().state}")


def corrupt_checkpoint(attempts: Attempts, rng: random.Random) -> Fault:
    """Flip bytes in the middle of last.pt; the next attempt must refuse it by name."""
    run_dir = attempts.run_dir
    path = run_dir.checkpoint
    hit = _step(run_dir)
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data) // 4, 3 * len(data) // 4)
    data[at:at + 16] = bytes(b ^ 0xFF for b in data[at:at + 16])
    path.write_bytes(bytes(data))
    code, err = attempts.run()
    reason = run_dir.status().reason or ""
    named = code != 0 and "damaged" in reason and "delete it" in reason
    # recovery, as the message says: delete the checkpoint (and its checksum) and restart the run
    path.unlink()
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    return Fault("corrupted checkpoint", hit, named, f"named damaged: {named} (exit {code})")


def fill_disk_real(attempts: Attempts, mount: Path, step: int) -> Fault:
    """Fill the tmpfs the run lives on once it reaches `step`, so its next checkpoint finds no room."""
    run_dir = attempts.run_dir
    process = attempts.start()
    _wait(lambda: _reached(run_dir, step, process), 300)
    before = _hash(run_dir.checkpoint)
    size = run_dir.checkpoint.stat().st_size
    ballast = mount / "ballast"
    free = shutil.disk_usage(mount).free
    with ballast.open("wb") as handle, contextlib.suppress(OSError):
        handle.write(b"\0" * max(free - size // 2, 0))
    hit = _step(run_dir)
    _, err = process.communicate(timeout=300)
    fault = _check_full_disk(run_dir, process.returncode, err, before, hit)
    ballast.unlink()  # recovery: free the space
    return fault


def fill_disk_simulated(run_dir, step: int) -> Fault:
    """An in-process attempt in which every write fails with ENOSPC from the first checkpoint after
    `step` on (where no small disk can be mounted)."""
    from matcher import atomic
    from matcher.errors import MatcherError
    from matcher.run import checkpoint, rundir
    from matcher.run.runner import launch_run

    disk = {"full": False}
    state = {"before": None, "hit": 0}

    def no_space(path) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    class FullHandle:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise no_space("")

        def flush(self):
            self.handle.flush()

    real_atomic, real_text, real_line = atomic.write_atomic, rundir.write_text_atomic, rundir.MetricsWriter.write

    def write_checkpoint(path, write):
        if not disk["full"] and path.name == "last.pt" and _step(run_dir) >= step:
            disk["full"], state["before"], state["hit"] = True, _hash(path), _step(run_dir)
        return real_atomic(path, (lambda h: write(FullHandle(h))) if disk["full"] else write)

    def write_text(path, text):
        if disk["full"]:
            raise no_space(path)
        return real_text(path, text)

    def write_line(self, record):
        if disk["full"]:
            self.file.write(b'{"event": "tr')  # what fitted of the line
            self.file.flush()
            raise no_space(self.file.name)
        return real_line(self, record)

    patches = [(checkpoint, "write_atomic", write_checkpoint), (rundir, "write_text_atomic", write_text),
               (rundir.MetricsWriter, "write", write_line)]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    code, err = 0, ""
    try:
        summary = launch_run(run_dir.path, log_every_steps=LOG_EVERY_STEPS)
        err = f"{summary.state}: {summary.note}"
    except OSError as error:
        code, err = 2, f"error: {error.filename}: {error.strerror}"
    except MatcherError as error:
        code, err = 2, f"error: {error}"
    finally:
        for owner, name, value in originals:
            setattr(owner, name, value)
    return _check_full_disk(run_dir, code, err, state["before"], state["hit"])


def _check_full_disk(run_dir, code: int, err: str, before: str | None, hit: int) -> Fault:
    messages = [line for line in err.splitlines() if line.startswith("error:")]
    ok = (code == 2 and len(messages) == 1 and "No space left on device" in messages[0]
          and "Traceback" not in err and run_dir.status().state != "running"
          and _hash(run_dir.checkpoint) == before and before is not None
          and not list(run_dir.checkpoint.parent.glob(".last.pt.*")))
    kept = "intact" if _hash(run_dir.checkpoint) == before else "CHANGED"
    return Fault("full disk", hit, ok, f"exit {code}, state {run_dir.status().state}, previous checkpoint {kept}")


def count_points(run_dir, train) -> tuple[int, int]:
    """(lost, doubled): the train and eval lines an uninterrupted run writes, missing or repeated."""
    from matcher.run.schedule import eval_steps

    expected = {("train", s) for s in range(LOG_EVERY_STEPS, train.total_steps + 1, LOG_EVERY_STEPS)}
    expected |= {("eval", s) for s in eval_steps(train)}
    seen = Counter((line["event"], line["step"]) for line in run_dir.read_metrics()
                   if line["event"] in ("train", "eval"))
    lost = sum(1 for point in expected if seen[point] == 0)
    doubled = sum(count - 1 for count in seen.values() if count > 1) + sum(1 for p in seen if p not in expected)
    return lost, doubled


def _mount_tmpfs(size_bytes: int) -> Path | None:
    """A small tmpfs of our own, where this process may mount one (root on Linux); else None."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        return None
    mount = Path(tempfile.mkdtemp(prefix="matcher-faults-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        return None
    return mount


def _unmount(mount: Path) -> None:
    subprocess.run(["umount", str(mount)], capture_output=True)
    with contextlib.suppress(OSError):
        mount.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one kill, one corrupted checkpoint, one full disk "
                                                             "(simulated): what the test suite runs")
    parser.add_argument("--seed", type=int, default=0, help="where the faults hit")
    parser.add_argument("--kills", type=int, default=4, help="kill -9s (launcher and worker by turns; full mode)")
    parser.add_argument("--steps", type=int, default=None, help="the run's steps (default 24 quick, 48 full)")
    parser.add_argument("--keep", type=Path, default=None, help="leave the run folder here (default: a temporary one)")
    args = parser.parse_args(argv)
    from matcher.run.schedule import eval_steps

    rng = random.Random(args.seed)
    total = args.steps or (16 if args.quick else 48)
    mount = None if args.quick else _mount_tmpfs(64 << 20)
    work = mount or Path(tempfile.mkdtemp(prefix="matcher-faults-"))
    try:
        run_dir, train = make_run(work, total)
        attempts = Attempts(run_dir, work / "attempts.log", in_process=args.quick)
        evals = sorted(eval_steps(train))
        first_checkpoint, last_checkpoint = evals[0], evals[-2]  # a fault after the last one hits nothing
        plan = ["kill launcher"] if args.quick else [f"kill {('launcher', 'worker')[i % 2]}" for i in range(args.kills)]
        plan += ["corrupt", "disk"]
        faults: list[Fault] = []
        for kind in plan:
            if kind == "corrupt" and not run_dir.checkpoint.is_file():  # train to a checkpoint to corrupt
                first = attempts.start()
                _wait(lambda first=first: run_dir.checkpoint.is_file() or first.poll() is not None, 300)
                first.send_signal(signal.SIGINT)
                first.communicate(timeout=300)
            low = max(_step(run_dir) + 1, first_checkpoint + 1)
            step = rng.randint(min(low, last_checkpoint), last_checkpoint)
            if kind.startswith("kill"):
                fault = kill_at(attempts, step, kind.split()[1], rng)
            elif kind == "corrupt":
                fault = corrupt_checkpoint(attempts, rng)
            elif mount is not None:
                fault = fill_disk_real(attempts, mount, step)
            else:
                fault = fill_disk_simulated(run_dir, step)
            faults.append(fault)
            print(f"fault {len(faults)}: {fault.kind} at step {fault.step}: {fault.detail}"
                  f"{'' if fault.ok else '  <- its check FAILED'}", flush=True)
            for earlier in faults:  # every attempt that got further recovers the faults it passed
                earlier.recovered = earlier.recovered or (earlier.ok and _step(run_dir) > earlier.step)
        code, err = attempts.run()  # the last attempt, undisturbed: to the end
        finished = run_dir.status().state == "finished"
        for fault in faults:
            fault.recovered = fault.recovered or (fault.ok and finished)
        lost, doubled = count_points(run_dir, train)
        recovered = sum(fault.recovered for fault in faults)
        disk = "a real full tmpfs" if mount is not None else "simulated ENOSPC writes"
        ranks = ("killed ones under torchrun with 2 processes, the others in-process" if args.quick
                 else "2 processes each")
        print(f"run {'finished' if finished else 'NOT finished: ' + err.strip()[-300:]} after {attempts.count} "
              f"attempts ({ranks}, gloo; full disk: {disk})")
        print(f"{len(faults)} faults injected, {recovered} recovered, {lost + doubled} points lost or doubled"
              + (f" ({lost} lost, {doubled} doubled)" if lost + doubled else ""))
        if args.keep:
            shutil.copytree(run_dir.path, args.keep / run_dir.name, dirs_exist_ok=True)
        return 0 if finished and recovered == len(faults) and lost + doubled == 0 else 1
    finally:
        if mount is not None:
            _unmount(mount)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
