"""Evaluation of a run (scored by matcher/eval): the in-training eval (the embedded task on the run's eval
set, logged as eval_loss / eval_accuracy / eval_bpb) and `matcher eval`, which scores the run's saved model checkpoints
on any tasks and stores the results in the run folder (evals.jsonl, one line per eval setting and step,
matcher/eval/setting.py: a later line of the same setting and step replaces an earlier one, a line of
another setting is kept beside it)."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from matcher.atomic import write_atomic, write_text_atomic
from matcher.config import TrainConfig
from matcher.data.streams import eval_problems
from matcher.data.tokenizer import tokenizer_for
from matcher.errors import RunError
from matcher.eval.fit import check_fit
from matcher.eval.score import score_task
from matcher.eval.setting import depth_part, parse_setting, task_setting
from matcher.eval.tasks import Task, int_option, limited, load_task, parse_task, run_eval_task
from matcher.run.distributed import autocast_for, pick_device, resolve_dtype
from matcher.run.rundir import RunDir
from matcher.run.snapshots import list_snapshots, load_snapshot


def in_training_eval(model, problems: list, cfg: TrainConfig, *, device: torch.device,
                     autocast: contextlib.AbstractContextManager, run_path: Path | None = None,
                     step: int = 0) -> dict[str, Any]:
    """The eval line's scores; with `run_path` (the main rank's), the samples are written to
    evals/<step>/<task>.samples.jsonl. Collective under torch.distributed."""
    task = run_eval_task(problems, cfg)
    result = score_task(model, task, tokenizer_for(cfg), seq_len=cfg.seq_len, device=device, autocast=autocast)
    samples = result.pop("samples")
    setting = task_setting(task)
    if run_path is not None:
        write_samples(samples_path(run_path, step, setting), samples)
    scores = result["scores"]
    low_high = result["intervals"]["acc"] or (None, None)
    return {"eval_loss": scores["loss"], "eval_loss_answer": scores["loss_answer"],
            "eval_loss_chain": scores["loss_chain"], "eval_accuracy": scores["acc"],
            "eval_accuracy_low": low_high[0], "eval_accuracy_high": low_high[1],
            "eval_bpb": scores["bpb"], "eval_n": result["n"], "eval_correct": result["outcomes"]["acc"],
            "eval_setting": setting,
            **({"eval_n_total": result["n_total"]} if "n_total" in result else {})}


SAMPLES_GZIP_BYTES = 1 << 20  # a samples file larger than this is written gzip-compressed


def samples_path(run_path: Path, step: int, setting: str) -> Path:
    """evals/<step>/<task>.<setting id>.samples.jsonl (with `-depth<D>` after the task at a test-time
    depth), so a re-score with another setting is kept beside the old one; `.gz` is added when the file is
    written compressed."""
    setting_id, label, parts = parse_setting(setting)
    name = label if parts["depth"] == "trained" else f"{label}-depth{parts['depth']}"
    return Path(run_path) / "evals" / str(step) / f"{name}.{setting_id}.samples.jsonl"


def write_samples(path: Path, samples: list[dict[str, Any]]) -> Path:
    """One JSON line per item, atomically; gzip-compressed (path + .gz) when large. The other form of
    the same file, left by an earlier eval, is removed, so one file holds the step's samples."""
    data = "".join(json.dumps(sample) + "\n" for sample in samples).encode("utf-8")
    compressed = len(data) > SAMPLES_GZIP_BYTES
    gzipped = path.with_name(path.name + ".gz")
    target, other = (gzipped, path) if compressed else (path, gzipped)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda handle: handle.write(gzip.compress(data, mtime=0) if compressed else data))
    other.unlink(missing_ok=True)
    return target


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The samples `write_samples` wrote at `path` (plain or .gz)."""
    compressed = path.with_name(path.name + ".gz")
    if compressed.is_file():
        text = gzip.decompress(compressed.read_bytes()).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _resolve_task(text: str, cfg: TrainConfig) -> Task:
    """`embedded` with neither a file nor n: the run's own eval set, so the scores equal the logged ones."""
    name, file, options = parse_task(text)
    if name == "embedded" and file is None and not {"n", "steps"} & set(options):
        task = run_eval_task(eval_problems(cfg.eval_data, cfg.data_steps, cfg.eval_examples), cfg)
        return limited(replace(task, options=options), int_option(options, "limit", 0, text))
    return load_task(text, data_steps=cfg.data_steps)


def choose_steps(available: list[int], step: int | None, all_steps: bool, where: Path) -> list[int]:
    if not available:
        raise RunError(f"{where}: no model checkpoints (checkpoints/step-*.safetensors); they are written at "
                       "every eval point of a run trained by this matcher version: train the run first")
    if all_steps:
        return available
    if step is None:
        return [available[-1]]
    if step not in available:
        shown = ", ".join(str(s) for s in available[:12]) + (", ..." if len(available) > 12 else "")
        raise RunError(f"{where}: no model checkpoint at step {step}; saved steps: {shown}")
    return [step]


def evaluate_run(run_path: str | Path, tasks: list[str], *, step: int | None = None, all_steps: bool = False,
                 depths: list[int] | None = None, device: str | None = None, truncate: str | None = None,
                 on_row=None, on_score=None, on_progress=None) -> list[dict[str, Any]]:
    """Score the run's saved checkpoints on `tasks` (`--task` strings) at `depths` (default: the
    trained one); the rows are appended to the run's evals.jsonl and returned. Every task is checked
    against the context before any checkpoint is loaded (`truncate`: matcher/eval/fit.py).
    `on_score(text)` is told what is scored next, `on_progress(text)` how far its scoring has come (items
    done of the task's, after each batch), `on_row(row)` each row as it is scored."""
    run = RunDir(run_path)
    info = run.read_run_info()
    model_cfg, cfg = info.model, info.train
    if not tasks:
        tasks = ["embedded"]
    loaded = [(text, _resolve_task(text, cfg)) for text in tasks]
    tokenizer = tokenizer_for(cfg)
    for _, task in loaded:
        check_fit(task, tokenizer, cfg.seq_len, truncate)
    snapshots = dict(list_snapshots(run.path))
    steps = choose_steps(sorted(snapshots), step, all_steps, run.path)
    depths = depths or [model_cfg.depth]
    if model_cfg.variant == "la" and depths != [model_cfg.depth]:
        raise RunError(f"--depth: {info.run} is la ({model_cfg.depth} distinct layers), so it runs at its "
                       "trained depth only; test-time depth is for dr and dr_da runs")
    target = pick_device(device)
    autocast = autocast_for(resolve_dtype(cfg.dtype, target), target)
    rows, pending = [], []
    for at in steps:
        for depth in depths:
            model, meta = load_snapshot(snapshots[at], model_cfg, depth=depth, device=target)
            for text, task in loaded:
                where = f"{text} on {info.run} at step {meta['step']}, depth {depth}"
                if on_score is not None:
                    on_score(f"eval: scoring {where}")
                progress = None if on_progress is None else (
                    lambda done, where=where: on_progress(f"eval: {where}: {done}"))
                result = score_task(model, task, tokenizer, seq_len=cfg.seq_len, device=target, autocast=autocast,
                                    truncate=truncate, on_progress=progress)
                _refuse_non_finite(result, snapshots[at])
                samples = result.pop("samples")
                setting = task_setting(task, depth=depth_part(depth, model_cfg.depth), truncate=truncate)
                pending.append((samples_path(run.path, meta["step"], setting), samples))
                row = {"event": "bench", "run": info.run, **result, "setting": setting, "spec": text,
                       "source": task.source,
                       "step": meta["step"], "tokens": meta["tokens"], "depth": depth,
                       "trained_depth": model_cfg.depth}
                reversed_rope = model_cfg.has_depth_attention and model_cfg.da_rope == "forward_reversed"
                if reversed_rope and depth != model_cfg.depth:
                    # half the depth rotary pairs turn by D - d with D the trained depth, not this one
                    row["da_rope_reversed_index"] = f"{model_cfg.depth} - d"
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            del model
    for path, samples in pending:  # only once every checkpoint has scored: a refused one stores nothing
        write_samples(path, samples)
    store_rows(run.evals, rows)
    return rows


def _refuse_non_finite(result: dict[str, Any], path: Path) -> None:
    """A NaN score is a damaged model, not a result: refused before anything is stored."""
    bad = [metric for metric, value in result["scores"].items() if value is not None and not math.isfinite(value)]
    if bad:
        raise RunError(f"{path}: scored {', '.join(bad)} = NaN or infinite on {result['task']}; the checkpoint is "
                       "damaged or the run diverged: score another step, or retrain; nothing was stored")


def _legacy_key(row: dict[str, Any]) -> tuple:
    """How rows were keyed before they carried a setting."""
    return row.get("task"), row.get("spec"), row.get("step"), row.get("depth")


def store_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add `rows` to evals.jsonl, replacing earlier rows of the same setting and step (and rows without a
    setting, from an older matcher, of the same task text, step and depth); rows of other settings stay."""
    replaced = {(r["setting"], r["step"]) for r in rows}
    legacy = {_legacy_key(r) for r in rows}

    def replaced_by_new(row: dict[str, Any]) -> bool:
        if "setting" in row:
            return (row["setting"], row.get("step")) in replaced
        return _legacy_key(row) in legacy

    kept = [row for row in read_rows(path) if not replaced_by_new(row)]
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in [*kept, *rows]))


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
