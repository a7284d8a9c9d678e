"""Dashboards (train.dashboards): the TensorBoard event files hold the values of metrics.jsonl, also after a
crash and resume (purge_step: no point doubled); the W&B sink gets every line, on one W&B run that a
resumed run continues; offline W&B works with no network; settings are checked like the other fields."""

import importlib.machinery
import json
import os
import signal
import sys
import types

import pytest
from tiny_runs import prepare, tiny_run, tiny_train

from matcher.errors import ConfigError
from matcher.run import dashboards
from matcher.run.runner import launch_run
from matcher.run.trainer import train_run


def _crash_at_train_step(step: int):
    def on_record(line):
        if line["event"] == "train" and line["step"] == step:
            raise RuntimeError("simulated crash")  # past the last checkpoint: these lines are written again

    return on_record


def test_tensorboard_holds_the_values_of_metrics_jsonl_after_a_crash_and_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(dashboards=["tensorboard"])))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(run_dir.path, log_every_steps=5, on_record=_crash_at_train_step(20))
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    assert len(list(run_dir.tensorboard.glob("events.out.tfevents.*"))) == 2  # one per attempt

    events = EventAccumulator(str(run_dir.tensorboard))
    events.Reload()
    logged = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in run_dir.read_metrics():
        for tag, value in dashboards.scalars(line).items():
            expected.setdefault(tag, []).append((line["step"], value))
    assert set(logged) == set(expected)
    assert {"train/train_loss", "eval/eval_accuracy", "eval/eval_loss", "eval/expert_gini/0"} <= set(logged)
    for tag, points in expected.items():
        # the first attempt's steps 10-20 were purged: each step once, as in metrics.jsonl
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], tag
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


class FakeWandb(types.ModuleType):
    """Records what the sink asks of wandb."""

    def __init__(self):
        super().__init__("wandb")
        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        self.inits, self.logged, self.finished = [], [], 0
        self.Settings = lambda **kwargs: kwargs

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, data, step):
                fake.logged.append((step, data))

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_gets_every_line_and_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run_dir = prepare(tmp_path, tiny_run("dr-tiny", tiny_train(dashboards=["wandb"])))

    _interrupt_then_resume(run_dir, at_step=10)
    run_id = run_dir.wandb_id.read_text().strip()
    assert len(run_id) == 12
    info = run_dir.read_run_info().to_dict()
    assert len(fake.inits) == 2 and fake.finished == 2
    for init in fake.inits:
        assert (init["id"], init["resume"], init["group"], init["job_type"], init["name"]) == \
            (run_id, "allow", "tests", "dr", "dr-tiny")
        assert init["config"] == info and init["dir"] == str(run_dir.path)
    lines = run_dir.read_metrics()
    assert fake.logged == [(line["step"], dashboards.scalars(line)) for line in lines]


@pytest.mark.slow
def test_offline_wandb_needs_no_network_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(dashboards=["wandb"], total_tokens=12 * 8 * 64)))

    _interrupt_then_resume(run_dir, at_step=5)
    run_id = run_dir.wandb_id.read_text().strip()
    attempts = sorted((run_dir.path / "wandb").glob(f"offline-run-*-{run_id}*"))
    assert len(attempts) == 2 and all((a / f"run-{run_id}.wandb").is_file() for a in attempts)


def test_a_missing_dashboard_package_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(dashboards.PACKAGES, "tensorboard", "no_such_package_for_matcher")
    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(dashboards=["tensorboard"])))
    summary = launch_run(run_dir.path)
    assert summary.state == "failed" and "pip install 'matcher[tensorboard]'" in summary.note
    assert not run_dir.metrics.exists() or run_dir.read_metrics() == []


def test_dashboards_are_checked_and_may_change_between_attempts(tmp_path):
    with pytest.raises(ConfigError, match="unknown dashboard 'tensorbord' \\(did you mean 'tensorboard'\\?\\)"):
        tiny_train(dashboards=["tensorbord"])
    with pytest.raises(ConfigError, match="lists one twice"):
        tiny_train(dashboards=["wandb", "wandb"])
    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    prepare(tmp_path, tiny_run("la-tiny", tiny_train(dashboards=["tensorboard", "wandb"])))  # no clash
    assert run_dir.read_run_info().train.dashboards == ["tensorboard", "wandb"]


def test_scalars_of_a_metrics_line():
    line = {"event": "eval", "step": 5, "tokens": 2560, "eval_accuracy": 0.5, "mfu": None, "loss": "nan",
            "expert_gini": [0.1, 0.2], "expert_load": [[0.5, 0.5]], "flag": True}
    assert dashboards.scalars(line) == {"eval/tokens": 2560.0, "eval/eval_accuracy": 0.5,
                                        "eval/expert_gini/0": 0.1, "eval/expert_gini/1": 0.2}
    assert json.dumps(dashboards.scalars({"event": "resume", "step": 3, "tokens": 9})) == '{"resume/tokens": 9.0}'


def _interrupt_then_resume(run_dir, at_step: int) -> None:
    """SIGINT after train step `at_step`, then resume to the end."""
    def interrupt(line):
        if line["event"] == "train" and line["step"] == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    assert train_run(run_dir.path, log_every_steps=5, on_record=interrupt).state == "interrupted"
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
