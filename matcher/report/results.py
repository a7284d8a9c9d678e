"""Load a sweep's results folder into pandas: the one place that reads what the runner writes.

One folder per run (`results/<sweep>/<run>/`, described file by file in matcher.run.contract): run.yaml
and status.json come from the run's snapshot; metrics.jsonl's "eval" and "train" lines (other events
ignored) and evals.jsonl's benchmark scores (`bench`) are read and checked line by line here. Every eval
row has its setting (matcher/eval/setting.py; derived, with a notice, for rows written before rows
carried one); rows of different settings are all kept, and matcher/report/settings.py chooses one per
task for a comparison. Runs whose
sweep entry was edited since they trained are refused (matcher.run.contract.stale_runs).

Runs that are still going or crashed are loaded for what they have, with their state, so reports
can mark them; a run without status.json yet is in state "new", one whose status.json cannot be read
"unknown". A line or file that cannot be read is skipped and described in `Results.warnings`
("path:line: problem; skipped") for the caller to print; the rest is used. A resumed run may log the
same checkpoint twice: the later line wins.
"""

# Function-local imports: pandas, only when results are tabulated.

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.config import VARIANTS, read_yaml
from matcher.console import notice
from matcher.errors import ConfigError, ResultsError
from matcher.eval.setting import derived_bench_setting, derived_training_setting, parse_setting
from matcher.names import resolve
from matcher.plan.search import current_names, renamed_notice
from matcher.plan.sweep import PREDICTED_KEYS as PREDICTED
from matcher.plan.sweep import ladder_sweeps
from matcher.run.contract import RunInfo, RunSnapshot, RunState, furthest, stale_runs
from matcher.run.rundir import RunDir, split_complete

if TYPE_CHECKING:
    import pandas as pd

EVAL_REQUIRED = ("step", "tokens", "eval_accuracy")
EVAL_OPTIONAL = ("train_loss", "eval_loss", "eval_bpb", "eval_n", "tokens_per_s", "mfu", "peak_memory_bytes",
                 "elapsed_s", "val_loss", "val_bpb")
EVAL_TEXT = ("eval_setting",)  # the in-training eval's setting (matcher/eval/setting.py)
BENCH_COLUMNS = ("run", "group", "seed", "task", "metric", "step", "tokens", "depth", "trained_depth", "n",
                 "score", "low", "high", "outcomes", "setting")
TRAIN_REQUIRED = ("step", "tokens", "train_loss")
TRAIN_OPTIONAL = ("lr", "tokens_per_s")
RUN_COLUMNS = ("run", "group", "seed", "role", "variant", "sweep", "state", "reason", "tokens") + PREDICTED


@dataclass
class Results:
    path: Path  # the sweep's results folder
    runs: pd.DataFrame  # one row per run: RUN_COLUMNS, in report order (baseline group first)
    evals: pd.DataFrame  # one row per run and eval checkpoint, by tokens: run, group, seed, EVAL_* fields
    train: pd.DataFrame  # one row per run and "train" line, by tokens: run, group, seed, TRAIN_* fields
    expert_load: dict[str, list[list[float]]]  # run -> [applied depth][expert] load share over the
    # training steps before its last eval that logged one (since the eval before it)
    warnings: list[str]
    # one row per run, task, metric, step and depth that `matcher eval` scored (BENCH_COLUMNS); outcomes:
    # the per-problem "0101..." string of an accuracy, else None
    bench: pd.DataFrame | None = None
    # run -> {tokens: per-problem outcomes "0101..."} of the in-training eval (eval_correct)
    eval_outcomes: dict[str, dict[float, str]] | None = None
    chosen_baseline: str | None = None  # a group given with `matcher compare --baseline`
    infos: dict[str, RunInfo] | None = None  # run -> its run.yaml (grid settings for matcher/report/selection.py)

    @property
    def groups(self) -> list[str]:
        """Group names in report order: the baseline (target) first, then la, dr, dr_da, then by name."""
        return list(dict.fromkeys(self.runs["group"]))

    @property
    def baseline(self) -> str:
        """The chosen group, else the group of the run(s) with role: target; ResultsError when there is
        not exactly one."""
        if self.chosen_baseline is not None:
            return self.chosen_baseline
        targets = list(dict.fromkeys(self.runs.loc[self.runs["role"] == "target", "group"]))
        if not targets:
            raise ResultsError(
                f"{self.path}: no run has role: target, so there is no baseline to compare with; "
                "the sweep's target run is the baseline (check its run.yaml)"
            )
        if len(targets) > 1:
            raise ResultsError(
                f"{self.path}: runs of several groups have role: target ({', '.join(targets)}); "
                "a sweep has one target: compare one sweep's folder"
            )
        return targets[0]


def with_baseline(results: Results, group: str) -> Results:
    """`results` compared against `group` (a group name, or a run name of that group) instead of the
    target; the name is read forgivingly, an unknown one lists the groups."""
    groups = results.groups
    by_run = dict(zip(results.runs["run"], results.runs["group"]))
    resolved = resolve(group, dict.fromkeys([*groups, *by_run]), "group")
    if resolved.notice:
        notice(resolved.notice)
    chosen = resolved.name if resolved.name in groups else by_run[resolved.name]
    return dataclasses.replace(results, chosen_baseline=chosen)


def load_results(path: str | Path) -> Results:
    """Read every run folder under `path` (a sweep's folder, or a results/ folder holding one sweep)."""
    import pandas as pd

    path, run_dirs = find_run_dirs(Path(path))
    warnings = [f"{d}: metrics but no run.yaml; run skipped" for d in sorted(path.iterdir())
                if (d / "metrics.jsonl").is_file() and not (d / "run.yaml").is_file()]
    runs, evals, train, expert_load, bench, outcomes, infos = [], [], [], {}, [], {}, {}
    recorded: dict[str, dict[str, Any]] = {}  # run folder -> its run.yaml, for the staleness check
    renamed: dict[str, dict[str, str]] = {}  # run -> old cost names in its run.yaml: {old: current}
    derived: list[str] = []  # files with rows that carry no eval setting
    for run_dir in run_dirs:
        snapshot = RunDir(run_dir).snapshot(records=[])  # the metrics lines are read and checked below
        meta = _run_meta(snapshot, run_dir / "run.yaml", warnings, renamed)
        if meta is None:
            continue
        if any(r["run"] == meta["run"] for r in runs):
            warnings.append(f"{run_dir / 'run.yaml'}: a second run named {meta['run']!r}; run skipped")
            continue
        recorded[str(run_dir)] = snapshot.info.to_dict()
        infos[meta["run"]] = snapshot.info
        status = _status(snapshot, warnings)
        run_evals, run_train, load = _read_metrics(run_dir / "metrics.jsonl", warnings)
        _add_training_settings(run_evals, snapshot.info, run_dir / "metrics.jsonl", derived)
        if not run_evals and not run_train and status["state"] not in (RunState.NEW, RunState.UNKNOWN):
            _warn_no_metrics(run_dir / "metrics.jsonl", status, warnings)
        keys = {"run": meta["run"], "group": meta["group"], "seed": meta["seed"]}
        outcomes[meta["run"]] = {row["tokens"]: row.pop("eval_correct") for row in run_evals
                                 if isinstance(row.get("eval_correct"), str)}
        for row in run_evals:
            row.pop("eval_correct", None)
        bench += [{**keys, **row} for row in _read_bench(run_dir / "evals.jsonl", warnings, derived)]
        evals += [{**keys, **row} for row in run_evals]
        train += [{**keys, **row} for row in run_train]
        if load is not None:
            expert_load[meta["run"]] = load
        runs.append({**meta, **status, "tokens": furthest("tokens", snapshot.status, run_evals + run_train)})
    _check_against_sweep_files(path, recorded, warnings)
    if renamed:
        old = {name: current for names in renamed.values() for name, current in names.items()}
        warnings.append(renamed_notice(f"{path}: run.yaml `predicted` of {', '.join(renamed)}", old,
                                       "rename them in each run.yaml"))
    if derived:
        notice(f"{len(derived)} file(s) hold eval rows written before matcher recorded each eval's setting "
               f"({', '.join(derived[:3])}{', ...' if len(derived) > 3 else ''}); their settings are derived from "
               "what the rows hold, with ? for a file's hash and the metric version")
    sweeps = sorted({r["sweep"] for r in runs if r["sweep"]})
    if len(sweeps) > 1:
        warnings.append(f"{path}: runs of several sweeps ({', '.join(sweeps)}) are compared together")

    runs = _report_order(pd.DataFrame(runs, columns=list(RUN_COLUMNS)))
    for group, seeds in runs.groupby("group", sort=False):
        if any(seeds[key].nunique(dropna=False) > 1 for key in PREDICTED):
            warnings.append(f"{path}: the runs of group {group} have different predicted costs; "
                            f"reports show those of {seeds['run'].iloc[0]}")
    order = {name: i for i, name in enumerate(runs["run"])}
    keys = ["run", "group", "seed"]
    evals = _in_run_order(pd.DataFrame(evals, columns=[*keys, *EVAL_REQUIRED, *EVAL_OPTIONAL, *EVAL_TEXT]), order)
    train = _in_run_order(pd.DataFrame(train, columns=[*keys, *TRAIN_REQUIRED, *TRAIN_OPTIONAL]), order)
    bench = _in_run_order(pd.DataFrame(bench, columns=list(BENCH_COLUMNS)), order)
    return Results(path, runs, evals, train, expert_load, warnings, bench, outcomes, infos=infos)


def _add_training_settings(run_evals: list[dict[str, Any]], info: RunInfo, path: Path, derived: list[str]) -> None:
    """Each eval row's `eval_setting`: its line's, or for lines of an older matcher one derived from the
    run's train config (and `path` added to `derived`)."""
    missing = [row for row in run_evals if not isinstance(row.get("eval_setting"), str)]
    for row in missing:
        row["eval_setting"] = derived_training_setting(info.train, row)
    if missing:
        derived.append(str(path))


def _read_bench(path: Path, warnings: list[str], derived: list[str]) -> list[dict[str, Any]]:
    """evals.jsonl as one row per metric (later lines of the same setting, step and depth win; other
    settings are kept beside them). Rows without a setting get a derived one, and `path` is added to
    `derived`."""
    if not path.is_file():
        return []
    rows: dict[tuple, dict[str, Any]] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = json.loads(raw)
            scores, intervals = line["scores"], line.get("intervals") or {}
            base = {key: line[key] for key in ("task", "step", "tokens", "depth", "n")}
            base["trained_depth"] = line.get("trained_depth", line["depth"])
            assert isinstance(scores, dict) and all(_is_number(base[k]) for k in ("step", "tokens", "depth", "n"))
        except (ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError):
            warnings.append(f"{path}:{number}: not a benchmark row; skipped")
            continue
        if _is_setting(line.get("setting")):
            base["setting"] = line["setting"]
        else:
            base["setting"] = derived_bench_setting(line)
            if str(path) not in derived:
                derived.append(str(path))
        for metric, score in scores.items():
            interval = intervals.get(metric) or (None, None)
            outcome = (line.get("outcomes") or {}).get(metric)
            rows[(base["setting"], base["task"], metric, base["step"], base["depth"])] = {
                **base, "metric": metric, "score": score if _is_number(score) else math.nan,
                "low": interval[0], "high": interval[1], "outcomes": outcome if isinstance(outcome, str) else None}
    return sorted(rows.values(), key=lambda r: (r["task"], r["metric"], r["depth"], r["tokens"]))


def _check_against_sweep_files(path: Path, recorded: dict[str, dict[str, Any]], warnings: list[str]) -> None:
    """Runs whose sweep entry has changed since they trained are refused (their curve is not the entry's);
    runs of several sweep files, or no longer in theirs, are warned about (matcher.run.contract.stale_runs)."""
    check = stale_runs(recorded)
    if len(check.sweep_files) > 1:
        listing = "; ".join(f"{file}: {', '.join(Path(d).name for d in folders)}"
                            for file, folders in check.sweep_files.items())
        warnings.append(f"{path}: runs of {len(check.sweep_files)} different sweep files are compared together "
                        f"({listing})")
    warnings += [f"{file}: cannot be read to check the runs against it ({why})" for file, why in check.unreadable]
    warnings += [f"{folder}: no longer a run of {file}" for folder, file in check.gone]
    stale = [f"{Path(folder).name} ({'; '.join(changes[:3])})" for folder, _, changes in check.edited]
    if stale:
        raise ResultsError(f"{path}: {len(stale)} run(s) were trained with another config than their sweep file "
                           f"now gives them: {', '.join(stale)}. Their curves are not those of the edited entries: "
                           "restore the entries to compare these results, or train the edited sweep into another "
                           "folder (`matcher run SWEEP --results DIR`) and compare that")


def _results_folders_hint(path: Path) -> str:
    """Where `matcher run` trains the sweep file `path`, or each rung of the ladder manifest `path`."""
    try:
        rung_sweeps = ladder_sweeps(path, read_yaml(path))
    except ConfigError:
        rung_sweeps = None
    if rung_sweeps:
        folders = ", ".join(f"results/{sweep.stem}" for sweep in rung_sweeps)
        return f"{path} is a ladder manifest; its rungs train in {folders} (one at a time)"
    return f"for the sweep {path}, results/{path.stem}" if path.suffix in (".yaml", ".yml") else "e.g. results/<sweep>"


def find_run_dirs(path: Path) -> tuple[Path, list[Path]]:
    """The sweep folder `path` names (itself, or the one sweep in a results/ folder) and its run folders."""
    if path.is_file():
        raise ResultsError(f"{path} is a file; give a sweep's results folder: {_results_folders_hint(path)}")
    if not path.is_dir():
        raise ResultsError(f"{path}: no such folder; give a sweep's results folder, e.g. results/<sweep>")
    if (path / "run.yaml").is_file():
        raise ResultsError(f"{path} is one run's folder; give the sweep folder that holds it: {path.parent}")
    run_dirs = sorted(d for d in path.iterdir() if (d / "run.yaml").is_file())
    if run_dirs:
        return path, run_dirs
    sweeps = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob("*/run.yaml")))
    if len(sweeps) == 1:
        return sweeps[0], sorted(r.parent for r in sweeps[0].glob("*/run.yaml"))
    if sweeps:
        names = ", ".join(str(s) for s in sweeps)
        raise ResultsError(f"{path} holds several sweeps ({names}); give one of them")
    raise ResultsError(f"{path}: no runs in it (no <run>/run.yaml); give a trained sweep's results folder")


def _run_meta(snapshot: RunSnapshot, path: Path, warnings: list[str],
              renamed: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    """The run's RUN_COLUMNS from its run.yaml (None, with a warning, when it cannot be read); old cost
    names (written before a quantity had one name) are read as the current ones and noted in `renamed`."""
    info: RunInfo | None = snapshot.info
    if info is None:
        warnings.append(f"{'; '.join(snapshot.problems)}; run skipped")
        return None
    meta = {"run": info.run, "group": info.group, "seed": info.seed, "role": info.role,
            "variant": info.variant, "sweep": info.sweep or ""}
    names, old = current_names(info.predicted)
    predicted = dict(zip(names, info.predicted.values()))
    if old:
        renamed[info.run] = old
    missing = [key for key in PREDICTED if not _is_number(predicted.get(key))]
    if missing:
        warnings.append(f"{path}: predicted has no {', '.join(missing)}; shown as missing")
    return {**meta, **{key: predicted.get(key) if key not in missing else None for key in PREDICTED}}


def _warn_no_metrics(path: Path, status: dict[str, Any], warnings: list[str]) -> None:
    """A run that has trained (its status says so) but whose metrics file is gone or empty: its points
    would show as "not reached" while they are lost, so it is said."""
    where = f"{status['state']} at {status['tokens']:,} tokens" if status["tokens"] else status["state"]
    if not path.is_file():
        warnings.append(f"{path}: missing, though the run is {where}; its points show as not reached. Restore "
                        "the file, or delete the run folder and train it again")
    elif not path.read_bytes().strip():
        warnings.append(f"{path}: empty, though the run is {where}; its points show as not reached. Restore "
                        "the file, or delete the run folder and train it again")


def _status(snapshot: RunSnapshot, warnings: list[str]) -> dict[str, Any]:
    status, problem = snapshot.status, snapshot.status_problem
    if problem is not None:
        warnings.append(f"{problem}; state unknown")
    return {"state": status.state.value, "reason": None if problem else status.reason, "tokens": status.tokens}


def _read_metrics(path: Path, warnings: list[str]) -> tuple[list[dict], list[dict], list[list[float]] | None]:
    """Eval rows and train rows (each by tokens, the later of two lines for the same tokens kept), and
    the expert load of the last eval that carries one."""
    if not path.is_file():
        return [], [], None
    evals: dict[float, dict] = {}
    train: dict[float, dict] = {}
    loads: dict[float, list[list[float]]] = {}
    repeated: dict[str, list[float]] = {"eval": [], "train": []}
    raw_lines, cut = split_complete(path.read_bytes())
    if cut.strip():
        warnings.append(f"{path}:{len(raw_lines) + 1}: cut off (the run stopped while writing it); skipped")
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            warnings.append(f"{path}:{number}: not valid JSON ({_short(err)}); skipped")
            continue
        if not isinstance(line, dict):
            warnings.append(f"{path}:{number}: not a JSON object; skipped")
            continue
        if line.get("event") == "eval":
            row, problem = _fields(line, EVAL_REQUIRED, EVAL_OPTIONAL)
            if problem is None and isinstance(line.get("eval_correct"), str):
                row["eval_correct"] = line["eval_correct"]
            if problem is None and _is_setting(line.get("eval_setting")):
                row["eval_setting"] = line["eval_setting"]
            elif problem is None and _is_number(line.get("eval_n_total")):  # to derive the setting
                row["eval_n_total"] = line["eval_n_total"]
            if problem is None and not 0 <= row["eval_accuracy"] <= 1:
                problem = f"eval_accuracy must be between 0 and 1, got {row['eval_accuracy']!r}"
            load = line.get("expert_load")
            if problem is None and load is not None and not _is_load(load):
                problem = "expert_load must be null or a list per depth of equally long lists of numbers"
            if problem is None:
                if row["tokens"] in evals:
                    repeated["eval"].append(row["tokens"])
                evals[row["tokens"]] = row
                loads.pop(row["tokens"], None)
                if load is not None:
                    loads[row["tokens"]] = [[float(x) for x in depth] for depth in load]
        elif line.get("event") == "train":
            row, problem = _fields(line, TRAIN_REQUIRED, TRAIN_OPTIONAL)
            if problem is None:
                if row["tokens"] in train:
                    repeated["train"].append(row["tokens"])
                train[row["tokens"]] = row
        else:
            continue
        if problem is not None:
            warnings.append(f"{path}:{number}: {line['event']} line {problem}; skipped")
    twice = sorted(set(repeated["eval"] + repeated["train"]))
    if twice:
        points = ", ".join(f"{t:,}" for t in twice[:5]) + (", ..." if len(twice) > 5 else "")
        warnings.append(f"{path}: {len(twice)} point(s) logged more than once (tokens {points}): the file holds "
                        "two trajectories (two trainers wrote it, or an older matcher resumed without cutting "
                        "it); the last line of each point is used")
    last_load = loads[max(loads)] if loads else None
    return [evals[t] for t in sorted(evals)], [train[t] for t in sorted(train)], last_load


def _fields(line: dict, required: tuple[str, ...], optional: tuple[str, ...]) -> tuple[dict, str | None]:
    """The row of a metrics line (a missing or null optional field is NaN), or what is wrong with it."""
    row = {}
    for key in required:
        if not _is_number(line.get(key)):
            return {}, f"has no number {key} (got {line.get(key)!r})"
        row[key] = line[key]
    if not math.isfinite(row["tokens"]) or row["tokens"] < 0:
        return {}, f"tokens must be a count >= 0, got {row['tokens']!r}"
    for key in optional:
        value = line.get(key)
        if value is not None and not _is_number(value):
            return {}, f"{key} must be a number or null, got {value!r}"
        row[key] = math.nan if value is None else value
    return row, None


def _is_setting(value: Any) -> bool:
    """An eval setting string (matcher/eval/setting.py); anything else is derived as for an older row."""
    try:
        parse_setting(value)
    except (ValueError, AttributeError):
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_load(load: Any) -> bool:
    return (
        isinstance(load, list) and len(load) > 0
        and all(isinstance(depth, list) and len(depth) == len(load[0]) > 0 for depth in load)
        and all(_is_number(x) for depth in load for x in depth)
    )


def _short(err: Exception) -> str:
    """The problem without json's position (the caller gives the line): "Expecting ',' delimiter"."""
    return "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else str(err).split(":")[0]


def _report_order(runs: pd.DataFrame) -> pd.DataFrame:
    """Baseline (target) groups first, then groups by variant (la, dr, dr_da) and name; seeds in order."""
    rank = runs.assign(
        _target=runs.groupby("group")["role"].transform(lambda roles: 0 if (roles == "target").any() else 1),
        _variant=runs["variant"].map({v: i for i, v in enumerate(VARIANTS)}),
    )
    rank = rank.sort_values(["_target", "_variant", "group", "seed", "run"], kind="stable")
    return rank.drop(columns=["_target", "_variant"]).reset_index(drop=True)


def _in_run_order(frame: pd.DataFrame, run_order: dict[str, int]) -> pd.DataFrame:
    """Rows of each run stay in token order (as read); runs in report order."""
    ordered = frame.sort_values("run", key=lambda runs: runs.map(run_order), kind="stable")
    return ordered.reset_index(drop=True)
