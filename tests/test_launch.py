"""`matcher plan` before launch: GPU-hours per run and per sweep at a named device and MFU, and the
training tokens each run reads against those on disk."""

import json

import pytest

from matcher.cli import main
from matcher.cost.gpu_hours import DEVICES, gpu_hours
from matcher.data.encode import encode_corpus
from matcher.data.tokenizer import CHAR
from matcher.errors import ConfigError
from matcher.plan.launch import launch_cost
from matcher.plan.planner import make_plan
from matcher.plan.request import PlanRequest


def test_gpu_hours_are_model_flops_over_peak_times_mfu():
    assert gpu_hours(989e12 * 0.4 * 3600, "h100", 0.4) == pytest.approx(1.0)
    assert gpu_hours(312e12 * 0.5 * 7200, "A100", 0.5) == pytest.approx(2.0)
    assert DEVICES["h200"].peak_bf16_flops == DEVICES["h100"].peak_bf16_flops  # same Hopper compute
    assert all(device.source for device in DEVICES.values())


def test_the_sweep_costs_every_grid_point_and_seed():
    plan = make_plan(PlanRequest(target="la-tiny", variants="dr", seeds="0,1,2", grid=["train.lr=1e-3,3e-3"],
                                 gpu="a100", mfu=0.3))
    launch = launch_cost(plan, "a100", 0.3)
    assert [g.group for g in launch.groups] == ["la-tiny-lr1e-3", "la-tiny-lr3e-3", "dr-lr1e-3", "dr-lr3e-3"]
    expected = sum(3 * run.predicted["train_flops_per_token"] * plan.train.total_tokens / (312e12 * 0.3) / 3600
                   for run in plan.runs for _ in range(2))
    assert launch.total_gpu_hours == pytest.approx(expected, rel=1e-12)
    assert launch.data[0].source == "math" and launch.data[0].tokens_on_disk is None


def test_a_gridded_token_budget_is_costed_per_point():
    plan = make_plan(PlanRequest(target="la-tiny", variants="dr", grid=["train.total_tokens=x0.5,x1"]))
    tokens = [g.tokens_per_run for g in launch_cost(plan, "h100", 0.4).groups]
    assert tokens[1] == plan.train.total_tokens and tokens[0] == round(plan.train.total_tokens * 0.5)


def test_a_corpus_smaller_than_a_run_is_announced_as_a_repeat(tmp_path, capsys):
    corpus = tmp_path / "corpus text.txt"
    corpus.write_text("two plus two is four. " * 200, encoding="utf-8")
    shards = tmp_path / "shards"
    held = encode_corpus([corpus], CHAR, shards, progress=False).manifest["tokens"]
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--dry-run", "--no-measure", "--tokens", "1e6",
                 "--set", f"train.data={shards}", "--gpu", "h200", "--mfu", "0.5", "--json"]) == 0
    captured = capsys.readouterr()
    launch = json.loads(captured.out)["launch"]
    assert launch["gpu"] == "h200" and launch["mfu"] == 0.5 and "H200" in launch["peak_source"]
    supply = launch["data"][0]
    assert supply["tokens_on_disk"] == held and supply["tokens_needed"] == json.loads(captured.out)["train"][
        "total_tokens"]
    assert supply["epochs"] == pytest.approx(supply["tokens_needed"] / held)
    assert "the data repeats" in " ".join(captured.err.split())


@pytest.mark.parametrize("options, message", [
    ({"gpu": "tpu9"}, "--gpu tpu9: unknown device; known (peak dense bf16): h100 989 TFLOP/s"),
    ({"mfu": 1.5}, "--mfu is the share of the device's peak the training reaches, between 0 and 1"),
    ({"mfu": 0}, "between 0 and 1 (such as 0.4), got 0"),
])
def test_device_and_mfu_errors(options, message):
    with pytest.raises(ConfigError) as caught:
        PlanRequest(target="la-tiny", **options)
    assert message in " ".join(str(caught.value).split())
