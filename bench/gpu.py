"""Everything CUDA-only, in one command on one H100/H200 (under 8 minutes): for la, dr and dr_da at
100m and 1b, bf16 autocast, without and with torch.compile, one table of

- tokens/s and MFU (model FLOPs: 3 x forward, against the device's dense bf16 peak),
- the time per token of dr and dr_da over la's (same size, same compile setting; 1.00 = equal cost),
- the measured peak memory of a training step (torch.cuda.max_memory_allocated) against the analytic
  training memory (matcher.cost.analytic.memory: weights, gradients, AdamW state, activations).

Each row trains the real model (matcher.models) with fused AdamW, gradient clipping and the expert-bias
update on a fixed random batch: `--warmup-steps` steps (compilation, allocator warm-up), then `--steps`
timed steps. The batch is the largest power of two of sequences (at most --max-tokens per step) whose
analytic training memory fits 80% of the device. A row that would start after --budget-s (330 s, so
that a compiled 1b row started just before it still ends inside a 10-minute call) is skipped and said
so; the eager rows come first. A row that fails is recorded with its error and the others still run;
the JSON is rewritten after every row, so a killed call keeps the rows that ended ("complete": false).
Without `pip install -e .` (a GPU image with its own torch), the script imports matcher from the source
tree it sits in.

    PYTHONUNBUFFERED=1 python3 bench/gpu.py [--json gpu.json]     # on a GPU machine
    python bench/gpu.py --smoke                   # the same code path on the CPU: tiny presets, 2 steps
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import matcher.models  # noqa: F401  (installed: `pip install -e .`, as `make setup` does)
except ImportError:
    # a GPU machine that has the image's torch but not this package: the source tree itself, with models/ as
    # matcher.models as pyproject.toml's package-dir maps it (the other dependencies are the image's)
    sys.path.insert(0, str(ROOT))
    import matcher

    matcher.__path__.append(str(ROOT))

from matcher import fmt  # noqa: E402
from matcher.atomic import write_text_atomic  # noqa: E402
from matcher.cost.analytic import Conventions, memory, train_flops_per_token  # noqa: E402
from matcher.plan.presets import get_preset  # noqa: E402
from matcher.run.throughput import mfu, peak_flops  # noqa: E402

VARIANTS = ("la", "dr", "dr_da")


def fitting_batch(cfg, seq_len: int, budget_bytes: float, max_tokens: int, conv: Conventions) -> int:
    """The largest power of two of sequences per step within max_tokens whose analytic training memory
    fits the budget (at least 1)."""
    batch = 1
    while (2 * batch * seq_len <= max_tokens
           and memory(cfg, batch=2 * batch, seq_len=seq_len, conv=conv).training_bytes <= budget_bytes):
        batch *= 2
    return batch


def measure(preset: str, *, device: torch.device, dtype: str, compile: bool, seq_len: int, batch: int,
            warmup_steps: int, steps: int) -> dict:
    from matcher.models import Model
    from matcher.models.model import compile_model

    cfg = get_preset(preset)
    conv = Conventions(activation_dtype="bf16" if dtype == "bf16" else "fp32")
    torch.manual_seed(0)
    with device:  # made on the device: a 1b model is not built on the CPU first
        model = Model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    train_model = compile_model(model) if compile else model
    rows = torch.randint(cfg.vocab_size, (batch, seq_len + 1), device=device)
    x, y = rows[:, :-1], rows[:, 1:]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with autocast:
            _, loss = train_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_router_bias(1e-3)

    def timed(n_steps: int) -> float:
        """Seconds for n_steps steps, the device drained before the clock stops."""
        started = time.perf_counter()
        for _ in range(n_steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    warmup_s = timed(warmup_steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = timed(steps) / steps
    tokens_per_s = batch * seq_len / step_s
    flops = train_flops_per_token(cfg, conv, seq_len)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    row = {"preset": preset, "variant": cfg.variant, "dtype": dtype, "compile": compile, "batch": batch,
           "seq_len": seq_len, "step_s": step_s, "warmup_s": warmup_s, "tokens_per_s": tokens_per_s,
           "train_flops_per_token": flops, "mfu": mfu(flops, tokens_per_s, peak_flops(name, dtype), 1),
           "analytic_training_bytes": memory(cfg, batch=batch, seq_len=seq_len, conv=conv).training_bytes,
           "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}
    return row


def release(device: torch.device, compiled: bool) -> None:
    """Free the last row's model, optimizer and compiled graphs before the next row."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's time per token over la's of the same size and compile setting."""
    for row in rows:
        size = row["preset"].split("-", 1)[1]
        la = next((r for r in rows if r["preset"] == f"la-{size}" and r["compile"] == row["compile"]
                   and "tokens_per_s" in r), None)
        row["time_vs_la"] = (la["tokens_per_s"] / row["tokens_per_s"]
                             if la is not None and "tokens_per_s" in row else None)
    return rows


def show(rows: list[dict], device_name: str) -> None:
    print(f"{device_name}; torch {torch.__version__}; MFU against the dense bf16 peak; time/la = la tokens/s "
          "over the row's (same size and compile)")
    header = (f"{'preset':11s} {'dtype':5s} {'compile':7s} {'batch x seq':>11s} {'tokens/s':>9s} {'MFU':>6s} "
              f"{'time/la':>7s} {'step':>8s} {'warm-up':>8s} {'peak mem':>9s} {'analytic':>9s} {'peak/an.':>8s}")
    print(header)
    for r in rows:
        if "skipped" in r:
            print(f"{r['preset']:11s} {r['dtype']:5s} {str(r['compile']):7s} skipped: {r['skipped']}")
            continue
        peak = r["peak_memory_bytes"]
        print(f"{r['preset']:11s} {r['dtype']:5s} {str(r['compile']):7s} {r['batch']:>4d} x {r['seq_len']:<4d} "
              f"{fmt.si(r['tokens_per_s']):>9s} {'-' if r['mfu'] is None else format(r['mfu'], '.1%'):>6s} "
              f"{'-' if r['time_vs_la'] is None else format(r['time_vs_la'], '.2f'):>7s} "
              f"{r['step_s'] * 1e3:>6.0f}ms {r['warmup_s']:>7.1f}s "
              f"{'-' if peak is None else fmt.bytes_(peak):>9s} {fmt.bytes_(r['analytic_training_bytes']):>9s} "
              f"{'-' if peak is None else format(peak / r['analytic_training_bytes'], '.2f'):>8s}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100m,1b", help="preset sizes, comma-separated")
    parser.add_argument("--compile", default="off,on", help="torch.compile settings to measure: off, on or both")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32768, help="largest batch in tokens per step")
    parser.add_argument("--budget-s", type=float, default=330.0, help="start no new row after this")
    parser.add_argument("--json", type=Path, help="also write the rows here (and to $OUT/gpu.json when set)")
    parser.add_argument("--smoke", action="store_true", help="CPU, fp32, tiny presets, 2 steps: checks the script")
    args = parser.parse_args()

    if args.smoke:
        device, dtype, sizes, seq_lens = torch.device("cpu"), "fp32", ["tiny"], {"tiny": 64}
        budget_bytes, args.warmup_steps, args.steps, args.max_tokens = 2**30, 1, 2, 256
    elif torch.cuda.is_available():
        device, dtype, sizes = torch.device("cuda"), "bf16", args.sizes.split(",")
        seq_lens = {size: get_preset(f"la-{size}").seq_len for size in sizes}
        budget_bytes = 0.8 * torch.cuda.get_device_properties(device).total_memory
    else:
        print("bench/gpu.py measures CUDA only and no CUDA device is visible; `--smoke` runs its code on the CPU")
        return 2
    compiles = [setting == "on" for setting in args.compile.split(",")]
    outputs = [args.json] if args.json else []
    if os.environ.get("OUT"):
        outputs.append(Path(os.environ["OUT"]) / "gpu.json")
    start = time.perf_counter()
    rows = []
    for compile in compiles:
        for size in sizes:
            for variant in VARIANTS:
                preset = f"{variant}-{size}"
                cfg = get_preset(preset)
                conv = Conventions(activation_dtype="bf16" if dtype == "bf16" else "fp32")
                batch = fitting_batch(cfg, seq_lens[size], budget_bytes, args.max_tokens, conv)
                if time.perf_counter() - start > args.budget_s:
                    rows.append({"preset": preset, "dtype": dtype, "compile": compile,
                                 "skipped": f"past the {args.budget_s:.0f} s budget"})
                    continue
                try:
                    rows.append(measure(preset, device=device, dtype=dtype, compile=compile, seq_len=seq_lens[size],
                                        batch=batch, warmup_steps=args.warmup_steps, steps=args.steps))
                except torch.OutOfMemoryError as error:
                    rows.append({"preset": preset, "dtype": dtype, "compile": compile,
                                 "skipped": f"out of memory at batch {batch} ({str(error).splitlines()[0]})"})
                except Exception as error:  # noqa: BLE001  one row's failure must not lose the others
                    if args.smoke:
                        raise
                    rows.append({"preset": preset, "dtype": dtype, "compile": compile,
                                 "skipped": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}"})
                release(device, compile)
                print(f"  {preset} compile={compile}: done at {time.perf_counter() - start:.0f} s: {rows[-1]}",
                      file=sys.stderr, flush=True)
                save(rows, device, outputs, final=False)  # each row as it ends: a killed call keeps what ran
    rows = save(rows, device, outputs, final=True)
    show(rows, device_name(device))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


def device_name(device: torch.device) -> str:
    return (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({torch.get_num_threads()} threads)")


def save(rows: list[dict], device: torch.device, outputs: list[Path], final: bool) -> list[dict]:
    """The rows with their ratios, written to every output (atomically: a kill mid-write keeps the last)."""
    rows = with_ratios(rows)
    text = json.dumps({"device": device_name(device), "torch": torch.__version__, "complete": final,
                       "rows": rows}, indent=1)
    for path in outputs:
        write_text_atomic(path, text)
    return rows


if __name__ == "__main__":
    sys.exit(main())
