"""The training loop of one run: it learns, its files follow the results format, a crashed, killed or
interrupted run resumes to the same metrics as an uninterrupted one, a NaN loss fails it cleanly, and
two-process DDP/FSDP2 on gloo matches one process."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tiny_runs import comparable, prepare, tiny_run, tiny_train

from matcher.data import shards, streams
from matcher.errors import MatcherError, RunError
from matcher.run.contract import ExitCode
from matcher.run.rundir import RunDir
from matcher.run.runner import launch_run
from matcher.run.schedule import eval_steps, wsd_lr
from matcher.run.throughput import gini, mfu, peak_flops
from matcher.run.trainer import make_optimizer, set_lr, train_run

# ------------------------------------------------------------------------------ schedule, stats


def test_wsd_schedule():
    cfg = tiny_train(total_tokens=100 * 8 * 64, lr=1.0, warmup_fraction=0.1, decay_fraction=0.2,
                     min_lr_ratio=0.1)
    lrs = [wsd_lr(step, cfg) for step in range(100)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10:80] == [1.0] * 70
    assert lrs[80:] == pytest.approx([1 - 0.9 * (i + 1) / 20 for i in range(20)])
    assert lrs[-1] == pytest.approx(0.1)
    flat = tiny_train(total_tokens=10 * 8 * 64, lr=2.0, warmup_fraction=0.0, decay_fraction=0.0)
    assert [wsd_lr(step, flat) for step in range(10)] == [2.0] * 10


def test_eval_steps():
    cfg = tiny_train(total_tokens=1000 * 8 * 64, n_evals=4)
    assert eval_steps(cfg) == [1, 10, 100, 1000]  # log-spaced from one step to the end
    assert eval_steps(tiny_train(total_tokens=50 * 512, eval_tokens=[512, 700, 10**9])) == [1, 2, 50]
    assert eval_steps(tiny_train(total_tokens=7 * 512, n_evals=1)) == [7]
    # log-spaced points that round onto the same step move to the next free one: exactly n_evals points
    crowded = tiny_train(total_tokens=10 * 512, n_evals=8)  # rounded up: 1, 2, 2, 3, 4, 6, 8, 10 (7 distinct)
    assert eval_steps(crowded) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert eval_steps(tiny_train(total_tokens=8 * 512, n_evals=8)) == list(range(1, 9))
    with pytest.raises(MatcherError, match="n_evals 8 is more eval points than the run's 7 steps"):
        tiny_train(total_tokens=7 * 512, n_evals=8)


def test_throughput_stats():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32") is None and peak_flops(None, "bf16") is None
    assert mfu(6e9, 1e4, 312e12, 2) == pytest.approx(6e9 * 1e4 / 624e12)
    assert mfu(6e9, 1e4, None, 1) is None
    assert gini([0.25] * 4) == 0 and gini([0, 0, 0, 1]) == pytest.approx(0.75)
    assert gini([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)  # mean |xi - xj| / (2 mean), by hand


# -------------------------------------------------------------------------------- a whole run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> RunDir:
    """dr_da-tiny trained without interruption (the resume tests compare against it)."""
    run_dir = prepare(tmp_path_factory.mktemp("reference"), tiny_run("dr_da-tiny"))
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    return run_dir


def test_tiny_run_learns_and_writes_the_results_format(tmp_path):
    train = tiny_train(total_tokens=60 * 16 * 64, batch_size=16, n_evals=3, lr=1e-2)
    run_dir = prepare(tmp_path, tiny_run("la-tiny", train))
    result = train_run(run_dir.path, log_every_steps=10)
    assert (result.state, result.step, result.tokens) == ("finished", 60, 60 * 16 * 64)

    lines = run_dir.read_metrics()
    evals = [line for line in lines if line["event"] == "eval"]
    trains = [line for line in lines if line["event"] == "train"]
    assert [e["step"] for e in evals] == eval_steps(train) == [1, 8, 60]
    assert [t["step"] for t in trains] == [10, 20, 30, 40, 50, 60]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 1.0
    assert trains[-1]["train_loss"] < trains[0]["train_loss"] - 1.0
    for e in evals:
        assert set(e) == {"event", "step", "tokens", "unique_tokens", "train_loss", "eval_loss", "eval_loss_answer",
                          "eval_loss_chain", "eval_accuracy", "eval_accuracy_low", "eval_accuracy_high", "eval_bpb",
                          "eval_n", "eval_correct", "eval_setting", "tokens_per_s", "mfu", "peak_memory_bytes",
                          "expert_load", "expert_gini", "elapsed_s", "val_loss", "val_bpb", "val_tokens"}
        assert min(e["eval_loss_answer"], e["eval_loss_chain"]) <= e["eval_loss"] <= max(
            e["eval_loss_answer"], e["eval_loss_chain"])  # their token-weighted mean
        assert (run_dir.path / "evals" / str(e["step"]) / f"embedded.{e['eval_setting'][:8]}.samples.jsonl").is_file()
        assert e["eval_n"] == 3 and len(e["eval_correct"]) == 3
        assert e["val_tokens"] == evals[0]["val_tokens"] > 0  # the same held-out windows at every eval point
        assert e["eval_accuracy_low"] <= e["eval_accuracy"] <= e["eval_accuracy_high"]
        assert e["tokens"] == e["step"] * 16 * 64 and 0 <= e["eval_accuracy"] <= 1
        assert e["unique_tokens"] == e["tokens"]  # generated data never repeats
        assert e["mfu"] is None and e["peak_memory_bytes"] is None  # CPU
        assert np.array(e["expert_load"]).shape == (4, 4)  # 4 applied depths x 4 experts
        assert np.allclose(np.sum(e["expert_load"], axis=1), 1, atol=1e-4)
        assert all(0 <= g < 0.75 for g in e["expert_gini"])
    # An eval's load counts every step since the previous eval: 16 x 64 tokens x top-2 assignments a step
    # and depth, so share x 2048 x steps is a whole number of tokens (share x 2048 alone, for one step).
    for before, e in zip([0] + [e["step"] for e in evals], evals):
        assignments = np.array(e["expert_load"]) * 2048 * (e["step"] - before)
        assert np.allclose(assignments, np.round(assignments), atol=0.05)
    last_step_only = np.array(evals[-1]["expert_load"]) * 2048
    assert not np.allclose(last_step_only, np.round(last_step_only), atol=0.05)
    assert trains[0]["lr"] == pytest.approx(wsd_lr(9, train))

    assert run_dir.status().state == "finished" and run_dir.status().tokens == 60 * 16 * 64
    env = json.loads(run_dir.env_json.read_text())
    assert env["device"] == "cpu" and env["dtype"] == "fp32" and env["world_size"] == 1
    assert str(tmp_path) not in run_dir.env_json.read_text()
    assert run_dir.checkpoint.is_file()
    assert sorted(p.name for p in run_dir.checkpoint.parent.glob("*.safetensors")) == [
        "step-00000001.safetensors", "step-00000008.safetensors", "step-00000060.safetensors"]


def _crash_after(n_evals: int):
    seen = []

    def on_record(line):
        seen.append(line["event"])
        if seen.count("eval") == n_evals:
            raise RuntimeError("simulated crash")  # after the eval line, before its checkpoint

    return on_record


def test_crash_and_resume_match_an_uninterrupted_run(tmp_path, reference):
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(run_dir.path, log_every_steps=5, on_record=_crash_after(2))
    assert run_dir.status().state == "failed"
    assert "simulated crash" in run_dir.status().reason
    written = [line["event"] for line in run_dir.read_metrics()]
    assert written.count("eval") == 2  # the second eval line is past the last checkpoint

    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    lines = run_dir.read_metrics()
    assert [line["event"] for line in lines].count("resume") == 1
    assert comparable(run_dir) == comparable(reference)  # the cut eval line was written once, again


def test_sigint_checkpoints_and_resumes_identically(tmp_path, reference):
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny"))

    def interrupt(line):
        if line["event"] == "train" and line["step"] == 10:
            os.kill(os.getpid(), signal.SIGINT)

    result = train_run(run_dir.path, log_every_steps=5, on_record=interrupt)
    # The ranks vote on stopping inside each step; a signal after step 10's vote stops after step 11.
    assert (result.state, result.step) == ("interrupted", 11)
    assert run_dir.status().state == "interrupted" and "SIGINT" in run_dir.status().reason
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    assert comparable(run_dir) == comparable(reference)


@pytest.mark.slow
def test_sigkill_and_resume_match_an_uninterrupted_run(tmp_path, reference):
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen([sys.executable, "-m", "matcher.run.trainer", str(run_dir.path),
                               "--log-every-steps", "5"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not run_dir.checkpoint.is_file() and worker.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)  # no handler runs: whatever was written after the checkpoint stays
    worker.wait()
    assert run_dir.checkpoint.is_file()
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    assert comparable(run_dir) == comparable(reference)


def test_nan_loss_fails_the_run_with_its_step(tmp_path):
    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(lr=1e30, warmup_fraction=0.0)))
    result = train_run(run_dir.path, log_every_steps=1)
    assert result.state == "failed"
    status = run_dir.status()
    assert status.state == "failed" and f"at step {result.step}" in status.reason
    assert "lower lr" in status.reason
    nan_line = run_dir.read_metrics()[-1]
    assert nan_line["event"] == "nan" and not math.isfinite(float(nan_line["loss"]))
    assert result.step < tiny_train().total_steps


def test_shard_data_and_jsonl_eval(tmp_path):
    stream = streams.MathStream(seed=9, n_steps=2, seq_len=255, vocab_size=128)
    shards.write_shard(tmp_path / "data" / "train.bin", np.concatenate([stream.row(i) for i in range(40)]))
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text("\n".join(json.dumps({"question": f"x={i}; y=x+1; y?",
                                           "answer": f"x={i}, y={i + 1} #### {i + 1}"}) for i in range(3)))
    train = tiny_train(data=str(tmp_path / "data"), eval_data=str(jsonl), n_evals=2, total_tokens=8 * 8 * 64)
    run_dir = prepare(tmp_path, tiny_run("dr-tiny", train))
    assert train_run(run_dir.path).state == "finished"
    evals = [line for line in run_dir.read_metrics() if line["event"] == "eval"]
    assert len(evals) == 2 and all(e["eval_accuracy"] in (0, 1 / 3, 2 / 3, 1) for e in evals)
    assert all(e["eval_loss"] > 0 for e in evals)


def test_data_error_fails_the_run_with_its_message(tmp_path):
    run_dir = prepare(tmp_path, tiny_run("la-tiny", tiny_train(eval_data=str(tmp_path / "missing.jsonl"))))
    summary = launch_run(run_dir.path)
    assert summary.state == "failed" and "missing.jsonl: no such eval file" in summary.note
    assert run_dir.status().state == "failed"


# ------------------------------------------------------------------------------- data parallel


@pytest.mark.slow
@pytest.mark.parametrize(("fsdp", "micro"), [(False, 0), (False, 2), (True, 2)],
                         ids=["ddp", "ddp-micro2", "fsdp2-micro2"])
def test_two_process_gloo_matches_one_process(tmp_path, reference, fsdp, micro):
    # micro 2: each rank accumulates two micro-batches of 2 (gradients reduced only in the last backward)
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny", tiny_train(micro_batch_size=micro)))
    summary = launch_run(run_dir.path, nproc=2, fsdp=fsdp, log_every_steps=5)
    assert summary.state == "finished", run_dir.log.read_text()[-3000:]
    env = json.loads(run_dir.env_json.read_text())
    assert env["world_size"] == 2 and env["parallel"] == ("fsdp2" if fsdp else "ddp")
    assert_same_losses(run_dir, reference, rel=1e-3)
    shutil.rmtree(run_dir.path / "checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp2"])
def test_two_process_resume_matches_an_uninterrupted_run(tmp_path, reference, fsdp):
    """Interrupted under torchrun, resumed under torchrun: rank 0 reads the checkpoint and broadcasts it
    (the other rank never loads the file), and the run continues to the reference's losses."""
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "matcher.run.runner", str(run_dir.path), "--nproc", "2",
               "--log-every-steps", "5"] + (["--fsdp"] if fsdp else [])
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not run_dir.checkpoint.is_file() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGINT)  # forwarded to the trainers: they finish the step and checkpoint
    assert launcher.wait(timeout=120) == ExitCode.INTERRUPTED
    assert run_dir.status().state == "interrupted", run_dir.log.read_text()[-3000:]
    summary = launch_run(run_dir.path, nproc=2, fsdp=fsdp, log_every_steps=5)
    assert summary.state == "finished", run_dir.log.read_text()[-3000:]
    assert [line["event"] for line in run_dir.read_metrics()].count("resume") == 1
    assert_same_losses(run_dir, reference, rel=1e-3)


def test_micro_batches_accumulate_to_the_same_steps(tmp_path, reference):
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny", tiny_train(micro_batch_size=2)))  # 4 per step
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    assert_same_losses(run_dir, reference, rel=1e-4)


def assert_same_losses(run_dir: RunDir, reference: RunDir, rel: float) -> None:
    """The same train and eval lines at the same steps, losses equal within `rel`."""
    got, want = comparable(run_dir), comparable(reference)
    assert [(line["event"], line["step"]) for line in got] == [(line["event"], line["step"]) for line in want]
    for a, b in zip(got, want):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=rel)
        if a["event"] == "eval":
            assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=rel)
            # the routing statistics too: counted over all ranks and micro-batches, as one process counts
            assert np.array(a["expert_load"]) == pytest.approx(np.array(b["expert_load"]), abs=0.02)


def test_a_micro_batch_that_does_not_divide_is_one_clear_error():
    from matcher.errors import ConfigError
    from matcher.run.trainer import _micro_batch

    with pytest.raises(ConfigError, match="micro_batch_size 3 does not divide batch_size 8; use one of 1, 2, 4, 8"):
        tiny_train(micro_batch_size=3)  # refused by the sweep file's validation, before anything trains
    # over 2 processes each gets 4 of the 8 sequences, which a micro-batch of 8 does not divide
    with pytest.raises(RunError, match="micro_batch_size 8 does not divide the 4 sequences each of 2 process"
                                       "\\(es\\) gets per step; use one of 1, 2, 4"):
        _micro_batch(tiny_train(micro_batch_size=8), world_size=2)


def test_shards_from_another_tokenizer_are_refused_before_training(tmp_path):
    shards.write_shard(tmp_path / "bpe.bin", np.arange(5000) % 300)  # ids above the character vocabulary
    train = tiny_train(data=str(tmp_path / "bpe.bin"))
    run = tiny_run("la-tiny", train)
    run_dir = prepare(tmp_path, dataclasses.replace(run, model=run.model.replace(vocab_size=512)))
    summary = launch_run(run_dir.path)
    assert summary.state == "failed"
    assert "hold token ids up to 299" in summary.note and "`matcher data encode" in summary.note


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")),
                    reason="torch.compile on CPU (inductor) needs a C++ compiler")
def test_compiled_run_matches_the_eager_one(tmp_path, reference):
    """compile: true takes the same steps, the experts' grouped GEMMs compiled with the rest."""
    run_dir = prepare(tmp_path, tiny_run("dr_da-tiny", tiny_train(compile=True, micro_batch_size=4)))
    assert train_run(run_dir.path, log_every_steps=5).state == "finished"
    assert json.loads(run_dir.env_json.read_text())["compile"] is True
    assert_same_losses(run_dir, reference, rel=1e-3)


def test_an_inductor_cache_path_with_spaces_moves_to_one_without(tmp_path, monkeypatch, capsys):
    """inductor's C++ compile commands split on spaces: a cache under a TMPDIR with one fails to build."""
    import torch._inductor.config as inductor_config

    from matcher.run.trainer import inductor_cache_without_whitespace

    monkeypatch.setattr(inductor_config, "cpp_cache_precompile_headers", True)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "a temp folder"))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    (tmp_path / "a temp folder").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a cache folder"))  # has a space: not chosen either
    inductor_cache_without_whitespace()
    chosen = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    assert not any(c.isspace() for c in chosen) and os.path.isdir(chosen)
    message = " ".join(capsys.readouterr().err.split())
    assert f"using {chosen} (set TORCHINDUCTOR_CACHE_DIR to choose)" in message
    assert not inductor_config.cpp_cache_precompile_headers  # built in a fresh temporary folder: off

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/a-users-own/inductor-cache")
    inductor_cache_without_whitespace()  # a folder without whitespace is the user's choice: kept, not created
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/a-users-own/inductor-cache"


def test_a_damaged_checkpoint_is_named_and_nothing_is_lost(tmp_path):
    import hashlib

    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(run_dir.path, log_every_steps=5, on_record=_crash_after(2))
    data = bytearray(run_dir.checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensors: torch.load alone would not notice
    run_dir.checkpoint.write_bytes(bytes(data))
    files = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in run_dir.path.rglob("*") if path.is_file()
             and path.name != "status.json"}
    with pytest.raises(RunError, match="last.pt: damaged .*restore it from a backup, or delete it"):
        train_run(run_dir.path, log_every_steps=5)
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files} == files
    assert run_dir.status().state == "failed" and "damaged" in run_dir.status().reason


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    other = prepare(tmp_path / "other", tiny_run("dr-tiny"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(other.path, log_every_steps=5, on_record=_crash_after(2))
    run_dir = prepare(tmp_path, tiny_run("la-tiny"))
    run_dir.checkpoint.parent.mkdir(parents=True)
    for name in ("last.pt", "last.pt.sha256"):
        shutil.copy(other.checkpoint.parent / name, run_dir.checkpoint.parent / name)
    with pytest.raises(RunError, match="a checkpoint of another run \\(model, run differ"):
        train_run(run_dir.path, log_every_steps=5)


def test_data_seed_gives_every_seed_the_same_rows(tmp_path, monkeypatch):
    """train.data_seed fixes the data order across seeds (the seeds then differ only in their initial
    weights); without it the run's seed orders the data."""
    read = []
    batch_rows = streams.batch_rows
    monkeypatch.setattr(streams, "batch_rows", lambda *a, **k: read.append(batch_rows(*a, **k)) or read[-1])
    first_batches = {}
    for seed, data_seed in ((0, 7), (1, 7), (1, None)):
        read.clear()
        train = tiny_train(seed=seed, data_seed=data_seed, total_tokens=2 * 8 * 64, n_evals=1, eval_examples=1)
        run_dir = prepare(tmp_path / f"{seed}-{data_seed}", tiny_run("la-tiny", train))
        assert train_run(run_dir.path).state == "finished"
        first_batches[seed, data_seed] = read[0]
    np.testing.assert_array_equal(first_batches[0, 7], first_batches[1, 7])
    assert not np.array_equal(first_batches[1, 7], first_batches[1, None])
    assert tiny_train(seed=3).stream_seed == 3 and tiny_train(seed=3, data_seed=0).stream_seed == 0


@pytest.mark.parametrize("preset, tie", [("dr_da-tiny", False), ("la-tiny", True)])
def test_lr_mult_reaches_the_optimizer_param_groups(preset, tie):
    """Each parameter in exactly one group, each group's LR the scheduled LR times its train.lr_mult group's
    multiplier at every step; equal multipliers keep the two groups (decay, no decay) of before."""
    import torch

    from matcher.config import TrainConfig
    from matcher.models import Model
    from matcher.plan.presets import get_preset

    model = Model(get_preset(preset).replace(tie_embeddings=tie))
    groups = model.lr_groups()
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[id(p)] for p in groups["embeddings"]} == (
        {"tok_emb.weight"} if tie else {"tok_emb.weight", "lm_head.weight"})
    assert groups["experts"] and all(".ffn.experts." in names[id(p)] or ".ffn.shared." in names[id(p)]
                                     for p in groups["experts"])
    assert any(".depth_attn." in names[id(p)] for p in groups["shared_block"]) == (preset == "dr_da-tiny")
    assert any(".router." in names[id(p)] for p in groups["shared_block"]) and "norm.weight" in {
        names[id(p)] for p in groups["shared_block"]}

    mults = {"shared_block": 0.25, "experts": 0.5, "embeddings": 2.0}
    cfg = TrainConfig(total_tokens=4096, batch_size=2, seq_len=16, lr=1e-3, lr_mult=mults)
    optimizer = make_optimizer(model, cfg)
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    group_of = {id(p): name for name, params in groups.items() for p in params}
    for group in optimizer.param_groups:
        assert {mults[group_of[id(p)]] for p in group["params"]} <= {group["lr_mult"]}
        assert group["weight_decay"] == (cfg.weight_decay if all(p.dim() >= 2 for p in group["params"]) else 0.0)
    lr_mults = [group["lr_mult"] for group in optimizer.param_groups]
    for step in (0, cfg.total_steps // 2, cfg.total_steps - 1):  # warmup, stable, decay
        set_lr(optimizer, lr_mults, wsd_lr(step, cfg))
        for group in optimizer.param_groups:
            assert group["lr"] == pytest.approx(wsd_lr(step, cfg) * group["lr_mult"])
    assert {group["lr_mult"] for group in optimizer.param_groups} == set(mults.values())

    plain = make_optimizer(model, TrainConfig(total_tokens=4096, batch_size=2, seq_len=16))
    assert [[id(p) for p in g["params"]] for g in plain.param_groups] == [
        [id(p) for p in model.parameters() if p.dim() >= 2], [id(p) for p in model.parameters() if p.dim() < 2]]
    assert isinstance(plain, torch.optim.AdamW)
