"""One eval setting per curve (`matcher compare --eval-setting ID`).

Each eval row has a setting (matcher/eval/setting.py). A task's curve, and every table built from it,
holds the rows of one setting; the same setting at other test-time depths goes with it (the depth
table). A task scored under several settings (say n=20 after n=200) is refused until one is chosen:
`--eval-setting ID`, once per such task, where ID is the setting's id or a prefix of it. The in-training
eval (metrics.jsonl) and `matcher eval`'s benchmarks (evals.jsonl) are chosen separately, each by task.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from matcher.errors import ResultsError
from matcher.eval.setting import parse_setting, without_depth

if TYPE_CHECKING:
    from matcher.report.results import Results

IN_TRAINING = "in-training eval"
BENCHMARK = "matcher eval"


@dataclasses.dataclass
class TaskSettings:
    """The settings one task's rows hold, by curve (a setting without its depth)."""

    source: str  # IN_TRAINING or BENCHMARK
    task: str
    curves: dict[str, list[str]]  # curve key -> the settings of its rows (one per depth), trained depth first
    runs: dict[str, list[str]]  # curve key -> the runs with rows of it
    rows: dict[str, int]  # curve key -> how many rows

    def shown(self, curve: str) -> str:
        """The setting that names the curve: its trained-depth one where it has one."""
        return self.curves[curve][0]


def task_settings(results: Results) -> list[TaskSettings]:
    """Every task's settings, the in-training eval's first."""
    found: dict[tuple[str, str], TaskSettings] = {}

    def add(source: str, task: str, setting: str, run: str) -> None:
        entry = found.setdefault((source, task), TaskSettings(source, task, {}, {}, {}))
        curve = without_depth(setting)
        settings = entry.curves.setdefault(curve, [])
        if setting not in settings:
            trained = parse_setting(setting)[2]["depth"] == "trained"
            settings.insert(0 if trained else len(settings), setting)
        runs = entry.runs.setdefault(curve, [])
        if run not in runs:
            runs.append(run)
        entry.rows[curve] = entry.rows.get(curve, 0) + 1

    for run, setting in zip(results.evals["run"], results.evals["eval_setting"]):
        add(IN_TRAINING, parse_setting(setting)[1], setting, run)
    bench = results.bench
    if bench is not None and len(bench):
        points = bench.drop_duplicates(["run", "setting", "step"])  # a row per metric: count points
        for run, task, setting in zip(points["run"], points["task"], points["setting"]):
            add(BENCHMARK, task, setting, run)
    return list(found.values())


def choose_eval_settings(results: Results, picks: list[str] | None = None) -> tuple[Results, list[str]]:
    """`results` with each task's rows of one setting, and a line per task naming it. `picks`: setting ids
    (or prefixes, or whole setting strings) for the tasks scored under several; ResultsError when such a
    task has none, or a pick matches no setting or several tasks' curves ambiguously."""
    tasks = task_settings(results)
    chosen = _resolve_picks(tasks, picks or [])
    mixed = [entry for entry in tasks if len(entry.curves) > 1 and (entry.source, entry.task) not in chosen]
    if mixed:
        listing = "; ".join(_listing(entry) for entry in mixed)
        example = mixed[0].shown(next(iter(mixed[0].curves))).split(" ")[0]
        raise ResultsError(
            f"{results.path}: {len(mixed)} task(s) were scored under several settings, and one curve holds one "
            f"setting: {listing}. Choose one per task with --eval-setting ID, e.g. --eval-setting {example} "
            "(repeat it for each task; an ID may be shortened to a unique prefix)")
    keep = {(entry.source, entry.task): chosen.get((entry.source, entry.task), next(iter(entry.curves)))
            for entry in tasks}
    evals = results.evals
    if len(evals):
        curve_of = evals["eval_setting"].map(without_depth)
        task_of = evals["eval_setting"].map(lambda s: parse_setting(s)[1])
        wanted = [keep.get((IN_TRAINING, task)) == curve for task, curve in zip(task_of, curve_of)]
        evals = evals[wanted].reset_index(drop=True)
    bench = results.bench
    if bench is not None and len(bench):
        wanted = [keep.get((BENCHMARK, task)) == without_depth(setting)
                  for task, setting in zip(bench["task"], bench["setting"])]
        bench = bench[wanted].reset_index(drop=True)
    used = [f"{entry.source} {entry.task}: {entry.shown(keep[entry.source, entry.task])}" for entry in tasks]
    return dataclasses.replace(results, evals=evals, bench=bench), used


def settings_summary(used: list[str]) -> str:
    """The report's line naming the setting of each task's curves."""
    return "Eval settings (one per curve; matcher/eval/setting.py): " + ("; ".join(used) if used else "none") + "."


def _listing(entry: TaskSettings) -> str:
    curves = ", ".join(f"{entry.shown(curve)} ({entry.rows[curve]} point(s) of {', '.join(entry.runs[curve])})"
                       for curve in entry.curves)
    return f"{entry.source} {entry.task}: {curves}"


def _resolve_picks(tasks: list[TaskSettings], picks: list[str]) -> dict[tuple[str, str], str]:
    """(source, task) -> the curve each pick chooses."""
    chosen: dict[tuple[str, str], str] = {}
    for pick in (p.strip() for p in picks):
        matches = [((entry.source, entry.task), curve) for entry in tasks for curve, settings in entry.curves.items()
                   if pick and any(s == pick or s.split(" ")[0].startswith(pick) for s in settings)]
        if not matches:
            known = "; ".join(entry.shown(curve) for entry in tasks for curve in entry.curves)
            raise ResultsError(f"--eval-setting {pick}: no eval row has that setting; the settings are: {known}")
        if len({task for (_, task), _ in matches}) > 1 or len({curve for _, curve in matches}) > 1:
            listing = "; ".join(dict.fromkeys(curve for _, curve in matches))
            raise ResultsError(f"--eval-setting {pick}: matches several settings ({listing}); give more of the id")
        for key, curve in matches:
            if key in chosen and chosen[key] != curve:
                raise ResultsError(f"--eval-setting: two settings chosen for {key[1]}; give one per task")
            chosen[key] = curve
    return chosen
