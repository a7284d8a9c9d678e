"""Faults a careful user expects handled (issue 13): a killed launcher leaves no trainer behind, stale
results are refused, a full disk ends in one message; each test checks that nothing was lost."""

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import quiet, write_tiny_sweep
from tiny_runs import prepare, tiny_run, tiny_train

from matcher import atomic
from matcher.cli import main
from matcher.errors import ResultsError, RunError
from matcher.report.results import load_results
from matcher.run import checkpoint, lock, parent, rundir
from matcher.run.contract import RunInfo
from matcher.run.lock import RunLock, live_holder
from matcher.run.rundir import RunDir
from matcher.run.runner import _worker_command, launch_run, run_sweep
from matcher.run.schedule import eval_steps


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its content hash: compared before and after, nothing lost or changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_each_step_once(run_dir, log_every_steps: int = 5) -> None:
    """Every train and eval line an uninterrupted run writes, each exactly once."""
    train = run_dir.read_run_info().train
    lines = run_dir.read_metrics()
    trains = [line["step"] for line in lines if line["event"] == "train"]
    evals = [line["step"] for line in lines if line["event"] == "eval"]
    assert trains == list(range(log_every_steps, train.total_steps + 1, log_every_steps))
    assert evals == eval_steps(train)


def test_a_lock_is_held_while_a_process_that_joined_it_lives(tmp_path):
    """A launcher killed with kill -9 leaves its lock behind; while a trainer that joined it lives (the
    2-process case is bench/faults.py's, run by the test below), a rerun is told so and keeps out."""
    run_dir = prepare(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir.lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}) + "\n")
    lock.join(run_dir.lock)  # as matcher.run.parent does for torchrun and each worker
    before = tree_hashes(run_dir.path)
    summary = launch_run(run_dir.path)
    assert summary.state == "locked"
    assert summary.note == (f"being trained by pid {os.getpid()} on {socket.gethostname()} (started by pid "
                            f"{dead.pid}, which is gone; they stop within seconds); skipped")
    assert tree_hashes(run_dir.path) == before


def test_trainers_are_started_to_end_with_their_launcher(tmp_path):
    command = _worker_command(tmp_path, 2, False, 5)
    assert command[1:5] == ["-m", "matcher.run.parent", "torch.distributed.run", "--standalone"]
    assert command[-6:-3] == ["-m", "matcher.run.parent", "matcher.run.trainer"]  # each worker, too
    env = parent.child_env(tmp_path / "lock")
    assert env[parent.PARENT_ENV] == str(os.getpid()) and env[parent.LOCK_ENV] == str(tmp_path / "lock")
    # a process whose launcher is already gone does not start
    script = "import os; os.environ['MATCHER_PARENT_PID'] = '1' if os.getppid() != 1 else '2'; "
    script += "from matcher.run.parent import main; main(['json.tool', '--help'])"
    done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is gone; not starting" in done.stderr


# ----------------------------------------------------------------------------------- stale results
def _finished(results: Path, sweep: Path, run) -> RunDir:
    """A run folder as a finished run leaves it (without training: only its records matter here)."""
    run_dir = RunDir(results / sweep.stem / run.name)
    run_dir.path.mkdir(parents=True)
    run_dir.write_run_info(RunInfo.from_run(run, sweep.stem, str(sweep.resolve())))
    run_dir.metrics.write_text(json.dumps({"event": "eval", "step": 24, "tokens": 24 * 8 * 64, "train_loss": 1.0,
                                           "eval_loss": 1.0, "eval_accuracy": 0.5}) + "\n")
    run_dir.write_status("finished", step=24, tokens=24 * 8 * 64)
    return run_dir


def _edit(sweep: Path, runs) -> None:
    sweep.unlink()
    write_tiny_sweep(sweep.parent, runs, name=sweep.stem)


def test_an_edited_sweep_entry_is_not_reported_as_already_finished(tmp_path, capsys):
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    results = tmp_path / "results"
    _finished(results, sweep, tiny_run("la-tiny"))
    before = tree_hashes(results)
    _edit(sweep, [tiny_run("la-tiny", tiny_train(lr=1e-4))])  # edited after it trained
    with pytest.raises(RunError, match=r"trained with a different config: train.lr: 0.003 -> 0.0001.*--results DIR"):
        run_sweep(sweep, results, console=quiet())
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    assert "different config" in capsys.readouterr().err
    with pytest.raises(ResultsError, match=r"la-tiny \(train.lr: 0.003 -> 0.0001\).*restore the entries"):
        load_results(results / "tiny")
    assert main(["compare", str(results / "tiny")]) == 2
    assert tree_hashes(results) == before  # nothing written, nothing lost

    # how a run executes may change between attempts (the README's promise): still the same results
    _edit(sweep, [tiny_run("la-tiny", tiny_train(micro_batch_size=4, recompute="full"))])
    assert [s.state for s in run_sweep(sweep, results, console=quiet())] == ["skipped"]
    assert load_results(results / "tiny").warnings == []


def test_another_sweep_file_of_the_same_name_is_refused(tmp_path):
    first = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    results = tmp_path / "results"
    _finished(results, first, tiny_run("la-tiny"))
    (tmp_path / "copy").mkdir()
    second = write_tiny_sweep(tmp_path / "copy", [tiny_run("dr-tiny")])  # also named "tiny"
    before = tree_hashes(results)
    with pytest.raises(RunError, match=r"holds runs of another sweep file named tiny: .*--results DIR"):
        run_sweep(second, results, console=quiet())
    assert tree_hashes(results) == before
    run_sweep(second, tmp_path / "elsewhere", dry_run=True, console=quiet())  # what the message says works


def test_run_exits_non_zero_for_runs_it_skipped_as_locked_or_failed(tmp_path, capsys):
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    results = tmp_path / "results"
    run_dir = _finished(results, sweep, tiny_run("la-tiny"))
    run_dir.write_status("failed", step=3, tokens=3 * 8 * 64, reason="training loss became nan")
    before = tree_hashes(results)
    assert main(["run", str(sweep), "--results", str(results)]) == 1
    assert "--retry-failed" in capsys.readouterr().out
    run_dir.write_status("interrupted", step=3, tokens=3 * 8 * 64)
    lock = RunLock(run_dir.lock)
    assert lock.acquire() is None
    assert main(["run", str(sweep), "--results", str(results)]) == 75
    assert "another process holds the lock" in capsys.readouterr().err
    lock.release()
    assert {k: v for k, v in tree_hashes(results).items() if k != "tiny/la-tiny/status.json"} == {
        k: v for k, v in before.items() if k != "tiny/la-tiny/status.json"}


def test_locks_this_host_cannot_check_say_how_to_clear_them(tmp_path):
    run_dir = prepare(tmp_path)
    run_dir.lock.write_text(json.dumps({"pid": 1, "host": "another-host"}) + "\n")
    summary = launch_run(run_dir.path)
    assert summary.state == "locked"
    assert f"pid 1 on another-host; if that process no longer runs, delete {run_dir.lock}" in summary.note
    run_dir.lock.write_text("{not json")
    old = time.time() - 60
    os.utime(run_dir.lock, (old, old))
    summary = launch_run(run_dir.path)
    assert summary.state == "locked" and f"{run_dir.lock} cannot be read; if no process trains" in summary.note
    assert run_dir.lock.read_text() == "{not json" and not run_dir.metrics.exists()  # left alone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir.lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}) + "\n"
                            + json.dumps({"pid": dead.pid}) + "\n")
    assert live_holder(run_dir.lock) is None  # every process of it is gone: taken over


# -------------------------------------------------------------------------------------- full disk
class _FullHandle:
    """A file on a full disk: a write fails with ENOSPC, as the kernel reports it."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        self.handle.flush()


def fill_disk_at(monkeypatch, where: str) -> dict:
    """Make every write fail with ENOSPC from the moment the run, past its first checkpoint, next writes
    `where` (checkpoint | metrics | status); returns what the test reads back (the checkpoint's hash then)."""
    disk = {"full": False}

    def fill(path: Path) -> None:
        if not disk["full"]:
            last = path.parent / "checkpoints" / "last.pt" if where != "checkpoint" else path
            disk["full"] = last.is_file()
            if disk["full"]:
                disk["checkpoint"] = hashlib.sha256(last.read_bytes()).hexdigest()

    real_atomic = atomic.write_atomic

    def write_checkpoint(path, write):
        if where == "checkpoint" and path.name == "last.pt":
            fill(path)
        return real_atomic(path, (lambda h: write(_FullHandle(h))) if disk["full"] else write)

    real_text = rundir.write_text_atomic

    def write_text(path, text):
        if where == "status" and path.name == "status.json":
            fill(path)
        if disk["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_text(path, text)

    real_line = rundir.MetricsWriter.write

    def write_line(self, record):
        if where == "metrics":
            fill(Path(self.file.name))
        if disk["full"]:
            self.file.write(b'{"event": "tr')  # as much of the line as fitted
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.file.name)
        return real_line(self, record)

    monkeypatch.setattr(checkpoint, "write_atomic", write_checkpoint)
    monkeypatch.setattr(rundir, "write_text_atomic", write_text)
    monkeypatch.setattr(rundir.MetricsWriter, "write", write_line)
    return disk


@pytest.mark.parametrize("where", ["checkpoint", "metrics", "status"])
def test_a_full_disk_ends_in_one_message_and_loses_nothing(tmp_path, monkeypatch, capsys, where):
    short = tiny_train(total_tokens=12 * 8 * 64, n_evals=3, eval_examples=2)  # checkpoints at steps 1, 4, 12
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny", short)])
    results = tmp_path / "results"
    run_dir = RunDir(results / "tiny" / "la-tiny")
    disk = fill_disk_at(monkeypatch, where)
    assert main(["run", str(sweep), "--results", str(results)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "No space left on device; check that the path exists, is writable and its disk has space" in err
    assert "Traceback" not in err and "unexpected pos" not in err
    assert disk["full"] and run_dir.status().state == "failed"  # not left `running`
    assert "No space left on device" in run_dir.status().reason
    assert hashlib.sha256(run_dir.checkpoint.read_bytes()).hexdigest() == disk["checkpoint"]  # the last one survives
    assert not list(run_dir.checkpoint.parent.glob(".last.pt.*"))  # no half-written temporary left behind
    monkeypatch.undo()  # space freed: the run resumes from that checkpoint
    assert main(["run", str(sweep), "--results", str(results), "--retry-failed"]) == 0
    assert run_dir.status().state == "finished"
    assert_each_step_once(run_dir, log_every_steps=10)


# ---------------------------------------------------------------------------------- smaller ones
def test_possible_with_hints_hold_for_every_variant(monkeypatch):
    """A hint that makes dr match but breaks dr_da (the flags apply to both) is not offered."""
    from matcher.cost.analytic import Conventions
    from matcher.errors import MatchError
    from matcher.plan import alternatives
    from matcher.plan.presets import get_preset
    from matcher.plan.request import Overrides, variant_config
    from matcher.plan.search import MatchSpec

    shape = get_preset("la-tiny")

    def fake_match(config, spec, held, label):
        # dr matches only with top_k 1 or half the depth; dr_da only at half the depth
        ok = config.depth == shape.depth // 2 or (label == "dr" and config.top_k == 1)
        if not ok:
            raise MatchError(f"{label}: no match")
        return object()

    monkeypatch.setattr(alternatives, "match", fake_match)
    spec = MatchSpec(matched=("flops",), align=64, conventions=Conventions(), seq_len=128)
    base, held = variant_config(shape, "dr", Overrides())
    alone = alternatives._suggestions(shape, base, held, "dr", Overrides(), spec, "dr")
    assert "--top-k 1" in alone  # right for dr by itself
    hints = alternatives._suggestions(shape, base, held, "dr", Overrides(), spec, "dr", also=("dr_da",))
    assert hints == [f"--depth {shape.depth // 2}"]
    with pytest.raises(MatchError, match=rf"Possible with --depth {shape.depth // 2}\.$"):
        alternatives._match_or_explain(shape, "dr", Overrides(), spec, "dr", also=("dr_da",))


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_compare_warns_about_a_lost_metrics_file(tmp_path, capsys, damage):
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    run_dir = _finished(tmp_path / "results", sweep, tiny_run("la-tiny"))
    if damage == "deleted":
        run_dir.metrics.unlink()
    else:
        run_dir.metrics.write_bytes(b"")
    before = tree_hashes(tmp_path / "results")
    warnings = load_results(tmp_path / "results" / "tiny").warnings
    word = "missing" if damage == "deleted" else "empty"
    assert warnings == [f"{run_dir.metrics}: {word}, though the run is finished at 12,288 tokens; its points show "
                        "as not reached. Restore the file, or delete the run folder and train it again"]
    assert main(["compare", str(tmp_path / "results" / "tiny")]) == 0
    assert f"warning: {run_dir.metrics}: {word}" in " ".join(capsys.readouterr().err.split())
    assert tree_hashes(tmp_path / "results") == before


def test_a_ctrl_c_while_matcher_run_exits_prints_no_traceback(tmp_path):
    """A second Ctrl-C that lands in an exit hook (here: one that is slow to finish) ends the process
    quietly: no 'Exception ignored in atexit callback' traceback."""
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny")])
    _finished(tmp_path / "results", sweep, tiny_run("la-tiny"))
    script = ("import atexit, os, signal, sys, time\n"
              "from matcher.cli import main\n"
              "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))\n"
              f"sys.exit(main(['run', {str(sweep)!r}, '--results', {str(tmp_path / 'results')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and "stopped" in done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------- fault injection
ROOT = Path(__file__).resolve().parents[1]


def test_fault_injection_quick_mode_recovers_every_fault():
    """bench/faults.py --quick: a 2-process run killed with kill -9 at a random step, its checkpoint
    corrupted, its disk filled; every number in the last line is counted from the run's files."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--quick", "--seed", "3"],
                          env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "3 faults injected, 3 recovered, 0 points lost or doubled", done.stdout
    assert "Traceback" not in done.stderr, done.stderr


def test_fault_injection_counts_lost_and_doubled_points(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import faults
    finally:
        sys.path.remove(str(ROOT / "bench"))
    run_dir, train = faults.make_run(tmp_path, total_steps=8)  # train lines every 2 steps
    lines = [{"event": "train", "step": s, "tokens": 0} for s in (2, 4, 4, 8)]
    lines += [{"event": "eval", "step": s, "tokens": 0} for s in eval_steps(train)]
    run_dir.metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert faults.count_points(run_dir, train) == (1, 1)  # step 6's train line lost, step 4's doubled


def test_a_closed_terminal_stops_the_trainer_the_graceful_way():
    """SIGHUP (the terminal closed) reaches a `--nproc N` trainer as SIGTERM: it checkpoints and stops."""
    from matcher.run.runner import _Forwarder

    child = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                              "print('ready', flush=True)\ntime.sleep(60)"],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout.readline() == "ready\n"
    with _Forwarder() as forwarder:
        forwarder.children.append(child)
        os.kill(os.getpid(), signal.SIGHUP)
        assert child.wait(timeout=30) == 7
    assert forwarder.stopping


def test_the_launchers_tail_follows_a_metrics_file_cut_back_by_a_resume(tmp_path):
    """A resume cuts metrics.jsonl back to its checkpoint and writes on; the launcher's tail, which had
    read past that point, starts over instead of reading half a line (that stopped the launcher)."""
    from matcher.run.progress import MetricsTail

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"event": "train", "step": s, "tokens": s * 100}) + "\n" for s in range(1, 6)]
    path.write_text("".join(lines))
    tail = MetricsTail(path)
    assert [r["step"] for r in tail.new_records()] == [1, 2, 3, 4, 5]
    resumed = lines[:2] + [json.dumps({"event": "resume", "step": 2, "tokens": 200, "pad": "x" * 50}) + "\n"]
    resumed += [json.dumps({"event": "train", "step": s, "tokens": s * 100}) + "\n" for s in (3, 4, 5, 6)]
    path.write_text("".join(resumed))  # longer than before: the old offset now falls inside a line
    assert [r["step"] for r in tail.new_records()] == [1, 2, 2, 3, 4, 5, 6]
    with path.open("a") as handle:
        handle.write(json.dumps({"event": "train", "step": 7, "tokens": 700}) + "\n{cut")
    assert [r["step"] for r in tail.new_records()] == [7]
    assert tail.new_records() == []
