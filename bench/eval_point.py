"""CPU time of one in-training eval point of the demo's la-tiny (the embedded task, data_steps 2,
seq_len 128: answer loss, greedy answers through the KV cache, bits per byte), one thread, an
untrained model (it never stops early: the full generation budget), after one warm-up call; the
median of `--repeats` for each problem count.

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval_point.py --problems 64,128,256
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from matcher.config import TrainConfig
    from matcher.data import math_task
    from matcher.models import Model
    from matcher.plan.presets import get_preset
    from matcher.run.evaluate import in_training_eval

    torch.manual_seed(0)
    model = Model(get_preset("la-tiny")).eval()
    cfg = TrainConfig(total_tokens=1, batch_size=1, seq_len=128, data_steps=2)
    kwargs = dict(device=torch.device("cpu"), autocast=contextlib.nullcontext())
    in_training_eval(model, math_task.eval_problems(2, 8), cfg, **kwargs)  # warm-up: first-call kernel set-up
    for count in (int(n) for n in args.problems.split(",")):
        problems = math_task.eval_problems(2, count)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            in_training_eval(model, problems, cfg, **kwargs)
            times.append(time.perf_counter() - started)
        print(f"{count} problems: {statistics.median(times):.2f} s per eval point (median of {args.repeats})")


if __name__ == "__main__":
    main()
