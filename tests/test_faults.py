"""Faults a careful user expects handled (issue 13): a killed launcher leaves no trainer behind, stale
results are refused, a full disk ends in one message; each test checks that nothing was lost."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_runs import prepare, tiny_run

from matcher.run.lock import _pid_alive, live_holder, read_holder
from matcher.run.runner import launch_run
from matcher.run.schedule import eval_steps


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _wait_for(condition, timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def assert_each_step_once(run_dir, log_every_steps: int = 5) -> None:
    """Every train and eval line an uninterrupted run writes, each exactly once."""
    _, _, train = run_dir.read_run_info()
    lines = run_dir.read_metrics()
    trains = [line["step"] for line in lines if line["event"] == "train"]
    evals = [line["step"] for line in lines if line["event"] == "eval"]
    assert trains == list(range(log_every_steps, train.total_steps + 1, log_every_steps))
    assert evals == eval_steps(train)


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_trainer_and_the_rerun_resumes(tmp_path):
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny"))
    launcher = subprocess.Popen([sys.executable, "-m", "matcher.run.runner", str(run_dir.path), "--nproc", "2",
                                 "--log-every-steps", "5"], env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: run_dir.checkpoint.is_file() or launcher.poll() is not None, 120)
    holder = read_holder(run_dir.lock)
    assert holder.pid == launcher.pid
    trainers = [pid for pid, _ in holder.members]
    assert len(trainers) == 3  # torchrun and its two workers joined the launcher's lock
    launcher.kill()  # kill -9: no handler runs in the launcher
    launcher.wait()
    # the trainers hold the lock while they finish their step and checkpoint: a rerun now is told so
    early = launch_run(run_dir.path, nproc=2, log_every_steps=5)
    if early.state == "locked":
        assert "which is gone" in early.note, early
    assert _wait_for(lambda: not any(_pid_alive(pid) for pid in trainers), 15), "trainers outlived their launcher"
    assert live_holder(run_dir.lock) is None  # nothing of that tree lives: the lock is stale, taken over
    summary = launch_run(run_dir.path, nproc=2, log_every_steps=5) if early.state == "locked" else early
    assert summary.state == "finished", run_dir.log.read_text()[-3000:]
    assert [line["event"] for line in run_dir.read_metrics()].count("resume") == 1
    assert_each_step_once(run_dir)
