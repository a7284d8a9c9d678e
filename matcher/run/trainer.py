"""The training loop of one run: `train_run(run_dir)` trains the run that `run_dir/run.yaml` describes,
alone or as one rank of a torchrun group (`python -m matcher.run.trainer RUN_DIR` is the worker entry).

- AdamW (fused on CUDA; weight decay on matrices only), warmup-stable-decay LR, gradient clipping,
  bf16 autocast on CUDA / fp32 on CPU, optional torch.compile and activation recomputation, the
  auxiliary-loss-free expert-bias update after every optimizer step.
- At every evaluation checkpoint (matcher.run.schedule.eval_steps): the embedded task scored by
  matcher.eval (answer loss, greedy exact-match accuracy with its interval, bits per byte),
  the validation loss where the data has a validation set (matcher.run.validation), throughput, MFU,
  peak memory and expert load, tokens seen (`tokens`) and unique tokens seen
  (`unique_tokens`: below `tokens` once the data repeats); a model checkpoint for later scoring
  (matcher.run.snapshots); then the resume checkpoint.
- A checkpoint holds everything the rest of the run depends on: weights, optimizer state, the step
  (which fixes the LR and the data: streams are functions of the step), RNG states, the loss
  accumulators and the length of metrics.jsonl. A resumed run cuts metrics.jsonl back to that length
  and then writes exactly the lines an uninterrupted run would have written (timings aside).
- SIGINT/SIGTERM: finish the current step, checkpoint, state `interrupted`. A second signal aborts.
- A non-finite loss stops the run with state `failed` and the step in the reason; the last
  checkpoint (before the blow-up) is kept.
"""

# Function-local imports: torch's compiler settings (torch._inductor, about a second to import), only when the
# inductor cache is set up.

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from matcher import __version__
from matcher.config import TrainConfig, largest_divisors
from matcher.console import notice
from matcher.cost.analytic import train_flops_per_token
from matcher.data import streams
from matcher.data.tokenizer import tokenizer_for
from matcher.errors import MatcherError, RunError
from matcher.eval.fit import check_fit
from matcher.eval.tasks import run_eval_task
from matcher.models import IGNORE_INDEX, Model
from matcher.models.model import compile_model
from matcher.models.model import shares as expert_shares
from matcher.run.checkpoint import load_checkpoint, save_checkpoint
from matcher.run.contract import ExitCode, RunState, Status
from matcher.run.dashboards import open_dashboards
from matcher.run.distributed import (
    all_reduce_sum,
    autocast_for,
    close_world,
    gradient_sync,
    init_world,
    resolve_dtype,
    wrap,
)
from matcher.run.evaluate import in_training_eval
from matcher.run.rundir import MetricsWriter, RunDir
from matcher.run.schedule import eval_steps, wsd_lr
from matcher.run.snapshots import save_snapshot
from matcher.run.throughput import gini, mfu, peak_flops
from matcher.run.validation import val_scores, val_windows

OnRecord = Callable[[dict[str, Any]], None]


def train_run(run_dir: str | Path, *, fsdp: bool = False, log_every_steps: int = 10,
              on_record: OnRecord | None = None, device: str | None = None) -> Status:
    """Train or resume the run in `run_dir` to its token budget, a non-finite loss or a stop signal.
    Every rank of a torchrun group calls this; rank 0 writes the files and calls `on_record` with each
    metrics line. `device`: "cpu" or "cuda" (default: CUDA when available). An exception leaves state
    `failed` with the error as the reason, and propagates."""
    run = RunDir(run_dir)
    trainer = None

    def leave(state: RunState, reason: str, error: BaseException | None = None) -> None:
        if int(os.environ.get("RANK", 0)) == 0:
            step, tokens = (trainer.step, trainer.tokens) if trainer is not None else (0, 0)
            os_error = ((error.errno, error.strerror, error.filename)
                        if isinstance(error, OSError) and error.errno is not None else None)
            run.write_status(state, step=step, tokens=tokens, reason=reason, os_error=os_error)

    try:
        trainer = Trainer(run, fsdp=fsdp, log_every_steps=log_every_steps, on_record=on_record, device=device)
        return trainer.run()
    except KeyboardInterrupt:  # a second signal: stopped at once, without a checkpoint of this moment
        leave(RunState.INTERRUPTED, "aborted by a second stop signal; resumes from its last checkpoint")
        raise
    except Exception as error:
        leave(RunState.FAILED, describe_error(error), error)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        close_world()


def describe_error(error: BaseException) -> str:
    """One line for status.json and the sweep summary."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError):
        return (f"out of GPU memory ({text}); set train.micro_batch_size (gradient "
                "accumulation: the same steps, less memory), recompute: full, or shard with --nproc N --fsdp")
    if isinstance(error, MatcherError):
        return text
    return f"{type(error).__name__}: {text}"


def _set_deterministic(device: torch.device) -> None:
    """Same seed, same numbers, so a resumed run repeats an uninterrupted one. The CPU kernels used
    are deterministic for a fixed thread count already (and the switch costs seconds of imports)."""
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace for reproducible matmuls; set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class Window:
    """Training losses and time over the steps since a mark (the last train line, or the last eval)."""

    loss_sum: float = 0.0
    steps: int = 0
    # steps timed in this session (a resumed window's earlier steps were timed by another) and their time
    # in training steps only: evaluations and checkpoints excluded
    timed_steps: int = 0
    train_s: float = 0.0

    def add(self, loss: float, seconds: float) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.timed_steps += 1
        self.train_s += seconds

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.steps

    def tokens_per_s(self, tokens_per_step: int) -> float:
        return self.timed_steps * tokens_per_step / self.train_s


class Meter:
    """The loop's two windows. Loss sums are checkpointed (a resumed run reports the same means); times
    are not (each session measures its own speed)."""

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.since_log = Window(*state.get("loss_since_log", (0.0, 0)))
        self.since_eval = Window(*state.get("loss_since_eval", (0.0, 0)))

    def add(self, loss: float, seconds: float) -> None:
        self.since_log.add(loss, seconds)
        self.since_eval.add(loss, seconds)

    def state(self) -> dict[str, Any]:
        return {"loss_since_log": [self.since_log.loss_sum, self.since_log.steps],
                "loss_since_eval": [self.since_eval.loss_sum, self.since_eval.steps]}


class StopSignals:
    """SIGINT/SIGTERM while training: remembered, so the loop finishes its step and checkpoints; a
    second signal aborts at once (KeyboardInterrupt)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class Trainer:
    def __init__(self, run: RunDir, *, fsdp: bool, log_every_steps: int, on_record: OnRecord | None,
                 device: str | None):
        self.rundir, self.fsdp, self.on_record = run, fsdp, on_record
        self.log_every_steps = max(1, log_every_steps)
        self.info = run.read_run_info()
        self.model_cfg, self.cfg = self.info.model, self.info.train
        self.step = 0
        self.signals = StopSignals()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="matcher-data")
        self.world, self.device = init_world(device)
        _set_deterministic(self.device)
        self.micro_batch = _micro_batch(self.cfg, self.world.size)
        self.dtype = resolve_dtype(self.cfg.dtype, self.device)
        self.autocast = autocast_for(self.dtype, self.device)
        self.tokenizer = tokenizer_for(self.cfg)
        self.stream, self.eval_problems = streams.open_training_data(
            self.cfg.data, self.cfg.eval_data, seed=self.cfg.stream_seed, n_steps=self.cfg.data_steps,
            seq_len=self.cfg.seq_len, vocab_size=self.model_cfg.vocab_size, eval_examples=self.cfg.eval_examples,
            tokenizer=self.tokenizer, loss_on=self.cfg.loss_on)
        check_fit(run_eval_task(self.eval_problems, self.cfg), self.tokenizer, self.cfg.seq_len, in_training=True)
        self.val_windows = val_windows(self.cfg.data, seq_len=self.cfg.seq_len, vocab_size=self.model_cfg.vocab_size,
                                       tokenizer=self.tokenizer, n_steps=self.cfg.data_steps,
                                       eval_problems=self.eval_problems)
        self.model, self.train_model = self._build_model()
        self.optimizer = make_optimizer(self.model, self.cfg, fused=self.device.type == "cuda")
        # each group's train.lr_mult, kept apart from the groups: a checkpoint's groups replace them on resume
        self.lr_mults = [group["lr_mult"] for group in self.optimizer.param_groups]
        self.train_flops_per_token = self._train_flops_per_token()
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.peak_flops = peak_flops(self.device_name if self.device.type == "cuda" else None, self.dtype)

        loop_state = load_checkpoint(run.checkpoint, self.model, self.optimizer, self._identity()) or {}
        self.step = loop_state.get("step", 0)
        self.meter = Meter(loop_state)
        # tokens routed per applied depth and expert since the last eval (the load an eval line reports)
        load = loop_state.get("load_since_eval")
        self.load_since_eval: torch.Tensor | None = None if load is None else load.to(self.device)
        self.elapsed_before_s = loop_state.get("elapsed_s", 0.0)
        self.metrics = (MetricsWriter(run.metrics, loop_state.get("metrics_bytes", 0)) if self.world.is_main
                        else None)
        self.dashboards = (open_dashboards(self.cfg.dashboards, run, self.info, resume_step=self.step)
                           if self.world.is_main and self.cfg.dashboards else [])

    @property
    def tokens(self) -> int:
        return self.step * self.cfg.tokens_per_step

    def _build_model(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The model (checkpointed and evaluated) and the module the training step calls (wrapped for
        data parallelism, compiled)."""
        torch.manual_seed(self.cfg.seed)  # the same initial weights on every rank and every attempt
        model = Model(self.model_cfg).to(self.device)
        model.recompute = self.cfg.recompute == "full"
        train_model = wrap(model, self.world, self.device, fsdp=self.fsdp,
                           param_dtype=torch.bfloat16 if self.dtype == "bf16" else None)
        if self.cfg.compile:
            inductor_cache_without_whitespace()
            train_model = compile_model(train_model)
        return model, train_model

    def _train_flops_per_token(self) -> float:
        predicted = self.info.predicted
        if "train_flops_per_token" in predicted:
            return float(predicted["train_flops_per_token"])

        return train_flops_per_token(self.model_cfg, seq_len=self.cfg.seq_len)

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint of this run holds: the model, and the run's name and seed."""
        return {"run": self.info.run, "seed": self.cfg.seed, "model": self.model_cfg.to_dict()}

    def _save_checkpoint(self, elapsed_s: float) -> None:
        loop_state = {
            "step": self.step, "tokens": self.tokens,
            "data": {"source": self.cfg.data, "next_row": self.step * self.cfg.batch_size},
            **self.meter.state(),
            "load_since_eval": None if self.load_since_eval is None else self.load_since_eval.cpu(),
            "elapsed_s": elapsed_s, "metrics_bytes": self.metrics.offset_bytes if self.metrics else 0,
        }
        save_checkpoint(self.rundir.checkpoint, self.model, self.optimizer, is_main=self.world.is_main,
                        identity=self._identity(), loop_state=loop_state)

    def _save_snapshot(self) -> None:
        save_snapshot(self.rundir.path, self.model, self.model_cfg, step=self.step, tokens=self.tokens,
                      run=self.info.run, dtype=torch.bfloat16 if self.dtype == "bf16" else torch.float32,
                      is_main=self.world.is_main, keep=self.cfg.keep_checkpoints)

    def close(self) -> None:
        self.signals.restore()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()
        for dashboard in getattr(self, "dashboards", []):
            dashboard.close()

    # --------------------------------------------------------------------------------- the loop
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = dict(step=step, batch_size=self.cfg.batch_size, rank=self.world.rank, world_size=self.world.size)
        rows = torch.from_numpy(streams.batch_rows(self.stream, **where))
        targets = rows[:, 1:].contiguous()
        if self.cfg.loss_on == "answers":  # only answer tokens are targets (the mask beside the shards)
            mask = torch.from_numpy(streams.batch_masks(self.stream, **where))[:, 1:]
            targets[mask == 0] = IGNORE_INDEX
        if self.device.type == "cuda":
            rows, targets = rows.pin_memory(), targets.pin_memory()
        return rows[:, :-1], targets

    def _train_step(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        set_lr(self.optimizer, self.lr_mults, wsd_lr(step, self.cfg))
        # Micro-batches (train.micro_batch_size) accumulate into one step; gradients are reduced over ranks
        # once, in the last backward. The loss is the mean over the whole batch: each micro-batch's mean
        # weighted by its share of the counted target tokens (counted on the CPU copy: no device sync).
        counted = [int((yc != IGNORE_INDEX).sum()) for yc in batch[1].split(self.micro_batch)]
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        loss = torch.zeros((), device=self.device)
        for i, (xc, yc, n) in enumerate(zip(x.split(self.micro_batch), y.split(self.micro_batch), counted)):
            with gradient_sync(self.train_model, enabled=i == len(counted) - 1):
                with self.autocast:
                    _, chunk_loss = self.train_model(xc, yc)
                # a micro-batch with no counted token (possible with masked data) adds nothing
                weighted = chunk_loss * (n / max(1, sum(counted))) if n else chunk_loss.nan_to_num() * 0.0
                weighted.backward()
            loss += weighted.detach()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_router_bias(self.cfg.balance_rate)
        counts = self.model.routed_counts()  # the window the update used; stays on the device: no sync
        if counts is not None:
            self.load_since_eval = counts if self.load_since_eval is None else self.load_since_eval + counts
        return loss.detach()

    def _write(self, record: dict[str, Any]) -> None:
        if self.world.is_main:
            self.metrics.write(record)
            for dashboard in self.dashboards:
                dashboard.write(record)
            if self.on_record is not None:
                self.on_record(record)

    def _write_env(self) -> None:
        self.rundir.write_env({
            "matcher": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "device": self.device_name, "device_type": self.device.type,
            "dtype": self.dtype, "world_size": self.world.size, "parallel": (
                "fsdp2" if self.fsdp and self.world.size > 1 else "ddp" if self.world.size > 1 else "none"),
            "compile": self.cfg.compile, "recompute": self.cfg.recompute,
            "train_flops_per_token": self.train_flops_per_token, "peak_flops_per_device": self.peak_flops,
            "nodes": self.world.size // int(os.environ.get("LOCAL_WORLD_SIZE", self.world.size)),
            "slurm_job": _slurm_job(),
        })

    def run(self) -> Status:
        total = self.cfg.total_steps
        evals = set(eval_steps(self.cfg))
        if self.world.is_main:
            self._write_env()
            if self.step:
                self._write({"event": "resume", "step": self.step, "tokens": self.tokens})
            self.rundir.write_status(RunState.RUNNING, step=self.step, tokens=self.tokens)
        self.signals.install()
        session_start = time.perf_counter()
        elapsed = lambda: self.elapsed_before_s + time.perf_counter() - session_start
        upcoming = self._pool.submit(self._batch, self.step) if self.step < total else None
        while self.step < total:
            started = time.perf_counter()
            batch = upcoming.result()
            if self.step + 1 < total:
                upcoming = self._pool.submit(self._batch, self.step + 1)
            loss = self._train_step(self.step, batch)
            loss_sum, stop_votes = all_reduce_sum([loss.item(), float(self.signals.received is not None)],
                                                  self.device)
            loss_value = loss_sum / self.world.size
            self.step += 1
            if not math.isfinite(loss_value):
                return self._fail_non_finite(loss_value)
            self.meter.add(loss_value, time.perf_counter() - started)
            if self.step % self.log_every_steps == 0:
                self._log_train()
            checkpointed = False
            if self.step in evals:
                self._evaluate(elapsed())
                self._save_snapshot()
                self._save_checkpoint(elapsed())
                checkpointed = True
            if stop_votes > 0 and self.step < total:
                if not checkpointed:
                    self._save_checkpoint(elapsed())
                by = signal.Signals(self.signals.received).name if self.signals.received else "a signal on another rank"
                return self._finish(RunState.INTERRUPTED, f"stopped by {by}")
        return self._finish(RunState.FINISHED, None)

    def _log_train(self) -> None:
        window = self.meter.since_log
        self._write({"event": "train", "step": self.step, "tokens": self.tokens, "train_loss": window.mean_loss,
                     "lr": wsd_lr(self.step - 1, self.cfg),
                     "tokens_per_s": window.tokens_per_s(self.cfg.tokens_per_step)})
        self.meter.since_log = Window()
        if self.world.is_main:
            self.rundir.write_status(RunState.RUNNING, step=self.step, tokens=self.tokens)

    def _finish(self, state: RunState, reason: str | None) -> Status:
        if self.world.is_main:
            return self.rundir.write_status(state, step=self.step, tokens=self.tokens, reason=reason)
        return Status(state=state, reason=reason, step=self.step, tokens=self.tokens)

    def _fail_non_finite(self, loss_value: float) -> Status:
        self._write({"event": "nan", "step": self.step, "tokens": self.tokens, "loss": str(loss_value)})
        advice = "lower lr or keep grad_clip on"
        if self.dtype == "bf16":
            advice += ", or train in fp32 (dtype: fp32)"
        reason = f"training loss became {loss_value} at step {self.step} ({self.tokens} tokens); {advice}"
        return self._finish(RunState.FAILED, reason)

    def _evaluate(self, elapsed_s: float) -> None:
        window = self.meter.since_eval
        tokens_per_s = window.tokens_per_s(self.cfg.tokens_per_step)

        self.model.eval()
        # problems split over the ranks, every rank running the same forwards (matcher/eval/engine.py)
        scores = in_training_eval(self.model, self.eval_problems, self.cfg, device=self.device,
                                  autocast=self.autocast, run_path=self.rundir.path if self.world.is_main else None,
                                  step=self.step)
        if self.val_windows is not None:
            scores.update(val_scores(self.model, self.val_windows, self.tokenizer, device=self.device,
                                     autocast=self.autocast, batch_rows=self.micro_batch))
        self.model.train()
        shares = None
        if self.load_since_eval is not None:  # each expert's share per applied depth, steps since the last eval
            shares = [[round(share, 6) for share in row] for row in expert_shares(self.load_since_eval.cpu()).tolist()]
        self._write({
            "event": "eval", "step": self.step, "tokens": self.tokens,
            "unique_tokens": self.stream.unique_tokens(self.step * self.cfg.batch_size),
            "train_loss": window.mean_loss, **scores, "tokens_per_s": tokens_per_s,
            "mfu": mfu(self.train_flops_per_token, tokens_per_s, self.peak_flops, self.world.size),
            "peak_memory_bytes": (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda"
                                  else None),
            "expert_load": shares, "expert_gini": [gini(row) for row in shares] if shares else None,
            "elapsed_s": elapsed_s,
        })
        self.meter.since_eval = Window()
        self.load_since_eval = None


def _slurm_job() -> str | None:
    """The array task (or job) this process runs in under Slurm: what `squeue`, `sacct` and `scancel` take."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def _micro_batch(cfg: TrainConfig, world_size: int) -> int:
    """Sequences per forward on this rank; a batch that does not split is one clear error."""
    if cfg.batch_size % world_size:
        raise RunError(f"batch_size {cfg.batch_size} does not split over {world_size} "
                       "processes; use an --nproc that divides it")
    local_batch = cfg.batch_size // world_size
    micro_batch = cfg.micro_batch_size or local_batch
    if local_batch % micro_batch:
        raise RunError(f"micro_batch_size {micro_batch} does not divide the {local_batch} "
                       f"sequences each of {world_size} process(es) gets per step; use one of "
                       f"{largest_divisors(local_batch)} (set train.micro_batch_size in the sweep)")
    return micro_batch


def make_optimizer(model: Model, cfg: TrainConfig, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters: one group per train.lr_mult multiplier (one in all when
    they are equal, as before there were multipliers) and weight decay, each group carrying its `lr_mult`.
    Norm gains and other vectors are not decayed: shrinking them only rescales activations."""
    group_of = {id(p): group for group, params in model.lr_groups().items() for p in params}
    by_mult: dict[float, list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            by_mult.setdefault(cfg.lr_mult[group_of[id(p)]], []).append(p)
    groups = []
    for mult, params in by_mult.items():
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_mult": mult},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_mult": mult}]
    groups = [group for group in groups if group["params"]]  # experts and embeddings have no vectors
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr_mults: list[float], lr: float) -> None:
    """The scheduled LR on every group, times the group's multiplier (`lr_mults` in group order)."""
    for group, mult in zip(optimizer.param_groups, lr_mults, strict=True):
        group["lr"] = lr * mult


def main(argv: list[str] | None = None) -> int:
    """Worker entry: `python -m matcher.run.trainer RUN_DIR [--fsdp]` (alone, or under torchrun). Exit codes:
    0 finished or interrupted (checkpointed); 1 failed; 2 a user error; 130 aborted by a second signal."""
    parser = argparse.ArgumentParser(prog="python -m matcher.run.trainer", description=main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    parser.add_argument("--log-every-steps", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        result = train_run(args.run_dir, fsdp=args.fsdp, log_every_steps=args.log_every_steps)
    except MatcherError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except KeyboardInterrupt:
        return ExitCode.STOPPED_BY_SIGNAL
    return ExitCode.FAILED if result.state == RunState.FAILED else ExitCode.OK


def inductor_cache_without_whitespace() -> None:
    """Inductor builds its C++ kernels with compiler command lines that split on spaces, so a path with
    one fails ("input file ... is the same as output file"). Its cache (by default under the temporary
    folder, TMPDIR) moves to a folder without whitespace (in the user's cache folder, else /tmp), named in
    a notice, or where there is none, one clear error; and precompiled headers, which it builds in a
    fresh temporary folder, are left off (they only speed up the first compile)."""
    import torch._inductor.config as inductor_config

    def spaced(path: object) -> bool:
        return any(c.isspace() for c in str(path))

    if spaced(tempfile.gettempdir()):
        inductor_config.cpp_cache_precompile_headers = False
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or tempfile.gettempdir()
    if not spaced(current):
        return
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    for candidate in (user_cache / "matcher" / "torchinductor", Path("/tmp") / f"matcher-torchinductor-{os.getuid()}"):
        if spaced(candidate):
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(candidate)
        notice(f"torch.compile: inductor's cache would be under {current}, whose path has whitespace that "
               f"its C++ compiler commands cannot take; using {candidate} (set TORCHINDUCTOR_CACHE_DIR to choose)")
        return
    raise RunError(f"torch.compile: inductor's cache would be under {current}, whose path has whitespace that its "
                   "C++ compiler commands cannot take; set TORCHINDUCTOR_CACHE_DIR to a folder whose path has none")


if __name__ == "__main__":
    sys.exit(main())
