"""Sweep files (`sweeps/*.yaml`): metadata plus a list of runs, each with its full model config,
training settings and predicted costs. Loading validates every field and reports every problem with
its path in the file (`runs[2].model.d_ff: ...`). Writing is atomic and never overwrites silently.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from matcher.atomic import write_text_atomic
from matcher.config import ModelConfig, TrainConfig, dump_yaml, field_problems, read_yaml, unknown_key
from matcher.console import notice
from matcher.cost.analytic import Conventions
from matcher.data import streams
from matcher.data.tokenizer import tokenizer_for
from matcher.errors import ConfigError, DataError, MatcherError
from matcher.eval.fit import check_fit
from matcher.eval.tasks import run_eval_task
from matcher.plan.costs import COSTS, RECORDED, Computed, compute
from matcher.plan.search import QUANTITIES, MatchSpec, costs_of, current_names, renamed_notice

SWEEP_FORMAT = 1
ROLES = ("target", "variant")
RUN_KEYS = ("name", "group", "role", "model", "train", "predicted")
# body (non-embedding) costs: recorded by sweeps and run.yaml files written since they were added; results
# written before lack them, so readers of PREDICTED_KEYS do not require them
BODY_PREDICTED_KEYS = tuple(COSTS[name].recorded for name in ("body_params", "body_flops"))
PREDICTED_KEYS = tuple(key for key in RECORDED if key not in BODY_PREDICTED_KEYS)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(kw_only=True)
class SweepMeta:
    target: str  # preset name, config path, or "budget" when --flops/--params were given
    variants: list[str]
    matched: list[str]  # quantities matched (matcher.plan.search.QUANTITIES)
    conventions: dict[str, Any]  # matcher.cost.analytic.Conventions fields
    tool_version: str
    command: str  # the command line that wrote the sweep
    created: str  # ISO 8601 time
    description: str = ""
    tolerance: float = 0.02  # the largest matched residual the plan accepted; edits beyond it are refused
    # group -> the quantities the search matched for it (a quantity with no free variable left is only
    # reported); empty in sweeps written before: then every quantity of `matched`
    solved: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    memory_batch: int = 0  # sequences per forward that memory was matched at (0: each run's own)
    inference_batch: int = 1  # sequences decoded at once, for inference memory
    inference_context: int = 0  # context tokens per sequence, for inference memory (0: each run's seq_len)
    # hyperparameter grid (`matcher plan --grid`): run group label -> {train.FIELD: values}; each grid point
    # is a run group of its own (<label>-lr1e-3); empty: no grid
    grid: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)
    tokens_rule: str = ""  # how the training tokens were set ("20 tokens per body parameter of the target")
    # the GPU-hours assumption of `matcher plan --gpu --mfu`, which `matcher status` sets the measured MFU
    # against; "" and 0 in sweeps written before it was recorded
    gpu: str = ""
    assumed_mfu: float = 0.0


@dataclass(kw_only=True)
class Run:
    name: str  # unique in the sweep; the results folder name
    group: str  # runs of one group differ only in seed; `matcher compare` aggregates them (a grid point is a group)
    role: str  # target (the baseline) | variant
    model: ModelConfig
    train: TrainConfig
    predicted: dict[str, float]  # PREDICTED_KEYS, under the sweep's conventions

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "role": self.role, "model": self.model.to_dict(),
                "train": self.train.to_dict(), "predicted": dict(self.predicted)}


@dataclass
class Sweep:
    meta: SweepMeta
    runs: list[Run]
    name: str = "sweep"  # the file's stem; not stored in the file

    @property
    def conventions(self) -> Conventions:
        return Conventions(**self.meta.conventions)

    @property
    def target(self) -> Run:
        return next(run for run in self.runs if run.role == "target")

    def to_dict(self) -> dict[str, Any]:
        return {"matcher_sweep": SWEEP_FORMAT, "meta": dataclasses.asdict(self.meta),
                "runs": [run.to_dict() for run in self.runs]}


def predict(model: ModelConfig, train: TrainConfig, conv: Conventions,
            known: Computed | None = None) -> dict[str, int]:
    """The costs a sweep records for a run (matcher.plan.costs under their RECORDED names; the runner copies
    them into run.yaml), as whole numbers. Training memory is one process's: weights, gradients, AdamW state
    and the activations of one forward of train.micro_batch_size sequences (batch_size when it is 0); the
    inference caches are one sequence's at the training context. `known`: costs of this model already
    computed (a search.Match's), taken where they were computed at these settings."""
    at = MatchSpec(conventions=conv, batch=train.micro_batch_size or train.batch_size, seq_len=train.seq_len,
                   inference_batch=1)
    values = compute(model, at, RECORDED.values(), known)
    return {key: round(values[name]) for key, name in RECORDED.items()}


def rename_old_names(data: Any) -> dict[str, str]:
    """Replace, in place, the old names (matcher.plan.search.RENAMED) of a parsed sweep's meta.matched,
    meta.solved and runs[*].predicted with the current ones; {old: current} of those replaced."""
    old: dict[str, str] = {}

    def current(names: list) -> list:
        names, replaced = current_names(names)
        old.update(replaced)
        return names

    meta = data.get("meta") if isinstance(data, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("matched"), list):
        meta["matched"] = current(meta["matched"])
    if isinstance(meta, dict) and isinstance(meta.get("solved"), dict):
        meta["solved"] = {group: current(names) if isinstance(names, list) else names
                          for group, names in meta["solved"].items()}
    runs = data.get("runs") if isinstance(data, dict) else None
    for run in runs if isinstance(runs, list) else []:
        if isinstance(run, dict) and isinstance(run.get("predicted"), dict):
            run["predicted"] = dict(zip(current(list(run["predicted"])), run["predicted"].values()))
    return old


def check_sweep_data(data: Any) -> tuple[list[str], Sweep | None]:
    """All problems of a parsed sweep file, and the Sweep when there are none."""
    if not isinstance(data, dict):
        return [f"top level: expected a mapping with matcher_sweep, meta and runs, got {type(data).__name__}"], None
    problems, meta, conv = _top_level_problems(data)
    runs_data = data.get("runs")
    runs: list[Run] = []
    if not isinstance(runs_data, list) or not runs_data:
        problems.append("runs: must be a non-empty list of runs")
        runs_data = []
    for i, run_data in enumerate(runs_data):
        run_problems, run = _run_problems(run_data, f"runs[{i}]", conv)
        problems += run_problems
        if run is not None:
            runs.append(run)
    problems += _across_runs_problems(runs_data, runs, meta, conv)
    if problems or meta is None:
        return problems, None
    return [], Sweep(meta=meta, runs=runs)


def _top_level_problems(data: dict) -> tuple[list[str], SweepMeta | None, Conventions]:
    """The format, the top-level keys and meta; the conventions the costs are computed under."""
    problems = []
    for key in data:
        if key not in ("matcher_sweep", "meta", "runs"):
            problems.append(f"{key}: unknown top-level key (expected matcher_sweep, meta, runs)")
    if data.get("matcher_sweep") != SWEEP_FORMAT:
        problems.append(f"matcher_sweep: must be {SWEEP_FORMAT} (the sweep format version), "
                        f"got {data.get('matcher_sweep')!r}")
    meta_problems, meta = field_problems(SweepMeta, data.get("meta"), "meta")
    problems += meta_problems
    conv = None
    if meta is not None:
        try:
            conv = Conventions(**meta.conventions)
        except (TypeError, ConfigError) as err:
            problems.append(f"meta.conventions: {err}")
    return problems, meta, conv or Conventions()


def _run_problems(run_data: Any, where: str, conv: Conventions) -> tuple[list[str], Run | None]:
    """One entry of runs: its problems, and the Run when its own fields are sound."""
    if not isinstance(run_data, dict):
        return [f"{where}: expected a mapping, got {type(run_data).__name__}"], None
    problems = [f"{where}.{key}: {unknown_key(key, RUN_KEYS)}" for key in run_data if key not in RUN_KEYS]
    name = run_data.get("name")
    if not isinstance(name, str) or not _RUN_NAME.match(name):
        problems.append(f"{where}.name: must be a name of letters, digits, '.', '_' or '-', got {name!r}")
    group = run_data.get("group", name)
    if not isinstance(group, str):
        problems.append(f"{where}.group: must be a string, got {group!r}")
    role = run_data.get("role")
    if role not in ROLES:
        problems.append(f"{where}.role: must be one of {', '.join(ROLES)}, got {role!r}")
    model_problems, model = field_problems(ModelConfig, run_data.get("model"), f"{where}.model")
    train_problems, train = field_problems(TrainConfig, run_data.get("train"), f"{where}.train")
    problems += model_problems + train_problems
    if model is not None and train is not None and model.seq_len != train.seq_len:
        # One context: the model is built for and trained at train.seq_len; a model.seq_len that
        # differs would be a number the sweep records but nothing uses.
        problems.append(f"{where}.model.seq_len: {model.seq_len} differs from {where}.train.seq_len "
                        f"{train.seq_len}; the model's context and the training one are one setting: set "
                        "both to the same value (or plan again with --seq-len)")
    problems += _predicted_problems(run_data.get("predicted", {}), where)
    if problems or model is None or train is None:
        return problems, None
    # Predictions are always recomputed from the configs: stale numbers in the file are neither trusted
    # nor an error (micro_batch_size and recompute may be edited between attempts); whether the runs are
    # still matched is checked across the runs, on the fresh numbers.
    return [], Run(name=name, group=group, role=role, model=model, train=train,
                   predicted=predict(model, train, conv))


def _predicted_problems(predicted: Any, where: str) -> list[str]:
    if not isinstance(predicted, dict):
        return [f"{where}.predicted: must be a mapping of cost: number"]
    problems = []
    for key, value in predicted.items():
        if key not in PREDICTED_KEYS + BODY_PREDICTED_KEYS:
            known = ", ".join(PREDICTED_KEYS + BODY_PREDICTED_KEYS)
            problems.append(f"{where}.predicted.{key}: unknown cost (known: {known})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}.predicted.{key}: must be a number, got {value!r}")
    return problems


def _across_runs_problems(runs_data: list, runs: list[Run], meta: SweepMeta | None,
                          conv: Conventions) -> list[str]:
    """What no single run shows: duplicate names, the one target, the matching, the data, one step size."""
    problems = []
    names = [r.get("name") for r in runs_data if isinstance(r, dict)]
    for dup in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
        problems.append(f"runs: run name {dup!r} appears more than once (names must be unique)")
    roles = [r.get("role") for r in runs_data if isinstance(r, dict)]
    if runs_data and "target" not in roles:
        problems.append("runs: no run has role: target (the baseline the others are compared with)")
    target_groups = sorted({r.group for r in runs if r.role == "target"})
    target_models = {repr(r.model) for r in runs if r.role == "target"}
    gridded = meta is not None and bool(meta.grid)  # the target's grid points are groups of one model
    if len(target_groups) > 1 and not (gridded and len(target_models) == 1):
        problems.append(f"runs: runs of several groups have role: target ({', '.join(target_groups)}); a sweep "
                        "compares its variants with one target: keep one, make the others role: variant")
    if meta is not None and (len(target_groups) == 1 or (gridded and len(target_models) == 1)):
        problems += _unmatched(runs, meta, conv)
    problems += _data_problems(runs)
    steps = {r.train.tokens_per_step for r in runs}
    if len(steps) > 1:
        problems.append(f"runs: tokens per step (batch_size x seq_len) differ between runs ({sorted(steps)}); "
                        "curves are only comparable with one value")
    return problems


def _unmatched(runs: list[Run], meta: SweepMeta, conv: Conventions) -> list[str]:
    """Variants whose (recomputed) matched costs are off the target's by more than the sweep's tolerance:
    edited after planning. Memory is compared at the micro-batch it was matched at, so an edited
    micro_batch_size (an execution setting) does not unmatch a sweep. With budgets, target and variants
    were each matched to the budget, so they may differ from each other by twice the tolerance."""
    target = next(run for run in runs if run.role == "target")
    allowed = meta.tolerance * (2 if meta.target == "budget" else 1)

    def cost(run: Run, quantity: str) -> float:
        """The recorded cost, or the search's (costs_of) at the batch and context it was matched at where the
        recorded one may be at others: inference memory is not recorded, training memory is recorded at the
        run's micro-batch, which may have been edited since."""
        recorded = COSTS[quantity].recorded
        if recorded is None or (quantity == "train_memory_bytes" and meta.memory_batch):
            matched_at = MatchSpec(conventions=conv, batch=meta.memory_batch or 1, seq_len=run.train.seq_len,
                                   inference_batch=meta.inference_batch,
                                   inference_context=meta.inference_context or None)
            return costs_of(run.model, matched_at, (quantity,))[quantity]
        return run.predicted[recorded]

    problems = []
    for i, run in enumerate(runs):
        if run.role != "variant":
            continue
        quantities = [q for q in meta.solved.get(run.group, meta.matched) if q in QUANTITIES]
        off = {q: cost(run, q) / cost(target, q) - 1 for q in quantities if cost(target, q)}
        worse = {q: r for q, r in off.items() if abs(r) > allowed + 1e-9}
        if worse:
            listing = ", ".join(f"{q} {r:+.2%}" for q, r in worse.items())
            problems.append(f"runs[{i}] ({run.name}): no longer matched to the target {target.name}: {listing} "
                            f"(tolerance {allowed:.1%}); the model was edited after planning: undo the edit, "
                            f"or plan again (`{meta.command}`)")
    return problems


def _data_problems(runs: list[Run]) -> list[str]:
    """What the trainer would refuse at its start (matcher.data.streams.open_training_data, an eval set
    that does not fit the context: matcher/eval/fit.py), found for every run now, not after the runs
    before it have trained. Each distinct setting is checked once."""
    found, checked = [], set()
    for i, run in enumerate(runs):
        train = run.train
        key = repr((train.data, train.eval_data, train.stream_seed, train.data_steps, train.seq_len,
                    run.model.vocab_size, train.tokenizer, train.loss_on, train.eval_examples))
        if key in checked:
            continue
        checked.add(key)
        try:
            tokenizer = tokenizer_for(train)
            _, problems = streams.open_training_data(
                train.data, train.eval_data, seed=train.stream_seed, n_steps=train.data_steps, seq_len=train.seq_len,
                vocab_size=run.model.vocab_size, eval_examples=train.eval_examples, tokenizer=tokenizer,
                loss_on=train.loss_on)
            check_fit(run_eval_task(problems, train), tokenizer, train.seq_len, in_training=True)
        except DataError as err:
            found.append(f"runs[{i}].train ({run.name}): {err}")
    return found


def missing_sweep_hint(path: Path) -> str:
    """What to do when a sweep file is not there: the sweeps beside it, or how to write one."""
    folder = path.parent if path.parent.is_dir() else Path("sweeps")
    found = sorted(str(p) for p in folder.glob("*.yaml"))[:8] if folder.is_dir() else []
    if found:
        return f"sweeps in {folder}: {', '.join(found)}"
    return "write one with `matcher plan --target <preset> --variants dr,dr_da`"


def ladder_sweeps(path: Path, data: Any) -> list[Path] | None:
    """The rung sweeps a ladder manifest (`matcher plan --ladder`) lists beside it; None when `data` is
    not a ladder manifest."""
    if not isinstance(data, dict) or "matcher_ladder" not in data:
        return None
    rungs = data.get("rungs") if isinstance(data.get("rungs"), list) else []
    return [path.parent / rung["sweep"] for rung in rungs
            if isinstance(rung, dict) and isinstance(rung.get("sweep"), str)]


NOT_PATHS = ("math", "math-latent", "char")  # train.data / eval_data / tokenizer values that name no file


def map_train_paths(data: Any, change) -> None:
    """Apply `change` to every file path in a parsed sweep's runs[*].train (data, its mixture's keys,
    eval_data, tokenizer or tokenizer.path), in place."""
    def one(value):
        return change(value) if isinstance(value, str) and value and value not in NOT_PATHS else value

    runs = data.get("runs") if isinstance(data, dict) else None
    for run in runs if isinstance(runs, list) else []:
        train = run.get("train") if isinstance(run, dict) else None
        if not isinstance(train, dict):
            continue
        if isinstance(train.get("data"), dict):
            train["data"] = {one(source): weight for source, weight in train["data"].items()}
        elif "data" in train:
            train["data"] = one(train["data"])
        if "eval_data" in train:
            train["eval_data"] = one(train["eval_data"])
        if isinstance(train.get("tokenizer"), dict) and "path" in train["tokenizer"]:
            train["tokenizer"]["path"] = one(train["tokenizer"]["path"])
        elif "tokenizer" in train:
            train["tokenizer"] = one(train["tokenizer"])


def _resolve_beside(data: Any, path: Path) -> list[str]:
    """Paths in the sweep resolve relative to the sweep file. An older sweep's path that exists only
    from the current directory (how they used to resolve) is kept, with a notice to rewrite it."""
    folder = path.parent
    relied: list[str] = []

    def resolve(value: str) -> str:
        if Path(value).is_absolute() or (folder / value).resolve() == Path(value).resolve():
            return value  # the same file either way (a sweep in the current directory): as written
        beside = os.path.normpath(folder / value)
        if not Path(beside).exists() and Path(value).exists():
            relied.append(value)
            return value
        return beside

    map_train_paths(data, resolve)
    return [f"{path}: {', '.join(dict.fromkeys(relied))} found from the current directory, not beside the sweep "
            f"file; paths in a sweep are relative to the sweep file's folder ({folder}): write them so "
            f"(e.g. {os.path.relpath(Path(relied[0]).resolve(), folder.resolve())})"] if relied else []


def load_sweep(path: str | Path, notices: bool = True) -> Sweep:
    """Load and validate a sweep file; every problem is listed in one ConfigError. Paths in it
    (train.data, eval_data, tokenizer) are relative to the sweep file's folder."""
    path = Path(path)
    data = read_yaml(path, missing_sweep_hint(path))
    rung_sweeps = ladder_sweeps(path, data)
    if rung_sweeps is not None:
        first = f" (e.g. `matcher run {rung_sweeps[0].as_posix()}`)" if rung_sweeps else ""
        raise ConfigError(f"{path} is a ladder manifest (written by `matcher plan --ladder`), not a sweep; its "
                          f"sweeps, one per rung, are beside it: {', '.join(p.as_posix() for p in rung_sweeps)}; "
                          f"give one of them{first}, and `matcher compare {path.as_posix()}` compares the rungs")
    old = rename_old_names(data)
    for note in _resolve_beside(data, path) + ([renamed_notice(str(path), old, "rename them in the file")]
                                                if old else []):
        if notices:
            notice(note)
    problems, sweep = check_sweep_data(data)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{path}: {len(problems)} problem(s); fix them and run `matcher sweep validate {path}`:\n{listing}")
    sweep.name = path.stem
    return sweep


def _relative_to(value: str, folder: Path) -> str:
    """A path given from the current directory, as the sweep file in `folder` writes it."""
    if Path(value).is_absolute():
        return value
    return Path(os.path.relpath(Path(value).resolve(), folder.resolve())).as_posix()


def check_before_writing(sweep: Sweep, path: str | Path) -> str:
    """The file text of `sweep` (paths written relative to the file's folder), after the checks `matcher
    sweep validate` makes on it (parsed back from that text): a sweep that would not validate is one
    ConfigError, and nothing is written."""
    path = Path(path)
    header = ("# matcher sweep: matched runs with full configs and predicted costs.\n"
              "# Check after editing: matcher sweep validate " + path.as_posix() + "\n"
              "# Paths (train.data, eval_data, tokenizer) are relative to this file's folder.\n")
    data = sweep.to_dict()
    map_train_paths(data, lambda value: _relative_to(value, path.parent))
    text = header + dump_yaml(data)
    # libyaml's parser where it is installed: this text is our own, and it parses 5-10x faster (the same
    # safe constructor and resolver, so the same data)
    parsed = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    _resolve_beside(parsed, path)
    problems, _ = check_sweep_data(parsed)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path}: not written: the sweep would not pass `matcher sweep validate`, "
                          f"{len(problems)} problem(s); change the request and plan again:\n{listing}")
    return text


def write_sweep(sweep: Sweep, path: str | Path, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise MatcherError(f"{path} exists; pass --force to overwrite it or --out to write elsewhere")
    write_text_atomic(path, check_before_writing(sweep, path))
    sweep.name = path.stem
    return path
