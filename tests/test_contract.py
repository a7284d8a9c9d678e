"""The run folder's contract (matcher.run.contract): every state and its exit code, status.json and
run.yaml round trips, one snapshot for every reader, and the one staleness check."""

import json
from pathlib import Path

import pytest
from test_runner import write_tiny_sweep
from tiny_runs import prepare, tiny_run, tiny_train

from matcher.commands.status import run_status
from matcher.plan.sweep import load_sweep
from matcher.run import runner
from matcher.run.contract import (
    WRITTEN_STATES,
    ExitCode,
    Outcome,
    RunInfo,
    RunState,
    Status,
    stale_runs,
)
from matcher.run.progress import RunSummary
from matcher.run.rundir import RunDir
from matcher.run.slurm import SlurmOptions, job_script

# The whole table, written out: the per-run entry's exit code for every outcome, and what a Slurm task
# does on that code (matcher.run.slurm's requeue protocol).
TABLE = {
    Outcome.NEW: (0, "end"), Outcome.RUNNING: (0, "end"), Outcome.FINISHED: (0, "end"),
    Outcome.FAILED: (1, "end"), Outcome.INTERRUPTED: (3, "requeue"), Outcome.UNKNOWN: (0, "end"),
    Outcome.SKIPPED: (0, "end"), Outcome.LOCKED: (75, "end"), Outcome.PLANNED: (0, "end"),
    Outcome.SUBMITTED: (0, "end"),
}


def test_every_outcome_has_its_exit_code_through_the_per_run_entry(tmp_path, monkeypatch):
    assert set(TABLE) == set(Outcome)
    run_dir = prepare(tmp_path)
    script = job_script(sweep_name="tiny", sweep_dir=tmp_path, run_names=["la-tiny"], options=SlurmOptions(),
                        fsdp=False)
    lines = script.splitlines()
    requeued_on = [int(line.split("-eq ")[1].split(" ]")[0]) for i, line in enumerate(lines)
                   if "-eq" in line and any("scontrol requeue" in later for later in lines[i + 1:i + 4])]
    assert requeued_on == [3]
    for outcome, (code, on_slurm) in TABLE.items():
        monkeypatch.setattr(runner, "launch_run", lambda *args, outcome=outcome, **kwargs: RunSummary(
            run="la-tiny", state=outcome))
        assert runner.main([str(run_dir.path)]) == code == ExitCode.of(outcome) == ExitCode.of(outcome.value)
        assert ("requeue" if code in requeued_on else "end") == on_slurm, outcome
    assert runner.main([str(tmp_path / "nothing-here")]) == ExitCode.USER_ERROR == 2


def test_states_print_and_compare_as_their_names():
    assert {state.value for state in RunState} <= {outcome.value for outcome in Outcome}  # a state is an outcome
    assert str(RunState.FINISHED) == f"{RunState.FINISHED}" == "finished" == RunState.FINISHED
    assert json.dumps({"state": Outcome.LOCKED}) == '{"state": "locked"}'
    assert {"finished": "green"}.get(Outcome.FINISHED) == "green"


@pytest.mark.parametrize("state", WRITTEN_STATES)
def test_status_json_round_trips(tmp_path, state):
    run_dir = RunDir(tmp_path)
    run_dir.write_status(state, step=3, tokens=96, reason="why", os_error=(28, "No space left on device", None))
    status = run_dir.status()
    assert (status.state, status.step, status.tokens, status.reason) == (state, 3, 96, "why")
    assert status.os_error == (28, "No space left on device", None) and status.updated
    assert list(json.loads(run_dir.status_json.read_text())) == ["state", "reason", "step", "tokens", "updated",
                                                                 "os_error"]


def test_status_of_a_folder_never_started_and_of_a_damaged_file(tmp_path):
    assert Status.read(tmp_path / "status.json") == (Status(state=RunState.NEW), None)
    (tmp_path / "status.json").write_text('{"state": "sleeping"}')
    status, problem = Status.read(tmp_path / "status.json")
    assert status.state == RunState.UNKNOWN and "got 'sleeping'" in problem and status.reason == problem


def test_run_yaml_holds_typed_configs_built_from_the_sweep_run(tmp_path):
    run = tiny_run("dr-tiny", tiny_train(lr=2e-3), role="variant")
    run_dir = prepare(tmp_path, run)
    info = run_dir.read_run_info()
    assert info == RunInfo.from_run(run, "tests")
    assert info.model == run.model and info.train.lr == 2e-3 and info.variant == "dr" and info.role == "variant"
    problems, broken = RunInfo.from_dict({**info.to_dict(), "train": {**info.to_dict()["train"], "lr": "fast"}},
                                         "run.yaml")
    assert broken is None and problems and "lr" in problems[0]


def test_one_snapshot_feeds_the_runner_and_status(tmp_path):
    run_dir = prepare(tmp_path)
    lines = [{"event": "train", "step": 4, "tokens": 2048, "train_loss": 3.0, "tokens_per_s": 900.0},
             {"event": "eval", "step": 6, "tokens": 3072, "eval_accuracy": 0.25, "tokens_per_s": 1000.0},
             {"event": "train", "step": 8, "tokens": 4096, "train_loss": 2.5, "tokens_per_s": 1100.0}]
    run_dir.metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run_dir.write_status("interrupted", step=6, tokens=3072, reason="stopped by SIGTERM")
    snapshot = run_dir.snapshot()
    assert (snapshot.step, snapshot.tokens, snapshot.tokens_per_s) == (8, 4096, 1100.0)
    assert snapshot.last_eval["eval_accuracy"] == 0.25 and snapshot.budget_tokens == 24 * 8 * 64
    summary = runner.summarize(run_dir)
    assert (summary.state, summary.tokens, summary.eval_accuracy, summary.note) == (
        Outcome.INTERRUPTED, 3072, 0.25, "stopped by SIGTERM")
    status = run_status(run_dir)
    assert (status.state, status.tokens, status.total_tokens, status.tokens_per_s) == (
        RunState.INTERRUPTED, 4096, snapshot.budget_tokens, 1100.0)


def _sweep(folder: Path, lr: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_sweep(folder, [tiny_run("la-tiny", tiny_train(lr=lr)), tiny_run("dr-tiny", role="variant")])


def test_stale_runs_tells_edited_foreign_and_gone_runs_apart(tmp_path):
    sweep = _sweep(tmp_path, lr=1e-3)
    other = _sweep(tmp_path / "other", lr=1e-3)
    runs = load_sweep(sweep).runs
    recorded = {run.name: RunInfo.from_run(run, "tiny", str(sweep)).to_dict() for run in runs}
    assert stale_runs(recorded, against=(str(sweep), runs)).edited == []
    assert stale_runs(recorded).edited == [] and stale_runs(recorded).gone == []

    edited = _sweep(tmp_path / "edited", lr=2e-3)
    check = stale_runs(recorded, against=(str(edited), load_sweep(edited).runs))
    assert [(folder, changes) for folder, _, changes in check.edited] == [("la-tiny", ["train.lr: 0.001 -> 0.002"])]
    assert sorted(check.foreign) == [("dr-tiny", str(sweep)), ("la-tiny", str(sweep))]  # that file exists

    recorded["dr-tiny"]["sweep_file"] = str(other)
    recorded["la-tiny"]["run"] = "la-gone"
    check = stale_runs(recorded)  # compare: each folder against the file it recorded
    assert check.gone == [("la-tiny", str(sweep))] and check.edited == []
    assert check.sweep_files == {str(sweep): ["la-tiny"], str(other): ["dr-tiny"]}
