"""Dashboards a sweep can also log to (`train.dashboards: [tensorboard, wandb]`): sinks fed with every
metrics line the trainer writes, on rank 0, right after the line is in metrics.jsonl. metrics.jsonl stays
the source of truth (`matcher compare` reads it); a dashboard is a view.

- tensorboard: event files in `<run>/tensorboard/` (`tensorboard --logdir results/<sweep>`), one scalar per
  numeric field, tagged `<event>/<field>` at the line's step. A resumed run cuts metrics.jsonl back to its
  checkpoint; event files cannot be cut, so the writer opens with `purge_step` = the first step after the
  checkpoint, and TensorBoard discards the earlier attempt's points from there on.
- wandb: one W&B run per matcher run (group = sweep, job_type = variant, config = run.yaml), its id kept
  in `<run>/wandb_id`, so a resumed or requeued run continues the same W&B run (`resume="allow"`). W&B
  steps only increase: the points an earlier attempt logged past the checkpoint stay, and the same steps
  logged again are dropped by W&B. `WANDB_MODE=offline` logs with no network (`wandb sync` uploads later);
  `WANDB_PROJECT` names the project (default: matcher).

Each library is imported only when its dashboard is on (`pip install 'matcher[tensorboard]'`,
`'matcher[wandb]'`).
"""

# Function-local imports: tensorboard and wandb (optional extras), only when a run logs to them.

from __future__ import annotations

import importlib.util
import os
import secrets
from typing import Any, Protocol

from matcher.atomic import write_text_atomic
from matcher.errors import ConfigError
from matcher.run.contract import RunInfo
from matcher.run.rundir import RunDir

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
NOT_SCALARS = ("event", "step")  # the tag's prefix and the x axis, not values


class Dashboard(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a metrics line as `<event>/<field>` (lists of numbers, such as the expert Gini per
    depth, as `<event>/<field>/<index>`); nulls, strings and nested lists are left out."""
    event = record.get("event", "metrics")
    values: dict[str, float] = {}
    for key, value in record.items():
        if key in NOT_SCALARS:
            continue
        if _is_number(value):
            values[f"{event}/{key}"] = float(value)
        elif isinstance(value, list) and value and all(_is_number(v) for v in value):
            values.update({f"{event}/{key}/{i}": float(v) for i, v in enumerate(value)})
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_installed(names: list[str]) -> None:
    """A dashboard whose package is missing is one clear error before training starts."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"train.dashboards has {name}, but the {PACKAGES[name]} package is not installed "
                              f"here: pip install 'matcher[{name}]' (or remove it from the sweep's dashboards)")


def open_dashboards(names: list[str], run: RunDir, info: RunInfo, resume_step: int) -> list[Dashboard]:
    """The sinks for `names`; `resume_step`: the checkpoint's step (0 for a fresh run)."""
    check_installed(names)
    opened: list[Dashboard] = []
    try:
        for name in names:
            opened.append(TensorBoardSink(run, resume_step) if name == "tensorboard" else WandbSink(run, info))
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return opened


class TensorBoardSink:
    def __init__(self, run: RunDir, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # A line at the checkpoint's own step was written before the checkpoint and is kept; later ones go.
        self.writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: dict[str, Any]) -> None:
        if not isinstance(record.get("step"), int):
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["step"])
        self.writer.flush()  # a dashboard that lags the run by minutes is not a live view

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run: RunDir, info: RunInfo):
        import wandb

        if run.wandb_id.is_file():
            run_id = run.wandb_id.read_text(encoding="utf-8").strip()
        else:
            run_id = secrets.token_hex(6)  # W&B's id alphabet; kept so later attempts log to the same run
            write_text_atomic(run.wandb_id, run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "matcher"), id=run_id, resume="allow",
                              name=info.run, group=info.sweep or None, job_type=info.variant,
                              config=info.to_dict(), dir=str(run.path), settings=wandb.Settings(console="off"))

    def write(self, record: dict[str, Any]) -> None:
        if isinstance(record.get("step"), int):
            self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()
