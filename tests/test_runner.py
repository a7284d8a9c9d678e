"""Running a sweep: the Slurm job script (golden file), submission, the sweep going on past a failed
run, skipping finished runs, selecting runs, config clashes, and the per-run lock."""

import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console
from tiny_runs import prepare, tiny_run, tiny_train

from matcher.cost.analytic import Conventions
from matcher.errors import ConfigError, RunError
from matcher.plan.sweep import Sweep, SweepMeta, write_sweep
from matcher.report.results import load_results
from matcher.run.contract import ExitCode
from matcher.run.lock import RunLock, live_holder
from matcher.run.rundir import RunDir
from matcher.run.runner import launch_run, run_sweep
from matcher.run.slurm import SlurmOptions

GOLDEN = Path(__file__).parent / "golden"


def write_tiny_sweep(folder: Path, runs=None, name: str = "tiny") -> Path:
    runs = runs or [tiny_run("la-tiny"), tiny_run("dr-tiny", role="variant"),
                    tiny_run("dr_da-tiny", role="variant")]
    meta = SweepMeta(target="la-tiny", variants=["dr", "dr_da"], matched=["flops", "params"],
                     conventions=Conventions().to_dict(), tool_version="0.1.0", command="test",
                     created="2026-01-01T00:00:00+00:00",
                     tolerance=0.05)  # the presets were matched at seq_len 128, these runs train at 64
    return write_sweep(Sweep(meta=meta, runs=runs), folder / f"{name}.yaml")


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


# ------------------------------------------------------------------------------------------ Slurm


def test_sbatch_script_matches_golden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = write_tiny_sweep(Path("."))
    options = SlurmOptions(partition="gpu", account="proj-42", time="02:00:00", gpus_per_node=2,
                           cpus_per_gpu=6, mem="64G", max_parallel=2)
    summaries = run_sweep(sweep, "results", launcher="slurm", dry_run=True, fsdp=True, slurm=options,
                          console=quiet())
    assert [s.state for s in summaries] == ["planned"] * 3
    script = Path("results/tiny/slurm/tiny.sbatch").read_text()
    assert script == (GOLDEN / "tiny.sbatch").read_text(), "the script changed: review it, then the golden"
    assert subprocess.run(["bash", "-n", "results/tiny/slurm/tiny.sbatch"]).returncode == 0
    for run in ("la-tiny", "dr-tiny", "dr_da-tiny"):  # the tasks find their configs there
        assert RunDir(Path("results/tiny") / run).read_run_info().sweep == "tiny"


def test_submit_without_sbatch_says_where_the_script_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sweep = write_tiny_sweep(Path("."))
    with pytest.raises(RunError, match=r"sbatch is not installed here.*results/tiny/slurm/tiny.sbatch"):
        run_sweep(sweep, "results", launcher="slurm", console=quiet())


def test_submit_with_sbatch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text('#!/bin/sh\necho "$@" > sbatch.args\necho "4242;cluster"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = write_tiny_sweep(Path("."))
    summaries = run_sweep(sweep, "results", launcher="slurm", only=["dr-tiny", "la-tiny"], console=quiet())
    assert [(s.run, s.state, s.note) for s in summaries] == [("la-tiny", "submitted", "job 4242_0"),
                                                               ("dr-tiny", "submitted", "job 4242_1")]
    assert Path("sbatch.args").read_text().split() == ["--parsable", "results/tiny/slurm/tiny.sbatch"]
    assert "RUNS=(la-tiny dr-tiny)" in Path("results/tiny/slurm/tiny.sbatch").read_text()


# -------------------------------------------------------------------------------------- local


@pytest.mark.slow
def test_sweep_goes_on_past_a_nan_run_and_skips_done_runs(tmp_path):
    runs = [tiny_run("dr-tiny", tiny_train(lr=1e30, warmup_fraction=0.0)),
            tiny_run("la-tiny", role="variant")]
    sweep = write_tiny_sweep(tmp_path, runs)
    console = quiet()
    summaries = run_sweep(sweep, tmp_path / "results", console=console)
    assert [(s.run, s.state) for s in summaries] == [("dr-tiny", "failed"), ("la-tiny", "finished")]
    assert "training loss became nan" in summaries[0].note
    assert summaries[1].tokens == tiny_train().total_steps * tiny_train().tokens_per_step
    assert 0 <= summaries[1].eval_accuracy <= 1 and summaries[1].tokens_per_s > 0
    table = console.file.getvalue()
    assert "sweep tiny" in table and "failed" in table and "finished" in table

    results = load_results(tmp_path / "results" / "tiny")  # what `matcher compare` reads
    assert results.warnings == []
    states = dict(zip(results.runs["run"], results.runs["state"]))
    assert states == {"dr-tiny": "failed", "la-tiny": "finished"}
    assert len(results.evals[results.evals["run"] == "la-tiny"]) == 3
    assert np.array(results.expert_load["la-tiny"]).shape == (4, 4)

    again = run_sweep(sweep, tmp_path / "results", console=quiet())
    assert [s.state for s in again] == ["failed", "skipped"]  # `matcher run` exits 1: dr-tiny is not done
    assert "--retry-failed" in again[0].note
    for run in ("dr-tiny", "la-tiny"):
        info = RunDir(tmp_path / "results" / "tiny" / run).read_run_info().to_dict()
        assert set(info) == {"run", "group", "seed", "role", "variant", "sweep", "sweep_file", "model", "train",
                             "predicted"}
        assert info["sweep_file"] == str(sweep.resolve())
        assert info["predicted"]["train_flops_per_token"] > 0


@pytest.mark.slow
def test_gpu_queue_runs_one_subprocess_per_device(tmp_path):
    # Two "GPUs" on a CPU machine: each run gets its own CUDA_VISIBLE_DEVICES and subprocess, both at once.
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny"), tiny_run("dr-tiny", role="variant")])
    console = Console(file=io.StringIO(), width=200, force_terminal=True, force_interactive=True, color_system=None)
    summaries = run_sweep(sweep, tmp_path / "results", gpus=["0", "1"], log_every_steps=4, console=console)
    assert [(s.run, s.state) for s in summaries] == [("la-tiny", "finished"), ("dr-tiny", "finished")]
    for run in ("la-tiny", "dr-tiny"):
        run_dir = RunDir(tmp_path / "results" / "tiny" / run)
        train_steps = [line["step"] for line in run_dir.read_metrics() if line["event"] == "train"]
        assert train_steps == [4, 8, 12, 16, 20, 24]
        assert "finished" in run_dir.log.read_text()  # the subprocess's own report
    assert "la-tiny [finished]" in console.file.getvalue()  # its progress bar, fed from metrics.jsonl


def test_only_and_dry_run(tmp_path):
    sweep = write_tiny_sweep(tmp_path)
    summaries = run_sweep(sweep, tmp_path / "results", only="DR-tiny", dry_run=True, console=quiet())
    assert [(s.run, s.state, s.note) for s in summaries] == [("dr-tiny", "planned", "would train")]
    summaries = run_sweep(sweep, tmp_path / "results", only="dr_da-tiny, la-tiny", dry_run=True,
                          console=quiet())
    assert [s.run for s in summaries] == ["la-tiny", "dr_da-tiny"]  # sweep order
    assert not (tmp_path / "results").exists()
    with pytest.raises(ConfigError, match="unknown run 'dr-tiy'.*closest: dr-tiny"):
        run_sweep(sweep, tmp_path / "results", only="dr-tiy", dry_run=True, console=quiet())


def test_a_changed_config_is_not_mixed_into_old_results(tmp_path):
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    prepare(tmp_path / "results" / "tiny", tiny_run("la-tiny", tiny_train(lr=1e-4)))
    with pytest.raises(RunError, match=r"different config: train.lr: 0.0001 -> 0.003.*--results DIR"):
        run_sweep(sweep, tmp_path / "results", console=quiet())


# ------------------------------------------------------------------------------------------ lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "lock"
    first, second = RunLock(path), RunLock(path)
    assert first.acquire() is None
    holder = second.acquire()
    assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
    first.release()
    assert second.acquire() is None and live_holder(path) is not None
    second.release()
    assert live_holder(path) is None

    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    assert live_holder(path) is None and RunLock(path).acquire() is None  # stale: taken over

    path.write_text(json.dumps({"pid": _dead_pid(), "host": "another-host"}))
    holder = RunLock(path).acquire()  # a process on another host cannot be checked: left alone
    assert holder is not None and holder.host == "another-host"


def test_a_held_lock_keeps_a_second_trainer_out(tmp_path):
    run_dir = prepare(tmp_path / "tiny")
    lock = RunLock(run_dir.lock)
    assert lock.acquire() is None
    summary = launch_run(run_dir.path)
    assert summary.state == "locked" and f"pid {os.getpid()}" in summary.note
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    other = subprocess.run([sys.executable, "-m", "matcher.run.runner", str(run_dir.path)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == ExitCode.LOCKED, other.stderr
    assert not run_dir.metrics.exists() and run_dir.status().state == "new"
    lock.release()

    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    lock.acquire()
    summaries = run_sweep(sweep, tmp_path, console=quiet())  # results/tiny/la-tiny is that run folder
    assert summaries[0].state == "locked"
    lock.release()


def test_execution_settings_may_change_between_attempts(tmp_path):
    """micro_batch_size, compile and recompute change how a run executes, not its curve: a partly trained
    run resumes under new values (an OOM's advice), and run.yaml records them."""
    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    changed = tiny_run("la-tiny", tiny_train(micro_batch_size=4, recompute="full"))
    prepare(tmp_path, changed)  # no error
    assert run_dir.read_run_info().train.micro_batch_size == 4
    # a run.yaml written before a train field existed resumes: the missing field counts at its default
    info = yaml.safe_load(run_dir.run_yaml.read_text())
    del info["train"]["micro_batch_size"]
    run_dir.run_yaml.write_text(yaml.safe_dump(info))
    prepare(tmp_path, changed)
    with pytest.raises(RunError, match="different config: train.lr"):
        prepare(tmp_path, tiny_run("la-tiny", tiny_train(micro_batch_size=4, lr=1e-4)))


def test_a_cut_last_metrics_line_is_not_read(tmp_path):
    """A trainer killed while writing leaves half a line: the run's summary reads the complete ones."""
    from matcher.run.runner import summarize

    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    run_dir.metrics.write_text('{"event": "train", "step": 1, "tokens": 512}\n{"event": "tra')
    assert run_dir.read_metrics() == [{"event": "train", "step": 1, "tokens": 512}]
    assert summarize(run_dir, "failed", "killed").state == "failed"


def test_a_trainer_process_that_stopped_on_a_full_disk_stops_the_sweep(tmp_path):
    """A trainer run as a process records the OSError it failed on in status.json; the runner raises it
    again for a disk error (the sweep then stops with one message), and reports any other failure as the
    run's own."""
    import errno

    from matcher.run.runner import _after_subprocess

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_status("failed", step=3, tokens=96, reason="OSError: [Errno 28] No space left on device: 'x'",
                     os_error=(errno.ENOSPC, "No space left on device", str(tmp_path / "x")))
    with pytest.raises(OSError) as raised:
        _after_subprocess(run, 1)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "x")
    run.write_status("failed", step=3, tokens=96, reason="OSError: [Errno 2] No such file or directory: 'y'",
                     os_error=(errno.ENOENT, "No such file or directory", "y"))
    assert _after_subprocess(run, 1).state == "failed"  # the run's own problem: the sweep goes on
    run.write_status("failed", step=3, tokens=96, reason="OSError: [Errno 28] No space left on device")
    assert _after_subprocess(run, 1).state == "failed"  # a reason alone is text, not a recorded error
