"""`matcher compare`: crossing rules on hand-made curves, seed aggregation, the results loader on a
committed results folder (a target, a variant with two seeds, a crashed run), golden Markdown and CSV,
corrupt lines, and the plot.

The golden files were written once from the output (compare_command(FIXTURE, fmt=..., out=...)) after
checking the numbers by hand; test_fixture_numbers_by_hand repeats that check in code.
"""

import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from matcher.commands.compare import compare_command
from matcher.errors import MatcherError, ResultsError
from matcher.eval.intervals import binomial_interval
from matcher.report.comparison import baseline_targets, bench_table, checkpoint_rows, depth_table, reach_table
from matcher.report.efficiency import (
    default_targets,
    efficiency_ratio,
    parse_metric_targets,
    parse_targets,
    spread,
    tokens_to_reach,
)
from matcher.report.results import load_results, with_baseline

HERE = Path(__file__).parent
FIXTURE = HERE / "data" / "results_fixture"
GOLDEN = HERE / "golden"


def _consoles():
    return Console(file=io.StringIO(), width=200), Console(file=io.StringIO(), width=200)


# --- crossing rules -------------------------------------------------------------------------------

def test_interpolates_in_log_tokens():
    # 0.4 is half way from 0.2 to 0.6, so half way from log(1000) to log(4000): sqrt(1000 * 4000).
    assert tokens_to_reach([1000, 4000], [0.2, 0.6], 0.4) == pytest.approx(2000)
    # A third of the way from 1e3 (0.3) to 1e4 (0.9) in log10: 10 ** (3 + 1/3).
    assert tokens_to_reach([100, 1000, 10000], [0.1, 0.3, 0.9], 0.5) == pytest.approx(10 ** (10 / 3))


def test_not_reached_is_none():
    assert tokens_to_reach([100, 1000], [0.1, 0.39], 0.4) is None
    assert tokens_to_reach([], [], 0.4) is None


def test_non_monotone_curve_uses_the_first_crossing():
    tokens, accuracy = [10, 100, 1000, 10000], [0.1, 0.5, 0.2, 0.8]
    # 0.4 first reached between 10 (0.1) and 100 (0.5): 3/4 of a decade above 10.
    assert tokens_to_reach(tokens, accuracy, 0.4) == pytest.approx(10 ** 1.75)
    # 0.6 only after the dip: between 1000 (0.2) and 10000 (0.8), 2/3 of a decade.
    assert tokens_to_reach(tokens, accuracy, 0.6) == pytest.approx(10 ** (3 + 2 / 3))


def test_exact_hit_on_a_checkpoint_is_that_checkpoint():
    assert tokens_to_reach([10, 100, 1000], [0.1, 0.4, 0.7], 0.4) == 100.0


def test_target_below_the_first_point_is_the_first_checkpoint():
    assert tokens_to_reach([500, 1000], [0.3, 0.5], 0.1) == 500.0


def test_zero_token_checkpoint_is_skipped():
    assert tokens_to_reach([0, 100, 1000], [0.5, 0.5, 0.9], 0.2) == 100.0
    assert tokens_to_reach([0, 100, 1000], [0.0, 0.5, 0.9], 0.7) == pytest.approx(10 ** 2.5)


def test_checkpoints_must_be_in_token_order():
    with pytest.raises(ValueError):
        tokens_to_reach([100, 100], [0.1, 0.2], 0.15)
    with pytest.raises(ValueError):
        tokens_to_reach([100], [0.1, 0.2], 0.15)


def test_ratio_is_baseline_over_variant():
    assert efficiency_ratio(2000.0, 1000.0) == 2.0
    assert efficiency_ratio(None, 1000.0) is None
    assert efficiency_ratio(2000.0, None) is None


def test_spread_over_seeds_counts_only_values_present():
    stats = spread([100.0, 300.0, None])
    assert (stats.mean, stats.n, stats.seeds) == (200.0, 2, 3)
    assert stats.std == pytest.approx(math.sqrt(2 * 100.0**2))  # sample std: divide by n - 1 = 1
    assert spread([5.0]) == type(stats)(5.0, None, 1, 1)
    assert spread([None, None]) == type(stats)(None, None, 0, 2)


def test_an_interval_that_cannot_be_estimated_is_none_not_zero_width():
    import numpy as np

    from matcher.report.comparison import reach_intervals
    from matcher.report.efficiency import Target

    target = Target("acc", 0.5)
    curves = {"a-s0": ([100.0, 200.0, 400.0], [0.2, 0.4, 0.8], None),
              "a-s1": ([100.0, 200.0, 400.0], [0.3, 0.6, 0.9], None),
              "base-s0": ([100.0, 200.0, 400.0], [0.1, 0.3, 0.6], None)}
    assert reach_intervals(curves, ["base-s0"], ["base-s0"], target, samples=50) == (None, None)  # one seed
    tokens, ratio = reach_intervals(curves, ["a-s0", "a-s1"], ["base-s0"], target, samples=50)
    assert tokens[0] < tokens[1] and ratio[0] < ratio[1]  # two seeds: something to resample
    tokens, ratio = reach_intervals(curves, ["base-s0"], ["a-s0", "a-s1"], target, samples=50)
    assert tokens is None and ratio[0] < ratio[1]  # the group's one seed; the baseline's two vary the ratio
    rng = np.random.default_rng(0)
    with_outcomes = {"one-s0": ([100.0, 400.0], [0.25, 0.75], (rng.random((2, 40)) < [[0.25], [0.75]]).astype(float))}
    tokens, _ = reach_intervals(with_outcomes, ["one-s0"], ["one-s0"], target, samples=50)
    assert tokens[0] < tokens[1]  # one seed, but its problems are resampled


def test_default_targets():
    assert default_targets([0.0, 0.3, 0.8, 0.7]) == [0.2, 0.4, 0.6]  # 25/50/75% of the best, 0.8
    assert default_targets([0.04]) == [0.01, 0.02, 0.03]
    assert default_targets([0.01]) == [0.01]  # 0.0025 rounds to 0 (dropped), 0.005 and 0.0075 to 0.01
    assert default_targets([0.009]) == []  # 0.00675 rounds to 0.01, above the best: not reachable
    assert default_targets([0.0, 0.0]) == []
    assert default_targets([]) == []


def test_parse_targets():
    assert parse_targets("0.5,0.3") == [0.3, 0.5]
    assert parse_targets("30%, 50% 0.5") == [0.3, 0.5]
    for bad in ("50", "0", "abc", "", "nan"):
        with pytest.raises(ResultsError):
            parse_targets(bad)


# --- the committed results folder -----------------------------------------------------------------

def test_fixture_loads_with_states_and_two_warnings():
    results = load_results(FIXTURE)
    assert list(results.runs["run"]) == ["la-tiny-s0", "dr-tiny-s0", "dr-tiny-s1", "dr_da-tiny-s0"]
    assert results.groups == ["la-tiny", "dr-tiny", "dr_da-tiny"]
    assert results.baseline == "la-tiny"
    assert list(results.runs["state"]) == ["finished", "finished", "finished", "failed"]
    # dr_da crashed while writing its last line: reported with file and line, the rest is used.
    # dr-tiny-s1's file holds step 32 twice (an older resume): said, not hidden.
    assert len(results.warnings) == 2
    assert results.warnings[0].startswith(str(FIXTURE / "dr-tiny-s1" / "metrics.jsonl") + ": 1 point(s) logged "
                                          "more than once (tokens 32,768): the file holds two trajectories")
    assert results.warnings[1].startswith(str(FIXTURE / "dr_da-tiny-s0" / "metrics.jsonl") + ":7: cut off")
    dr_da = results.runs.set_index("run").loc["dr_da-tiny-s0"]
    assert dr_da["tokens"] == 40960 and dr_da["reason"].startswith("train loss is NaN")
    # dr-tiny-s1 was resumed and evaluated step 32 twice: the later line (0.40, not 0.38) counts.
    s1 = results.evals[results.evals["run"] == "dr-tiny-s1"]
    assert list(s1["tokens"]) == [16384, 32768, 65536, 131072]
    assert list(s1["eval_accuracy"]) == [0.30, 0.40, 0.35, 0.65]
    # Expert load: the last eval that logged one (dr_da's at 32768 tokens), per depth and expert.
    assert len(results.expert_load["la-tiny-s0"]) == 4 and len(results.expert_load["la-tiny-s0"][0]) == 4
    assert len(results.expert_load["dr_da-tiny-s0"][0]) == 14
    assert results.expert_load["dr_da-tiny-s0"][0][0] == 0.085


def test_fixture_numbers_by_hand():
    """The numbers in the golden files, from the fixture's curves by hand (tokens double per eval)."""
    results = load_results(FIXTURE)
    # Baseline best mean accuracy 0.8: targets 0.2, 0.4, 0.6.
    targets = baseline_targets(results)
    assert targets == [0.2, 0.4, 0.6]
    rows = {(r["target"], r["group"]): r for r in reach_table(results, targets).rows}
    k = 16384
    la = {0.2: k * 2**0.5, 0.4: 2 * k * 2 ** (1 / 3), 0.6: 4 * k}  # 0.1 -> 0.3, 0.3 -> 0.6, exact hit
    dr_s0 = {0.2: k, 0.4: k * 2 ** (2 / 3), 0.6: 2 * k * 2**0.5}  # exact hit, 0.2 -> 0.5, 0.5 -> 0.7
    dr_s1 = {0.2: k, 0.4: 2 * k, 0.6: 4 * k * 2 ** (5 / 6)}  # below first point, exact hit, after the dip
    for target in targets:
        assert rows[target, "la-tiny"]["tokens_mean"] == pytest.approx(la[target])
        dr = rows[target, "dr-tiny"]
        assert dr["tokens_mean"] == pytest.approx((dr_s0[target] + dr_s1[target]) / 2)
        assert dr["tokens_std"] == pytest.approx(abs(dr_s0[target] - dr_s1[target]) / 2**0.5)
        assert dr["vs_baseline"] == pytest.approx(la[target] / dr["tokens_mean"])
        assert (dr["seeds"], dr["reached"]) == (2, 2)
    crashed = [rows[t, "dr_da-tiny"] for t in targets]
    assert crashed[0]["tokens_mean"] == pytest.approx(k * 2**0.25)  # 0.15 -> 0.35
    assert crashed[0]["vs_baseline"] == pytest.approx(2**0.25)  # sqrt(2) k / 2^(1/4) k
    assert [r["tokens_mean"] for r in crashed[1:]] == [None, None]  # stopped at 0.35
    assert [r["vs_baseline"] for r in crashed[1:]] == [None, None]
    assert crashed[0]["state"] == "failed"
    # Accuracy per checkpoint over dr's seeds at 65536 tokens: 0.70 and 0.35.
    at = next(r for r in checkpoint_rows(results) if r["group"] == "dr-tiny" and r["tokens"] == 65536)
    assert at["eval_accuracy_mean"] == pytest.approx(0.525)
    assert at["eval_accuracy_std"] == pytest.approx(0.35 / 2**0.5)
    assert at["eval_loss_mean"] == pytest.approx((2.10 + 2.95) / 2)


@pytest.mark.parametrize("fmt,golden", [("markdown", "compare.md"), ("csv", "compare.csv")])
def test_golden_output(tmp_path, fmt, golden):
    out, err = _consoles()
    written = tmp_path / golden
    compare_command(FIXTURE, fmt=fmt, out=written, console=out, err_console=err)
    assert written.read_text(encoding="utf-8") == (GOLDEN / golden).read_text(encoding="utf-8")
    assert "dr_da-tiny-s0/metrics.jsonl:7: cut off" in err.file.getvalue()


def test_markdown_to_stdout_and_format_from_suffix(tmp_path):
    out, err = _consoles()
    compare_command(FIXTURE, fmt="md", console=out, err_console=err)
    assert out.file.getvalue() == (GOLDEN / "compare.md").read_text(encoding="utf-8")
    compare_command(FIXTURE, out=tmp_path / "x.csv", console=out, err_console=err)
    assert (tmp_path / "x.csv").read_text() == (GOLDEN / "compare.csv").read_text()


def test_terminal_tables_and_given_targets():
    out, err = _consoles()
    compare_command(FIXTURE, targets="50%", console=out, err_console=err)
    text = out.file.getvalue()
    assert "Targets: 0.5 (given)." in text
    assert "Tokens to reach target" in text and "Matched costs" in text
    # 0.5, dr-tiny: s0 exactly at 32768; s1 from 0.35 (65536) to 0.65 (131072), half way: 65536 sqrt(2).
    # Mean 62725. Baseline: 0.3 (32768) to 0.6 (65536), 2/3 of the way: 32768 * 2^(2/3) = 52016.
    dr_line = next(line for line in text.splitlines() if "dr-tiny" in line and "62.7k" in line)
    assert "0.83x" in dr_line and "42.4k" in dr_line  # 52016 / 62725; std (92682 - 32768) / sqrt(2)
    assert "not reached" in text


def _copy_fixture(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "tiny"))


def test_run_folders_with_old_cost_names_load_with_one_notice(tmp_path):
    """run.yaml files written before a quantity had one name (training_memory_bytes): read as the current
    name (train_memory_bytes), with one warning for the whole folder that says what to rename."""
    sweep = _copy_fixture(tmp_path)
    for run_yaml in sweep.glob("*/run.yaml"):
        run_yaml.write_text(run_yaml.read_text().replace("train_memory_bytes:", "training_memory_bytes:"))
    results = load_results(sweep)
    assert list(results.runs["train_memory_bytes"]) == list(load_results(FIXTURE).runs["train_memory_bytes"])
    renamed = [" ".join(w.split()) for w in results.warnings if "old name" in w]
    assert len(renamed) == 1
    assert "training_memory_bytes -> train_memory_bytes" in renamed[0]
    assert "dr-tiny-s0, dr-tiny-s1, dr_da-tiny-s0, la-tiny-s0" in renamed[0]
    assert "rename them in each run.yaml" in renamed[0]
    assert not [w for w in load_results(FIXTURE).warnings if "old name" in w]


def test_corrupt_lines_are_reported_and_skipped(tmp_path):
    sweep = _copy_fixture(tmp_path)
    metrics = sweep / "la-tiny-s0" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines.insert(2, "{not json\n")  # becomes line 3
    lines.insert(4, '{"event": "eval", "step": 20, "tokens": 20480, "eval_accuracy": 52.0}\n')  # line 5
    lines.insert(5, '[1, 2]\n')  # line 6
    lines.insert(6, '{"event": "eval", "step": 21, "tokens": "many", "eval_accuracy": 0.1}\n')  # line 7
    lines.insert(7, '{"event": "checkpoint", "step": 16}\n')  # unknown event: ignored, no warning
    metrics.write_text("".join(lines))
    results = load_results(sweep)
    mine = [w for w in results.warnings if "la-tiny-s0" in w]
    assert [w.split(": ", 1)[0] for w in mine] == [f"{metrics}:{n}" for n in (3, 5, 6, 7)]
    assert "not valid JSON" in mine[0] and "eval_accuracy must be between 0 and 1" in mine[1]
    assert "not a JSON object" in mine[2] and "has no number tokens" in mine[3]
    assert all(w.endswith("skipped") for w in mine)
    la = results.evals[results.evals["run"] == "la-tiny-s0"]
    assert list(la["tokens"]) == [0, 16384, 32768, 65536, 131072]  # every good eval kept


def test_missing_status_and_broken_run_yaml(tmp_path):
    sweep = _copy_fixture(tmp_path)
    (sweep / "dr-tiny-s1" / "status.json").unlink()
    (sweep / "dr_da-tiny-s0" / "run.yaml").write_text("run: dr_da-tiny-s0\ngroup: dr_da-tiny\nseed: 0\n")
    results = load_results(sweep)
    assert list(results.runs["run"]) == ["la-tiny-s0", "dr-tiny-s0", "dr-tiny-s1"]
    assert results.runs.set_index("run").loc["dr-tiny-s1", "state"] == "new"
    assert any(w.startswith(str(sweep / "dr_da-tiny-s0" / "run.yaml")) and "role: missing (required)" in w
               and w.endswith("run skipped") for w in results.warnings)
    out, err = _consoles()
    compare_command(sweep, fmt="csv", console=out, err_console=err)  # still compares what is there
    assert "dr-tiny-s1,dr-tiny,1,dr,variant,new," in out.file.getvalue()


def test_no_baseline_is_one_clear_error(tmp_path):
    sweep = _copy_fixture(tmp_path)
    run_yaml = sweep / "la-tiny-s0" / "run.yaml"
    run_yaml.write_text(run_yaml.read_text().replace("role: target", "role: variant"))
    out, err = _consoles()
    with pytest.raises(ResultsError, match="no run has role: target"):
        compare_command(sweep, console=out, err_console=err)


def test_folder_errors_and_a_results_folder_with_one_sweep(tmp_path):
    with pytest.raises(ResultsError, match="no such folder"):
        load_results(tmp_path / "missing")
    with pytest.raises(ResultsError, match="one run's folder"):
        load_results(FIXTURE / "la-tiny-s0")
    with pytest.raises(ResultsError, match="no runs in it"):
        load_results(tmp_path)
    _copy_fixture(tmp_path)
    assert load_results(tmp_path).path == tmp_path / "tiny"  # results/ holding one sweep: that sweep
    shutil.copytree(FIXTURE, tmp_path / "other")
    with pytest.raises(ResultsError, match="several sweeps"):
        load_results(tmp_path)


def test_the_heading_names_only_the_default_targets_there_are(tmp_path):
    """A baseline whose best accuracy is 0.03: 25% and 50% of it both round to 0.01, so there are two
    targets; the heading named three fractions as three targets."""
    sweep = _copy_fixture(tmp_path)
    for metrics in sweep.glob("*/metrics.jsonl"):
        metrics.write_text(re.sub(r'"eval_accuracy": ([0-9.]+)',
                                  lambda m: f'"eval_accuracy": {float(m[1]) * 0.0375:.4f}', metrics.read_text()))
    out, err = _consoles()
    compare_command(sweep, fmt="md", console=out, err_console=err)
    text = " ".join(out.file.getvalue().split())
    assert ("Targets: 0.01 (25% and 50%), 0.02 (75%) of the baseline's best mean accuracy 0.03, rounded to 2 "
            "decimals.") in text


def test_no_readable_run_and_no_default_targets(tmp_path):
    sweep = _copy_fixture(tmp_path)
    out, err = _consoles()
    metrics = sweep / "la-tiny-s0" / "metrics.jsonl"
    metrics.write_text(re.sub(r'"eval_accuracy": [0-9.]+', '"eval_accuracy": 0.0', metrics.read_text()))
    compare_command(sweep, fmt="md", console=out, err_console=err)  # baseline accuracy 0 everywhere
    assert "no default targets; give --targets" in err.file.getvalue()
    assert "Targets: none" in out.file.getvalue() and "No targets:" in out.file.getvalue()
    for run_yaml in sweep.glob("*/run.yaml"):
        run_yaml.write_text("[not, a, mapping]\n")
    with pytest.raises(ResultsError, match="no run could be read"):
        compare_command(sweep, console=out, err_console=err)


def test_seeds_with_different_predicted_costs_are_reported(tmp_path):
    sweep = _copy_fixture(tmp_path)
    run_yaml = sweep / "dr-tiny-s1" / "run.yaml"
    run_yaml.write_text(run_yaml.read_text().replace("total_params: 205952", "total_params: 205953"))
    assert any("group dr-tiny have different predicted costs" in w for w in load_results(sweep).warnings)


def test_numbers_read_like_every_matcher_table():
    from matcher.report.render import plain, readable

    assert readable(23170.48, "tokens") == "23.2k"
    assert readable(999_700, "tokens") == "1M"  # not "1e+03k"
    assert readable(1023 * 1024, "bytes") == "0.999 MiB"  # not "1.02e+03 KiB"
    assert readable(255552, "count") == "255.6K"
    assert readable(1.3456, "ratio") == "1.35x"
    assert (plain(23170.48, "tokens"), plain(1.34567, "ratio"), plain(None, "ratio")) == ("23170", "1.3457", "")


def test_compare_module_starts_without_heavy_imports():
    code = ("import sys, matcher.commands.compare; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=HERE.parent)
    assert result.stdout.strip() == "[]"


def test_unknown_format_is_a_user_error():
    out, err = _consoles()
    with pytest.raises(MatcherError, match="unknown format 'xml'"):
        compare_command(FIXTURE, fmt="xml", console=out, err_console=err)


# --- plots ----------------------------------------------------------------------------------------

def test_plot_writes_a_png(tmp_path):
    out, err = _consoles()
    compare_command(FIXTURE, plot=tmp_path / "plots" / "compare", console=out, err_console=err)
    path = tmp_path / "plots" / "compare.png"  # no suffix given: PNG
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert f"wrote {path}" in out.file.getvalue()


def test_depth_plot_draws_accuracies_only_where_a_task_has_them():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matcher.report.plots import _plot_depths

    def rows(run, metric, scores):
        return [{"run": run, "task": "embedded", "metric": metric, "depth": depth, "trained": 4, "score": score}
                for depth, score in zip((2, 4, 8), scores)]

    figure, axes = plt.subplots()
    _plot_depths([*rows("dr-s0", "acc", (0.1, 0.3, 0.2)), *rows("dr-s0", "loss", (2.0, 1.0, 1.5)),
                  *rows("dr-s0", "bpb", (3.0, 2.0, 2.5)), *rows("dr-s1", "acc", (0.2, 0.4, 0.1))], axes)
    assert [line.get_label() for line in axes.get_lines() if not line.get_label().startswith("_")] == [
        "dr-s0 embedded.acc", "dr-s1 embedded.acc"]
    assert axes.get_ylabel() == "accuracy"
    plt.close(figure)
    figure, axes = plt.subplots()  # a task with losses only (bpb) still gets its lines
    _plot_depths(rows("dr-s0", "bpb", (3.0, 2.0, 2.5)), axes)
    assert [line.get_label() for line in axes.get_lines() if not line.get_label().startswith("_")] == [
        "dr-s0 embedded.bpb"]
    plt.close(figure)


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    from matcher.report.plots import plot_comparison

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ResultsError, match=r"pip install 'matcher\[plot\]'"):
        plot_comparison(load_results(FIXTURE), [0.5], tmp_path / "x.png")


def test_another_group_as_the_baseline(capsys):
    out, err = _consoles()
    compare_command(FIXTURE, targets="0.2", baseline="DR_tiny", console=out, err_console=err)
    text = out.file.getvalue()
    assert "Baseline: dr-tiny (chosen with --baseline)." in text
    assert "read group 'DR_tiny' as 'dr-tiny'" in capsys.readouterr().err
    # 0.2: la-tiny at 16384 sqrt(2) tokens, dr-tiny at 16384 (both seeds): la needs 1/sqrt(2) = 0.71x
    la_line = next(line for line in text.splitlines() if re.match(r"│ acc\s+│\s+0\.2 │ la-tiny", line))
    assert "0.71x" in la_line
    dr_line = next(line for line in text.splitlines() if re.match(r"│ acc\s+│\s+0\.2 │ dr-tiny ", line))
    assert "1.00x" in dr_line
    results = with_baseline(load_results(FIXTURE), "dr-tiny-s1")  # a run names its group
    assert results.baseline == "dr-tiny"
    with pytest.raises(MatcherError, match="unknown group 'xx'.*Known groups: la-tiny, dr-tiny, dr_da-tiny"):
        with_baseline(load_results(FIXTURE), "xx")


def test_compare_never_overwrites_without_force(tmp_path):
    import hashlib

    sweep = _copy_fixture(tmp_path)
    metrics = sweep / "la-tiny-s0" / "metrics.jsonl"
    before = hashlib.sha256(metrics.read_bytes()).hexdigest()
    out, err = _consoles()
    with pytest.raises(ResultsError, match="--out .*metrics.jsonl exists; pass --force"):
        compare_command(sweep, out=metrics, console=out, err_console=err)
    assert hashlib.sha256(metrics.read_bytes()).hexdigest() == before
    with pytest.raises(ResultsError, match="--out .* is a folder; give a file name in it"):
        compare_command(sweep, out=sweep, console=out, err_console=err)
    table = tmp_path / "compare.md"
    table.write_text("mine\n")
    with pytest.raises(ResultsError, match="exists; pass --force"):
        compare_command(sweep, out=table, console=out, err_console=err)
    assert table.read_text() == "mine\n"
    compare_command(sweep, out=table, force=True, console=out, err_console=err)
    assert table.read_text().startswith("#") or "Tokens to reach" in table.read_text()


def test_plot_into_a_folder_writes_inside_it(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "figures").mkdir()
    out, err = _consoles()
    compare_command(FIXTURE, plot=tmp_path / "figures", console=out, err_console=err)
    assert (tmp_path / "figures" / "curves.png").is_file() and not (tmp_path / "figures.png").exists()
    with pytest.raises(ResultsError, match="--plot .*curves.png exists; pass --force"):
        compare_command(FIXTURE, plot=tmp_path / "figures", console=out, err_console=err)


# --- a ladder (matcher plan --ladder) --------------------------------------------------------------

def _ladder_fixture(tmp_path) -> Path:
    """Three rungs made of the committed results folder, the tokens of rung r scaled by 2^r and its
    training FLOPs by 4^r: every tokens-to-target doubles per rung, the final accuracies stay."""
    import json

    import yaml

    folder = tmp_path / "sweeps" / "ladder-x"
    folder.mkdir(parents=True)
    rungs = []
    for r, name in enumerate(("la-a", "la-b", "la-c")):
        stem = f"ladder-x-{name}"
        (folder / f"{stem}.yaml").write_text("# the rung's sweep\n")
        results = tmp_path / "results" / stem
        shutil.copytree(FIXTURE, results)
        for metrics in results.glob("*/metrics.jsonl"):
            lines = []
            for line in metrics.read_text().splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    lines.append(line)  # the fixture's cut-off line stays cut off
                    continue
                event["tokens"] = event["tokens"] * 2**r
                lines.append(json.dumps(event))
            metrics.write_text("\n".join(lines) + "\n")
        rungs.append({"target": name, "sweep": f"{stem}.yaml", "train_flops": 1e15 * 4**r})
    manifest = folder / "ladder.yaml"
    manifest.write_text(yaml.safe_dump({"matcher_ladder": 1, "results_root": str(tmp_path / "results"),
                                        "rungs": rungs}))
    return manifest


def test_a_ladder_fits_a_power_law_per_variant(tmp_path):
    from matcher.commands.compare import ladder_compare
    from matcher.report.efficiency import tokens_to_reach

    manifest = _ladder_fixture(tmp_path)
    out, err = _consoles()
    result = ladder_compare(manifest, "0.3", tmp_path / "ladder.png", console=out, err_console=err)
    assert (tmp_path / "ladder.png").stat().st_size > 0
    assert result["target"] == 0.3
    points = [p for p in result["points"] if p.variant == "la"]
    assert [p.rung for p in points] == ["la-a", "la-b", "la-c"]
    results = load_results(tmp_path / "results" / "ladder-x-la-a")
    evals = results.evals[results.evals["run"] == "la-tiny-s0"]
    by_hand = tokens_to_reach(list(evals["tokens"]), list(evals["eval_accuracy"]), 0.3)
    assert points[0].tokens_to_target == pytest.approx(by_hand)
    assert [p.tokens_to_target for p in points] == pytest.approx([by_hand, 2 * by_hand, 4 * by_hand])
    laws = {(law.variant, law.quantity): law for law in result["laws"]}
    # tokens x2 while C x4 per rung: FLOPs to target ~ C^0.5 exactly; final accuracy flat
    assert laws[("la", "flops_to_target")].exponent == pytest.approx(0.5, abs=1e-9)
    assert laws[("la", "flops_to_target")].r_squared == pytest.approx(1.0)
    assert laws[("dr", "final_accuracy")].exponent == pytest.approx(0.0, abs=1e-9)
    text = out.file.getvalue()
    assert "power laws y = a C^b" in text and "+0.5000" in text


def test_a_ladder_without_results_says_what_to_run(tmp_path):
    from matcher.commands.compare import ladder_compare

    manifest = _ladder_fixture(tmp_path)
    shutil.rmtree(tmp_path / "results" / "ladder-x-la-c")
    out, err = _consoles()
    result = ladder_compare(manifest, "0.3", None, console=out, err_console=err)
    assert {p.rung for p in result["points"]} == {"la-a", "la-b"}
    assert "la-c: no results at" in err.file.getvalue() and "matcher run" in err.file.getvalue()


def test_loss_targets_and_bootstrap_intervals_over_seeds():
    results = load_results(FIXTURE)
    rows = {r["group"]: r for r in reach_table(results, parse_metric_targets("loss:3.0")).rows}
    k = 16384
    assert rows["la-tiny"]["metric"] == "loss" and rows["la-tiny"]["tokens_mean"] == pytest.approx(2 * k)  # exact
    dr = rows["dr-tiny"]
    s0 = k * 2 ** (4 / 7)  # 3.4 -> 2.7 between 16384 and 32768
    assert dr["reached"] == 2 and dr["tokens_low"] <= dr["tokens_mean"] <= dr["tokens_high"]
    assert min(s0, dr["tokens_low"]) == pytest.approx(s0, rel=0.01)  # one seed alone is the lowest draw
    # one seed, no per-problem outcomes: nothing to resample, so no interval (shown "-"), not a zero-width one
    assert rows["la-tiny"]["tokens_low"] is None and rows["la-tiny"]["tokens_high"] is None
    assert dr["vs_low"] <= dr["vs_baseline"] <= dr["vs_high"]


def test_benchmark_rows_tables_and_targets(tmp_path):
    sweep = _copy_fixture(tmp_path)

    def row(task, metric, tokens, depth, score, n=8, trained=4):
        outcome = "1" * round(score * n) + "0" * (n - round(score * n))
        return json.dumps({"event": "bench", "task": task, "step": tokens // 1024, "tokens": tokens, "depth": depth,
                           "trained_depth": trained, "n": n, "scores": {metric: score},
                           "intervals": {metric: [score / 2, (1 + score) / 2]}, "outcomes": {metric: outcome}}) + "\n"

    (sweep / "la-tiny-s0" / "evals.jsonl").write_text(
        row("gsm8k-test", "strict", 32768, 4, 0.25) + row("gsm8k-test", "strict", 65536, 4, 0.75))
    (sweep / "dr-tiny-s0" / "evals.jsonl").write_text(
        row("gsm8k-test", "strict", 32768, 4, 0.5) + row("gsm8k-test", "strict", 65536, 4, 0.875)
        + row("gsm8k-test", "strict", 65536, 8, 1.0) + "not json\n")
    results = load_results(sweep)
    assert any("evals.jsonl:4: not a benchmark row" in w for w in results.warnings)
    bench = {(r["group"], r["tokens"]): r for r in bench_table(results).rows}
    assert bench["la-tiny", 65536]["score"] == 0.75 and bench["la-tiny", 65536]["n"] == 8
    assert bench["la-tiny", 65536]["low"] == pytest.approx(binomial_interval(6, 8)[0])
    depth = depth_table(results).rows
    assert [(r["run"], r["depth"], r["score"]) for r in depth] == [("dr-tiny-s0", 4, 0.875), ("dr-tiny-s0", 8, 1.0)]
    reach = {r["group"]: r for r in reach_table(results, parse_metric_targets("gsm8k-test.strict:0.5")).rows}
    assert reach["dr-tiny"]["tokens_mean"] == 32768  # exactly at its first point (the other seed has none)
    la = reach["la-tiny"]
    assert la["tokens_mean"] == pytest.approx(32768 * 2 ** 0.5)  # 0.25 -> 0.75: half way in log tokens
    assert la["tokens_low"] < la["tokens_mean"] < la["tokens_high"]  # problems resampled: a real spread
    out, err = _consoles()
    compare_command(sweep, targets="bpb:1.2,gsm8k-test.strict:0.5,loss:3", console=out, err_console=err,
                    plot=tmp_path / "depth.png")
    assert (tmp_path / "depth.png").stat().st_size > 10_000
    text = out.file.getvalue()
    assert "Benchmark scores" in text and "Scores against test-time depth" in text and "bpb:1.2" in text


def test_one_task_scored_with_two_settings_is_refused_until_one_is_chosen(tmp_path, capsys):
    """Rows of an older matcher (no setting) get one derived from what they hold, with a notice; a task
    scored under two settings (here n=4 then n=8 at one point) is refused with the settings listed, and
    --eval-setting picks the one every table and curve of that task uses."""
    from matcher.report.settings import choose_eval_settings

    sweep = _copy_fixture(tmp_path)

    def row(spec, score, n, step=32, depth=4):
        return json.dumps({"event": "bench", "task": "gsm8k-test", "spec": spec, "step": step, "tokens": step * 1024,
                           "depth": depth, "trained_depth": 4, "n": n, "scores": {"strict": score}}) + "\n"

    (sweep / "la-tiny-s0" / "evals.jsonl").write_text(row("gsm8k=test.jsonl,limit=4", 0.25, 4)
                                                     + row("gsm8k=test.jsonl", 0.5, 8)
                                                     + row("gsm8k=test.jsonl", 0.75, 8, step=64)
                                                     + row("gsm8k=test.jsonl", 0.875, 8, step=64, depth=8))
    results = load_results(sweep)
    assert capsys.readouterr().err.count("written before matcher recorded each eval's setting") == 1  # once
    trained = {s for s in results.bench["setting"] if "depth=trained" in s}
    small, full = sorted(trained, key=lambda s: " n=8 " in s)
    assert " n=4 shots=5 budget=256 depth=trained truncate=none metrics=?" in small and " n=8 " in full
    with pytest.raises(ResultsError) as refused:
        choose_eval_settings(results)
    message = " ".join(str(refused.value).split())
    assert "1 task(s) were scored under several settings" in message
    assert f"matcher eval gsm8k-test: {small} (1 point(s) of la-tiny-s0), {full} (3 point(s) of la-tiny-s0)" in message
    assert "Choose one per task with --eval-setting ID" in message
    chosen, used = choose_eval_settings(results, [full[:5]])
    assert set(chosen.bench["score"]) == {0.5, 0.75, 0.875}  # the full setting at both depths
    assert [r["score"] for r in depth_table(chosen).rows] == [0.75, 0.875]
    assert f"matcher eval gsm8k-test: {full}" in used and used[0].startswith("in-training eval embedded: ")
    chosen, _ = choose_eval_settings(results, [small])  # the whole string works too
    assert list(chosen.bench["score"]) == [0.25]
    with pytest.raises(ResultsError, match="--eval-setting ffffffff: no eval row has that setting"):
        choose_eval_settings(results, ["ffffffff"])
    with pytest.raises(ResultsError, match="two settings chosen for gsm8k-test"):
        choose_eval_settings(results, [full[:8], small[:8]])
    out, err = _consoles()
    with pytest.raises(ResultsError, match="--eval-setting"):
        compare_command(sweep, targets="0.5", console=out, err_console=err)
    compare_command(sweep, targets="0.5", console=out, err_console=err, eval_settings=[small[:8]])
    text = " ".join(out.file.getvalue().split())
    assert f"matcher eval gsm8k-test: {small}" in text and "Benchmark scores" in text


def test_a_ladder_refuses_the_options_its_comparison_does_not_take(tmp_path):
    """--baseline applies to one sweep's report: with a ladder manifest it is one clear error, not
    silently dropped. (--format and --out apply to a ladder too since its tables are a Report.)"""
    from matcher.errors import ResultsError

    manifest = _ladder_fixture(tmp_path)
    out, err = _consoles()
    with pytest.raises(ResultsError, match="not for a ladder"):
        compare_command(manifest, targets="0.3", console=out, err_console=err, baseline="la-tiny",
                        out=tmp_path / "x.md")
    assert not (tmp_path / "x.md").exists()


def test_a_ladder_comparison_is_written_as_markdown_or_csv_like_a_sweeps(tmp_path):
    manifest = _ladder_fixture(tmp_path)
    out, err = _consoles()
    compare_command(manifest, targets="0.3", out=tmp_path / "ladder.md", console=out, err_console=err)
    markdown = (tmp_path / "ladder.md").read_text()
    assert markdown.startswith("# ladder ladder-x: target accuracy 0.3\n")
    assert "## power laws y = a C^b" in markdown and "| +0.5000 |" in markdown
    out, err = _consoles()
    compare_command(manifest, targets="0.3", fmt="csv", console=out, err_console=err)
    blocks = out.file.getvalue().split("\n\n")
    rungs = blocks[0].splitlines()
    assert rungs[1] == "rung,variant,train_flops,tokens_to_target,flops_to_target,final_accuracy"
    assert rungs[2].startswith("la-a,la,1000000000000000,")
    laws = blocks[1].splitlines()
    assert laws[1] == "variant,quantity,coefficient,exponent,r_squared,points"
    la = next(line for line in laws if line.startswith("la,flops_to_target,"))
    assert la.split(",")[3] == "0.5000" and la.split(",")[5] == "3"


def test_the_plot_has_a_bpb_panel_and_one_panel_per_benchmark_task_with_bands(tmp_path):
    """The figure object, not its pixels: the panels' titles, and finite curves and bands."""
    pytest.importorskip("matplotlib")
    import numpy as np

    from matcher.report.plots import comparison_figure
    from matcher.report.settings import choose_eval_settings

    sweep = _copy_fixture(tmp_path)
    for metrics in sweep.glob("*/metrics.jsonl"):  # the runs log val_bpb beside their evals
        lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip().endswith("}")]
        with_val = [{**line, "val_bpb": 2.0 - line["eval_accuracy"]} if line["event"] == "eval" else line
                    for line in lines]
        metrics.write_text("".join(json.dumps(line) + "\n" for line in with_val))

    def row(task, metrics, tokens, scores):
        n = 8
        return json.dumps({"event": "bench", "task": task, "step": tokens // 1024, "tokens": tokens, "depth": 4,
                           "trained_depth": 4, "n": n, "scores": dict(zip(metrics, scores)),
                           "intervals": {m: [s / 2, (1 + s) / 2] for m, s in zip(metrics, scores)}}) + "\n"

    for run, shift in (("la-tiny-s0", 0.0), ("dr-tiny-s0", 0.1), ("dr-tiny-s1", 0.2)):
        (sweep / run / "evals.jsonl").write_text("".join(
            row("gsm8k-test", ("flexible", "strict"), tokens, (0.5, 0.25 + shift))
            + row("mc-arc", ("acc_norm", "acc"), tokens, (0.3, 0.5 + shift)) for tokens in (16384, 32768)))
    results, _ = choose_eval_settings(load_results(sweep))
    figure = comparison_figure(results, [0.5])
    titles = [ax.get_title() for ax in figure.axes]
    # five panels, then the expert-load heat maps (one per run that logged load) and their colour bar
    assert sorted(titles[5:-1]) == sorted(load_results(FIXTURE).expert_load) and titles[-1] == ""
    assert titles[2].endswith("\nseed mean ± std") and titles[3].endswith("\nband: ± std over seeds (1 seed: 95% CI)")
    titles = [title.split("\n")[0] for title in titles[:5]]
    assert titles[:2] == ["Accuracy (seed mean ± std)", "Loss: train (thin), eval (markers)"]
    assert titles[2] == "Bits per byte (val dashed)"
    assert titles[3].startswith("gsm8k-test: strict, setting ") and titles[4].startswith("mc-arc: acc, setting ")
    for ax in figure.axes[2:5]:
        lines = [line for line in ax.get_lines() if len(line.get_xdata())]
        assert lines and all(np.isfinite(line.get_ydata()).all() and min(line.get_xdata()) > 0 for line in lines)
    gsm8k = figure.axes[3]
    dr = next(line for line in gsm8k.get_lines() if line.get_label() == "dr-tiny")
    assert list(dr.get_ydata()) == pytest.approx([0.4, 0.4])  # the two seeds' mean: 0.35 and 0.45
    bands = [np.asarray(band.get_paths()[0].vertices) for band in gsm8k.collections]
    assert len(bands) == 2 and all(np.isfinite(band).all() for band in bands)
    dr_band = bands[1][:, 1]  # ± one std over dr's two seeds: 0.4 ± 0.0707
    assert dr_band.min() == pytest.approx(0.4 - 0.1 / 2 ** 0.5) and dr_band.max() == pytest.approx(0.4 + 0.1 / 2 ** 0.5)
    la_band = bands[0][:, 1]  # one seed: its 95% Wilson interval, 2 of 8 right
    assert (la_band.min(), la_band.max()) == pytest.approx(binomial_interval(2, 8))


def test_a_malformed_setting_is_derived_like_an_old_row(tmp_path):
    sweep = _copy_fixture(tmp_path)
    (sweep / "la-tiny-s0" / "evals.jsonl").write_text(json.dumps({
        "event": "bench", "task": "mc-x", "spec": "mc=x.jsonl", "setting": "not a setting", "step": 16,
        "tokens": 16384, "depth": 4, "trained_depth": 4, "n": 5, "scores": {"acc": 0.4}}) + "\n")
    (setting,) = set(load_results(sweep).bench["setting"])
    assert setting.split(" ", 1)[1] == "mc-x data=? n=5 shots=0 budget=- depth=trained truncate=none metrics=?"
