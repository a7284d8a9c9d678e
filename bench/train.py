"""Training throughput of the real training loop (matcher.run.trainer: data, autocast, AdamW, clipping, expert
bias update), in tokens/s and MFU.

- CPU: the tiny presets in fp32, without and with torch.compile (MFU is not defined on a CPU: no
  peak in the table). The GPU figures (100m and 1b in bf16, MFU, peak memory) are bench/gpu.py's.

Each measurement trains a throwaway run for `--warmup-steps` + `--steps` optimizer steps and reads
the tokens/s of the steps after the warmup (compilation and allocator warm-up excluded) from the
run's own metrics lines.

    python bench/train.py [--steps 20] [--warmup-steps 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from matcher import fmt
from matcher.config import TrainConfig
from matcher.cost.analytic import Conventions
from matcher.plan.presets import get_preset
from matcher.plan.sweep import Run, predict
from matcher.run.contract import RunInfo


def measure(preset: str, *, device: str, seq_len: int, batch_size: int, steps: int, warmup_steps: int,
            compile: bool, dtype: str) -> dict:
    """tokens/s and MFU after warm-up, from the metrics of a short run of `preset`."""
    from matcher.run.rundir import RunDir
    from matcher.run.throughput import mfu
    from matcher.run.trainer import train_run

    model = get_preset(preset)
    total_steps = warmup_steps + steps
    train = TrainConfig(total_tokens=total_steps * batch_size * seq_len, batch_size=batch_size,
                        seq_len=seq_len, eval_examples=1, n_evals=1, compile=compile, dtype=dtype)
    run = Run(name=preset, group=preset, role="target", model=model, train=train,
              predicted=predict(model, train, Conventions()))
    with tempfile.TemporaryDirectory() as folder:
        run_dir = RunDir(Path(folder) / preset)
        run_dir.path.mkdir()
        run_dir.write_run_info(RunInfo.from_run(run, "bench"))
        # one train line after the warm-up steps, one after the measured ones: the second is the measurement
        train_run(run_dir.path, device=device, log_every_steps=warmup_steps if warmup_steps else total_steps)
        lines = run_dir.read_metrics()
        env = json.loads(run_dir.env_json.read_text())
    tokens_per_s = [line for line in lines if line["event"] == "train"][-1]["tokens_per_s"]
    final = [line for line in lines if line["event"] == "eval"][-1]
    flops = run.predicted["train_flops_per_token"]
    return {"preset": preset, "compile": compile, "dtype": dtype, "tokens_per_s": tokens_per_s,
            "mfu": mfu(flops, tokens_per_s, env["peak_flops_per_device"], 1),
            "peak_memory_bytes": final["peak_memory_bytes"], "train_flops_per_token": flops}


def show(rows: list[dict]) -> None:
    print(f"{'preset':12s} {'dtype':5s} {'compile':7s} {'train FLOP/tok':>14s} {'tokens/s':>10s} {'MFU':>7s} "
          f"{'peak memory':>12s}")
    for row in rows:
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"{row['preset']:12s} {row['dtype']:5s} {str(row['compile']):7s} "
              f"{fmt.si(row['train_flops_per_token']):>14s} {fmt.si(row['tokens_per_s']):>10s} {mfu:>7s} "
              f"{fmt.bytes_(row['peak_memory_bytes']):>12s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps before the measurement")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    args = parser.parse_args()
    common = dict(batch_size=args.batch_size, steps=args.steps, warmup_steps=args.warmup_steps)

    import torch

    print(f"torch {torch.__version__}; MFU against the dense bf16 peak of the device (none on CPU)\n")
    print(f"CPU ({torch.get_num_threads()} threads), tiny presets, fp32, seq_len 128, without and with torch.compile")
    cpu = [measure(name, device="cpu", seq_len=128, compile=compile, dtype="fp32", **common)
           for compile in (False, True) for name in ("la-tiny", "dr-tiny", "dr_da-tiny")]
    show(cpu)
    for name in ("la-tiny", "dr-tiny", "dr_da-tiny"):
        eager, compiled = (next(r for r in cpu if r["preset"] == name and r["compile"] == c) for c in (False, True))
        print(f"{name}: compiled / eager tokens/s {compiled['tokens_per_s'] / eager['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
