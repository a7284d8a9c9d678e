"""An eval's setting: what must be equal for two scores to lie on one curve.

A setting is one compact string, stored in every eval row (`setting` in evals.jsonl, `eval_setting`
in metrics.jsonl's eval lines):

    1a2b3c4d gsm8k-test data=sha256:0f3c9a1e2b7d n=200/1319 shots=5 budget=256 depth=trained truncate=none metrics=1

- the first word is the first 8 hex digits of the sha256 of the rest (its id: `--eval-setting 1a2b3c4d`);
- the task's label (it may hold spaces: the parts after it are read from the right);
- data: sha256 of the task file (and of its `fewshot` file), `generated-steps<N>` for the embedded
  problems of chain length N, `lm-eval` for the harness's own data, or `?` where a row predates this field;
- n: the items scored, `/N` of how many there were where a limit applies;
- shots: few-shot examples in each prompt; budget: max_new_tokens of a generating task (`-` for tasks
  that only score log-likelihoods);
- depth: `trained`, or the test-time depth it was scored at (so runs trained at different depths share
  the setting of their trained-depth curve);
- truncate: `none` (every prompt fits, matcher/eval/fit.py) or `left`;
- metrics: METRICS_VERSION of matcher/eval/score.py (`lm-eval-<version>` for harness rows).

Rows written before settings were recorded get one derived from what they hold, with `?` where the
part cannot be known (`derived_*` below).
"""

# Function-local imports: the scorer's metric version (its module loads torch), only when a setting is made for an eval.

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.data.math_task import MATH_DATA
from matcher.eval.tasks import SPECS, generated_budget, int_option, parse_task

if TYPE_CHECKING:
    from matcher.config import TrainConfig
    from matcher.eval.tasks import Task

UNKNOWN = "?"
PART_KEYS = ("data", "n", "shots", "budget", "depth", "truncate", "metrics")  # after the task label, in order


def setting_text(task: str, *, data: str, n: Any, n_total: Any = None, shots: Any, budget: Any, depth: Any,
                 truncate: str, metrics: Any) -> str:
    """The setting string: its id, then the readable parts."""
    count = f"{n}/{n_total}" if n_total not in (None, "") else str(n)
    values = (data, count, shots, budget, depth, truncate, metrics)
    parts = " ".join([task, *(f"{key}={value}" for key, value in zip(PART_KEYS, values))])
    return f"{hashlib.sha256(parts.encode('utf-8')).hexdigest()[:8]} {parts}"


def parse_setting(text: str) -> tuple[str, str, dict[str, str]]:
    """(id, task label, {part: value}) of a setting string; ValueError when it is not one."""
    words = text.split(" ")
    if len(words) < 2 + len(PART_KEYS):
        raise ValueError(f"not an eval setting: {text!r}")
    tail = words[-len(PART_KEYS):]
    parts = dict(word.split("=", 1) for word in tail if "=" in word)
    if list(parts) != list(PART_KEYS):
        raise ValueError(f"not an eval setting: {text!r}")
    return words[0], " ".join(words[1:-len(PART_KEYS)]), parts


def without_depth(text: str) -> str:
    """The setting's parts other than its id and depth: equal for one task scored at several depths."""
    _, task, parts = parse_setting(text)
    return " ".join([task, *(f"{key}={value}" for key, value in parts.items() if key != "depth")])


def depth_part(depth: int, trained_depth: int) -> str:
    return "trained" if depth == trained_depth else str(depth)


def data_identity(task: Task) -> str:
    """Which items a task holds: the sha256 of its file (and few-shot file), or the embedded generator's."""
    if task.source == "generated":
        return f"generated-steps{task.generated_steps}"
    digest = hashlib.sha256(Path(task.source).read_bytes())
    fewshot = task.options.get("fewshot")
    if fewshot:
        digest.update(b"\0" + Path(fewshot).read_bytes())
    return "sha256:" + digest.hexdigest()[:12]


def task_setting(task: Task, *, depth: str = "trained", truncate: str | None = None) -> str:
    """The setting of `task` scored at `depth` (`depth_part`; the in-training eval: the trained one)."""
    from matcher.eval.score import METRICS_VERSION

    generates = task.spec.kind in ("generate", "embedded")
    shots = int_option(task.options, "n_shot", task.spec.n_shot, task.label)
    return setting_text(task.label, data=data_identity(task), n=len(task.items), n_total=task.n_total, shots=shots,
                        budget=task.max_new_tokens if generates else "-", depth=depth,
                        truncate=truncate or "none", metrics=METRICS_VERSION)


def derived_bench_setting(row: dict[str, Any]) -> str:
    """The setting of an evals.jsonl row written before rows carried one: task, n, shots and budget from
    its task text (`spec`), depth and truncation from its fields; the file's hash and the metric version
    are unknown."""
    shots = budget = UNKNOWN
    try:
        name, _, options = parse_task(row.get("spec") or "")
    except Exception:  # a harness row, or no spec: nothing more to read
        name, options = None, {}
    if name is not None:
        spec = SPECS[name]
        shots = options.get("n_shot", spec.n_shot)
        if spec.kind == "generate":
            budget = options.get("max_new_tokens", spec.max_new_tokens)
        elif spec.kind in ("choice", "bpb"):
            budget = "-"
    depth = depth_part(row["depth"], row.get("trained_depth", row["depth"]))
    return setting_text(row["task"], data=UNKNOWN, n=row["n"], n_total=row.get("n_total"), shots=shots,
                        budget=budget, depth=depth, truncate="left" if "truncated" in row else "none",
                        metrics=UNKNOWN)


def derived_training_setting(train: TrainConfig, line: dict[str, Any]) -> str:
    """The setting of a metrics.jsonl eval line written before lines carried one, from the run's train
    config: exact for the generated problems but for the metric version; a file's hash is unknown."""
    latent = train.eval_data == "math-latent"
    n, n_total = _count(line.get("eval_n")), _count(line.get("eval_n_total"))
    if train.eval_data in MATH_DATA:
        label, data = "latent" if latent else "embedded", f"generated-steps{train.data_steps}"
        budget, n = generated_budget(train.data_steps, latent), n if n is not None else train.eval_examples
    else:
        label, data, budget = f"embedded-{Path(train.eval_data).stem}", UNKNOWN, UNKNOWN
    return setting_text(label, data=data, n=UNKNOWN if n is None else n, n_total=n_total, shots=0,
                        budget=budget, depth="trained", truncate="none", metrics=UNKNOWN)


def _count(value: Any) -> int | None:
    """A count read from a metrics line (NaN or None: not logged)."""
    return None if value is None or value != value else int(value)


def harness_setting(task: str, *, n: Any, shots: Any, depth: int, trained_depth: int, version: str) -> str:
    """An lm-evaluation-harness row's setting: the harness's own data, prompts and budget."""
    return setting_text(task, data="lm-eval", n=UNKNOWN if n is None else n, shots=shots, budget="lm-eval",
                        depth=depth_part(depth, trained_depth), truncate="none", metrics=f"lm-eval-{version}")

