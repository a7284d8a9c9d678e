"""Committed loss curves: 30 optimizer steps of la-tiny, dr-tiny and dr_da-tiny (CPU, fp32, one thread),
trained by the real trainer and compared step by step with `tests/assets/losses/<preset>.txt`, so a
numerics change that moves every variant alike is still caught.

A change that is meant to move them regenerates the files, with the reason in the commit message:

    OMP_NUM_THREADS=1 .venv/bin/python tests/test_loss_curves.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_runs import prepare, tiny_run, tiny_train  # noqa: E402

from matcher.run.trainer import train_run  # noqa: E402

ASSETS = Path(__file__).parent / "assets" / "losses"
PRESETS = ("la-tiny", "dr-tiny", "dr_da-tiny")
STEPS = 30
# fp32 on one thread is deterministic; the tolerance leaves room only for a different summation order
RELATIVE_TOLERANCE = 1e-5


def loss_curve(preset: str, folder: Path) -> list[tuple[int, float]]:
    """(step, training loss) for each of the first STEPS optimizer steps of `preset`."""
    train = tiny_train(total_tokens=STEPS * 8 * 64, n_evals=1, eval_examples=1)
    run_dir = prepare(folder, tiny_run(preset, train))
    assert train_run(run_dir.path, log_every_steps=1, device="cpu").state == "finished"
    return [(line["step"], line["train_loss"]) for line in run_dir.read_metrics() if line["event"] == "train"]


def read_curve(path: Path) -> list[tuple[int, float]]:
    rows = [line.split() for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return [(int(step), float(loss)) for step, loss in rows]


def write_curve(path: Path, curve: list[tuple[int, float]]) -> None:
    lines = ["# step loss: tests/test_loss_curves.py (CPU, fp32, one thread)"]
    lines += [f"{step} {loss:.8f}" for step, loss in curve]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("preset", PRESETS)
def test_loss_curve_matches_the_committed_one(preset, tmp_path, one_thread):
    expected = read_curve(ASSETS / f"{preset}.txt")
    got = loss_curve(preset, tmp_path)
    assert [step for step, _ in got] == [step for step, _ in expected] == list(range(1, STEPS + 1))
    for (step, loss), (_, want) in zip(got, expected):
        assert loss == pytest.approx(want, rel=RELATIVE_TOLERANCE), f"{preset} step {step}"


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    ASSETS.mkdir(parents=True, exist_ok=True)
    for name in PRESETS:
        with tempfile.TemporaryDirectory() as folder:
            curve = loss_curve(name, Path(folder))
        write_curve(ASSETS / f"{name}.txt", curve)
        print(f"{name}: {len(curve)} steps, loss {curve[0][1]:.4f} -> {curve[-1][1]:.4f}")
