"""`matcher compare RESULTS_DIR`: the data-efficiency comparison of a trained (or training) sweep.

Reads the sweep's results folder, prints what could not be read as warnings (on stderr, so that
Markdown or CSV on stdout stays clean), and reports runs, tokens to reach target accuracies with
ratios to the baseline, accuracy and loss per checkpoint, and the matched costs: as rich tables in
the terminal, or as Markdown / CSV text to stdout or a file; optionally a figure (matcher/report/plots.py).
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console
from rich.text import Text

from matcher import console as consoles
from matcher.console import warning
from matcher.errors import ResultsError
from matcher.names import normalise, resolve
from matcher.plan.ladder import load_ladder
from matcher.report.comparison import baseline_targets, build_report
from matcher.report.efficiency import parse_metric_targets, parse_targets
from matcher.report.ladder import fit_power_laws, ladder_points, ladder_report, plot_ladder
from matcher.report.plots import plot_comparison
from matcher.report.render import print_rich, to_csv, to_json, to_markdown
from matcher.report.results import load_results, with_baseline
from matcher.report.selection import apply_selection, notices, selection_summary, selection_table
from matcher.report.settings import choose_eval_settings, settings_summary

FORMATS = ("table", "markdown", "csv")
FORMAT_ALIASES = {"md": "markdown", "rich": "table", "terminal": "table"}


def compare_command(
    results_dir: str | Path,
    targets: str | None = None,
    fmt: str | None = None,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    baseline: str | None = None,
    *,
    select: str | None = None,
    as_json: bool = False,
    force: bool = False,
    eval_settings: list[str] | None = None,
    console=None,
    err_console=None,
) -> None:
    """`targets`: accuracies as text ("0.3,0.5" or "30%,50%"), or metric levels ("bpb:1.2", "loss:2.0",
    "gsm8k-test.strict:0.3"); None: from the baseline's accuracy curve.
    `fmt`: table (rich, the default on a terminal), markdown or csv; None with `out`: from its suffix
    (.csv: csv, anything else: markdown). `out`: a file instead of stdout. `plot`: a figure file.
    `baseline`: the group (or a run of it) the others are compared with (default: the sweep's target).
    `select`: val_loss | val_bpb | none: how each variant's grid point is chosen (matcher/report/selection.py;
    None: val_loss on a grid sweep). `as_json`: the report as one JSON object, with the selection.
    `force`: overwrite an existing `out` or `plot` file (refused otherwise, before anything is read).
    `eval_settings`: the eval setting (id or prefix) of each task scored under several
    (matcher/report/settings.py).
    `console` / `err_console`: rich Consoles for the report and the warnings (default: matcher.console's
    stdout and stderr)."""
    if Path(results_dir).is_file():  # a ladder manifest (matcher plan --ladder), not a results folder
        given = [flag for flag, value in (("--baseline", baseline), ("--select", select), ("--json", as_json))
                 if value]
        if given:
            raise ResultsError(f"{', '.join(given)}: not for a ladder, whose rungs each compare with their own "
                               "target in one table of the rungs and their fit; compare one rung's results folder "
                               "for that")
        return ladder_compare(Path(results_dir), targets, plot, fmt=fmt, out=out, force=force, console=console,
                              err_console=err_console)

    if as_json and fmt is not None:
        raise ResultsError(f"--json and --format {fmt}: give one of them")
    console = console or consoles.out()
    err_console = err_console or consoles.err()
    fmt, out, plot = _outputs(fmt, out, plot, force)
    results, selections, baseline = apply_selection(load_results(results_dir), select, baseline)
    if baseline is not None:
        results = with_baseline(results, baseline)
    for text in results.warnings + (notices(selections) if selections is not None else []):
        warning(text, err_console)
    if results.runs.empty:
        raise ResultsError(f"{results.path}: no run could be read (see the warnings above)")
    results, settings_used = _one_setting_per_curve(results, eval_settings)
    chosen = _targets(results, targets, err_console)
    report = build_report(results, chosen, targets_given=targets is not None)
    if selections is not None:
        report.summary.append(selection_summary(selections))
        report.tables.insert(0, selection_table(selections))
    report.summary.append(_settings_line(settings_used))

    if as_json:
        text = to_json(report, {"selection": {s.family: s.to_dict() for s in selections}
                                if selections is not None else None, "baseline": results.baseline})
        if out is None:
            console.file.write(text)
        else:
            _write(Path(out), text)
            console.print(Text(f"wrote {out}"), soft_wrap=True)
    else:
        _emit(report, fmt, out, console)
    if plot is not None:
        written = plot_comparison(results, chosen, plot)
        console.print(Text(f"wrote {written}"), soft_wrap=True)


def _outputs(fmt: str | None, out: str | Path | None, plot: str | Path | None, force: bool,
             plot_name: str = "curves.png") -> tuple[str, Path | None, Path | None]:
    """The format, and the report and plot files, each refused before anything is read when it exists
    (without --force); a plot folder gets `plot_name`, a plot name without a suffix .png."""
    fmt = _format(fmt, out)
    if out is not None:
        out = _new_file(Path(out), force, "--out")
    if plot is not None:
        plot = Path(plot)
        plot = plot / plot_name if plot.is_dir() else plot if plot.suffix else plot.with_suffix(".png")
        plot = _new_file(plot, force, "--plot")
    return fmt, out, plot


def _targets(results, targets: str | None, err_console) -> list:
    """The levels to reach: those given, or by default from the baseline's accuracy curve (none, with a
    warning, before the baseline reaches 0.01)."""
    if targets is not None:
        return parse_metric_targets(targets)
    chosen = baseline_targets(results)
    if not chosen:
        warning(f"the baseline ({results.baseline}) has no eval with accuracy 0.01 or more yet, so there are "
                "no default targets; give --targets", err_console)
    return chosen


def _emit(report, fmt: str, out: Path | None, console) -> None:
    """`report` (matcher.report.comparison.Report) as rich tables on the console, or as text (the tables
    as plain text, Markdown or CSV) to stdout or the file `out`."""
    if fmt == "table" and out is None:
        print_rich(report, console)
        return
    if fmt == "table":
        recorder = Console(file=io.StringIO(), record=True, width=160, color_system=None)
        print_rich(report, recorder)
        text = "".join(line.rstrip() + "\n" for line in recorder.export_text().splitlines())
    else:
        text = to_markdown(report) if fmt == "markdown" else to_csv(report)
    if out is None:
        console.file.write(text)
    else:
        _write(Path(out), text)
        console.print(Text(f"wrote {out}"), soft_wrap=True)


def _one_setting_per_curve(results, picks: list[str] | None):
    """`results` with one eval setting per task, and what each task uses."""
    return choose_eval_settings(results, picks)


def _settings_line(used: list[str]) -> str:
    return settings_summary(used)


def _format(fmt: str | None, out: str | Path | None) -> str:
    if fmt is None:
        if out is None:
            return "table"
        return "csv" if Path(out).suffix.lower() == ".csv" else "markdown"
    return FORMAT_ALIASES.get(normalise(fmt)) or resolve(fmt, FORMATS, "format").name


def _new_file(path: Path, force: bool, flag: str) -> Path:
    """`path` if it may be written: not a folder, and not an existing file unless `force`."""
    if path.is_dir():
        raise ResultsError(f"{flag} {path} is a folder; give a file name in it, e.g. {path / 'compare.md'}")
    if path.exists() and not force:
        raise ResultsError(f"{flag} {path} exists; pass --force to overwrite it, or choose another {flag}")
    return path


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise ResultsError(f"cannot write {path}: {err.strerror}; choose another --out file") from None


def ladder_compare(manifest_path: Path, targets: str | None, plot: str | Path | None, *, fmt: str | None = None,
                   out: str | Path | None = None, force: bool = False, console=None, err_console=None,
                   results_root: Path | None = None) -> dict:
    """`matcher compare sweeps/ladder-.../ladder.yaml`: per rung and variant the FLOPs to one target
    accuracy and the final accuracy against the rung's training FLOPs, and a power law per variant;
    `fmt` and `out` as for a sweep's comparison."""
    console = console or consoles.out()
    err_console = err_console or consoles.err()
    fmt, out, plot = _outputs(fmt, out, plot, force, plot_name="ladder.png")
    manifest = load_ladder(manifest_path)
    target = None
    if targets is not None:
        chosen = parse_targets(targets)
        if len(chosen) != 1:
            raise ResultsError("a ladder is compared at one target accuracy: give one, e.g. --targets 0.3")
        target = chosen[0]
    points, target, warnings = ladder_points(manifest, manifest_path, target, results_root)
    for text in warnings:
        warning(text, err_console)
    laws = fit_power_laws(points)
    _emit(ladder_report(manifest_path.parent.name, points, laws, target), fmt, out, console)
    if plot is not None:
        console.print(Text(f"wrote {plot_ladder(points, laws, target, plot)}"), soft_wrap=True)
    return {"target": target, "points": points, "laws": laws}
