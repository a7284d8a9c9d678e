"""`matcher status`: one table (or JSON) of every run of a sweep from its run folders: a finished sweep, a
running run with its ETA and Slurm job, a failed one with its reason, a killed one; --watch until done."""

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from tiny_runs import prepare, tiny_run, tiny_train

from matcher.cli import main
from matcher.commands import status as status_module
from matcher.commands.status import duration, status_command, sweep_status
from matcher.run.lock import RunLock

FIXTURE = Path(__file__).parent / "data" / "results_fixture"


def record(console: Console) -> str:
    return console.file.getvalue()


def test_status_of_a_finished_sweep(capsys):
    assert main(["status", str(FIXTURE)]) == 0
    table = capsys.readouterr().out
    assert "results_fixture: 3/4 finished" in table
    for run in ("la-tiny-s0", "dr-tiny-s0", "dr-tiny-s1", "dr_da-tiny-s0"):
        assert run in table
    assert "train loss is NaN at step 40" in table and "80.0% @131k" in table
    assert table.index("la-tiny-s0") < table.index("dr-tiny-s0") < table.index("dr_da-tiny-s0")  # target first


def test_status_json_shape(capsys):
    assert main(["status", str(FIXTURE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"sweep", "path", "runs", "mfu"} and data["sweep"] == "results_fixture"
    assert data["mfu"] is None  # the fixture's runs name no sweep file that records an assumed MFU
    assert [run["run"] for run in data["runs"]] == ["la-tiny-s0", "dr-tiny-s0", "dr-tiny-s1", "dr_da-tiny-s0"]
    keys = {"run", "state", "step", "tokens", "total_tokens", "eval_accuracy", "eval_tokens", "tokens_per_s",
            "eta_s", "slurm_job", "reason", "updated", "role", "variant", "mfu", "device"}
    assert all(set(run) == keys for run in data["runs"])
    failed = data["runs"][-1]
    assert (failed["state"], failed["step"], failed["tokens"], failed["total_tokens"]) == \
        ("failed", 40, 40960, 131072)
    assert failed["eval_accuracy"] == 0.35 and failed["eta_s"] is None and "NaN" in failed["reason"]


def _running(folder: Path):
    """A run mid-way: status.json running at step 12, a train line at 1000 tokens/s, env.json from Slurm."""
    run_dir = prepare(folder, tiny_run("la-tiny", tiny_train()))
    run_dir.write_status("running", step=12, tokens=12 * 512)
    run_dir.metrics.write_text(
        json.dumps({"event": "eval", "step": 5, "tokens": 2560, "eval_accuracy": 0.25, "tokens_per_s": 900.0})
        + "\n" + json.dumps({"event": "train", "step": 10, "tokens": 5120, "train_loss": 3.0,
                             "tokens_per_s": 1000.0}) + "\n")
    run_dir.write_env({"slurm_job": "4242_3", "world_size": 16})
    return run_dir


def test_a_running_run_shows_its_eta_and_slurm_job(tmp_path):
    run_dir = _running(tmp_path)
    lock = RunLock(run_dir.lock)
    assert lock.acquire() is None
    try:
        _, (run,) = sweep_status(tmp_path)
    finally:
        lock.release()
    assert (run.state, run.step, run.tokens, run.total_tokens) == ("running", 12, 6144, 24 * 512)
    assert run.eval_accuracy == 0.25 and run.eval_tokens == 2560 and run.tokens_per_s == 1000.0
    assert run.eta_s == pytest.approx((24 * 512 - 6144) / 1000.0)
    assert run.slurm_job == "4242_3" and run.reason is None

    _, (killed,) = sweep_status(tmp_path)  # nobody holds its lock any more
    assert killed.state == "running" and "its trainer was killed" in killed.reason


def test_a_failed_run_and_an_unreadable_one(tmp_path):
    failed = prepare(tmp_path, tiny_run("dr-tiny", role="variant"))
    failed.write_status("failed", step=3, tokens=1536, reason="training loss became nan at step 3")
    broken = tmp_path / "la-tiny"
    broken.mkdir()
    (broken / "run.yaml").write_text("run: [\n")
    console = Console(file=io.StringIO(), width=250)
    status_command(tmp_path, console=console)
    table = record(console)
    assert "training loss became nan at step 3" in table
    assert "not valid YAML" in table
    _, runs = sweep_status(tmp_path)
    assert {r.run: r.state for r in runs} == {"dr-tiny": "failed", "la-tiny": "new"}


def test_watch_redraws_until_every_run_is_done(tmp_path, monkeypatch):
    run_dir = _running(tmp_path)
    draws = []

    def sleep(seconds):
        draws.append(seconds)
        if len(draws) == 2:
            run_dir.write_status("finished", step=24, tokens=24 * 512)

    monkeypatch.setattr(status_module.time, "sleep", sleep)
    console = Console(file=io.StringIO(), width=250)
    lock = RunLock(run_dir.lock)  # a live trainer
    assert lock.acquire() is None
    try:
        assert status_command(tmp_path, watch=True, interval_s=0.5, console=console) == 0
    finally:
        lock.release()
    assert draws == [0.5, 0.5] and "1/1 finished" in record(console)


@pytest.mark.parametrize("fault", ["killed", "unreadable"])
def test_watch_reports_a_dead_run_and_exits_1(tmp_path, monkeypatch, capsys, fault):
    """A trainer killed (status.json says running, nobody holds the lock) or a status.json that cannot be
    read: nothing will change, so --watch says so and ends with exit 1, printing off a terminal too."""
    run_dir = _running(tmp_path)
    if fault == "unreadable":
        run_dir.status_json.write_text("{not json")
    sleeps = []
    monkeypatch.setattr(status_module.time, "sleep", sleeps.append)
    assert main(["status", str(tmp_path), "--watch", "--interval", "0.5"]) == 1
    out, err = capsys.readouterr()
    assert sleeps == [0.5]  # read twice, a watch interval apart, then ended
    assert "la-tiny" in out and "0/1 finished" in out  # the table, although stdout is not a terminal
    message = " ".join(err.split())
    assert "watch ended: no run is training or waiting for Slurm; not finished: la-tiny" in message
    assert ("its trainer was killed" if fault == "killed" else "not valid JSON") in message


def test_watch_off_a_terminal_prints_the_table_when_it_changes(tmp_path, monkeypatch):
    run_dir = _running(tmp_path)
    steps = iter([12, 12, 18])

    def sleep(seconds):
        step = next(steps, None)
        if step is None:
            run_dir.write_status("finished", step=24, tokens=24 * 512)
        else:
            run_dir.write_status("running", step=step, tokens=step * 512)

    monkeypatch.setattr(status_module.time, "sleep", sleep)
    console = Console(file=io.StringIO(), width=250, force_terminal=False)
    lock = RunLock(run_dir.lock)
    assert lock.acquire() is None
    try:
        assert status_command(tmp_path, watch=True, interval_s=0.5, console=console) == 0
    finally:
        lock.release()
    tables = record(console).count("la-tiny")
    assert tables == 3  # the first read, step 18, finished: the unchanged reads print nothing


def test_ctrl_c_ends_watch_with_exit_0(tmp_path, monkeypatch, capsys):
    _running(tmp_path)

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(status_module.time, "sleep", interrupted)
    assert main(["status", str(tmp_path), "--watch"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_watch_and_json_together_are_one_error(capsys):
    assert main(["status", str(FIXTURE), "--watch", "--json"]) == 2
    assert "--json prints the status once" in capsys.readouterr().err


def test_a_results_folder_with_one_sweep_is_found(tmp_path, capsys):
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sweep"] == "fixture"


def test_durations():
    assert [duration(s) for s in (None, 20, 600, 3725, 2 * 86400 + 7200)] == ["-", "20s", "10m", "1h02m", "2d02h"]


def test_measured_mfu_against_the_plans_assumption(tmp_path, monkeypatch, capsys):
    """plan --gpu --mfu records the assumption in sweep meta; status sets the runs' measured MFU against it."""
    from matcher.plan.sweep import load_sweep
    from matcher.run.contract import RunInfo
    from matcher.run.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--target", "la-tiny", "--gpu", "a100", "--mfu", "0.3", "--no-measure"]) == 0
    sweep_file = tmp_path / "sweeps" / "la-tiny-vs-dr-dr_da.yaml"
    sweep = load_sweep(sweep_file)
    assert (sweep.meta.gpu, sweep.meta.assumed_mfu) == ("a100", 0.3)
    capsys.readouterr()
    folder = tmp_path / "results" / "la-tiny-vs-dr-dr_da"
    for run, mfu in zip(sweep.runs, (0.12, 0.18, None)):
        run_dir = RunDir(folder / run.name)
        run_dir.path.mkdir(parents=True)
        run_dir.write_run_info(RunInfo.from_run(run, sweep_file.stem, sweep_file=str(sweep_file.resolve())))
        run_dir.write_status("running", step=5, tokens=2560)
        run_dir.metrics.write_text(json.dumps({"event": "eval", "step": 5, "tokens": 2560, "eval_accuracy": 0.1,
                                               "tokens_per_s": 900.0, "mfu": mfu}) + "\n")
        run_dir.write_env({"device": "NVIDIA A100-SXM4-80GB"})
    assert main(["status", str(folder)]) == 0
    table = " ".join(capsys.readouterr().out.split())
    assert "MFU measured 0.15 (mean of 2 run(s)' last eval on NVIDIA A100-SXM4-80GB) against the plan assumed " \
           "MFU 0.3 on a100 (--mfu, --gpu): the plan's GPU-hours are 2.00x too few" in table
    assert "0.120" in table and "0.180" in table  # the MFU column
    assert main(["status", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mfu"]["assumed_mfu"] == 0.3 and data["mfu"]["measured_mfu"] == pytest.approx(0.15)
    assert [run["mfu"] for run in data["runs"]] == [0.12, 0.18, None]


def test_mfu_line_before_any_run_reports_one():
    from matcher.commands.status import RunStatus, mfu_against_plan

    run = RunStatus(run="a", state="running", step=1, tokens=1, total_tokens=2, eval_accuracy=None, eval_tokens=None,
                    tokens_per_s=None, eta_s=None, slurm_job=None, reason=None, updated=None, role="target",
                    variant="la")
    assert mfu_against_plan([run], {}) is None  # a sweep written before the assumption was recorded
    waiting = mfu_against_plan([run], {"gpu": "h100", "assumed_mfu": 0.4})
    assert str(waiting) == "MFU: no run reports one yet (measured on CUDA in bf16); the plan assumed MFU 0.4 on h100 " \
                           "(--mfu, --gpu)"
    import dataclasses

    fast = dataclasses.replace(run, mfu=0.41)
    assert str(mfu_against_plan([fast], {"gpu": "h100", "assumed_mfu": 0.4})).endswith("the plan's GPU-hours hold")
    slow = dataclasses.replace(run, mfu=0.8)
    assert str(mfu_against_plan([slow], {"gpu": "h100", "assumed_mfu": 0.4})).endswith("2.00x too many")
