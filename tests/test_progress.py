"""Progress in a log: where output is not a terminal, `matcher run`, `eval`, `data encode` and `plan`
print plain lines at a steady interval (MATCHER_PROGRESS_INTERVAL_S) and a line per eval point, so a
batch job's log shows that the job is alive."""

import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from rich.console import Console
from test_eval import FixedNextToken
from test_runner import write_tiny_sweep
from tiny_runs import tiny_run, tiny_train

from matcher.cli import main
from matcher.console import PROGRESS_INTERVAL_ENV, Activity, LogLines
from matcher.data.tokenizer import CHAR
from matcher.eval import score
from matcher.eval.tasks import load_task


def test_log_lines_are_due_first_and_then_once_per_interval():
    lines = LogLines(Console(file=io.StringIO()), interval_s=30.0)
    now = [100.0]
    lines.clock = lambda: now[0]
    assert lines.due() and not lines.due()
    now[0] += 29.0
    assert not lines.due()
    now[0] += 1.0
    assert lines.due() and not lines.due()


def test_a_step_without_a_counter_repeats_its_line_while_it_lasts(monkeypatch):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0.05")
    console = Console(file=io.StringIO())
    with Activity("measuring", console) as activity:
        time.sleep(0.4)
        activity.update("checking")
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "measuring" and "checking" in lines
    assert any(line.startswith("measuring (") and line.endswith(" so far)") for line in lines)


def test_a_run_under_a_pipe_prints_progress_before_it_ends(tmp_path):
    sweep = write_tiny_sweep(tmp_path, [tiny_run("la-tiny", tiny_train())])
    env = {**os.environ, PROGRESS_INTERVAL_ENV: "0", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "import sys; from matcher.cli import main; sys.exit(main(sys.argv[1:]))",
               "run", str(sweep), "--results", str(tmp_path / "results")]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             text=True, env=env)
    seen_while_running = []
    for line in child.stdout:  # read as the child writes: lines must not wait in a buffer until the end
        seen_while_running.append((line.rstrip("\n"), child.poll() is None))
        if " tokens/s, ETA " in line:
            break
    rest, errors = child.communicate(timeout=600)
    assert child.returncode == 0, errors
    assert seen_while_running[-1][1], "the first progress line came only after the run ended"
    assert seen_while_running[0][0] == "la-tiny: started, 12.3k tokens to train"
    progress = seen_while_running[-1][0]
    assert progress.startswith("la-tiny: step ") and "tokens (" in progress and ", loss " in progress
    lines = [text for text, _ in seen_while_running] + rest.splitlines()
    evals = [line for line in lines if line.startswith("la-tiny: eval at step ")]
    assert len(evals) == 3 and all(": accuracy " in line and ", loss " in line for line in evals)
    assert "la-tiny: finished" in lines
    assert lines.index("la-tiny: finished") < next(i for i, line in enumerate(lines) if "sweep tiny" in line)

    # `matcher eval` of that run: a line per eval point on stderr, the table on stdout
    results = subprocess.run([*command[:3], "eval", str(tmp_path / "results" / "tiny" / "la-tiny"), "--step", "24"],
                             capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
    assert results.returncode == 0, results.stderr
    err = results.stderr.splitlines()
    assert "eval: scoring embedded on la-tiny at step 24, depth 4" in err
    point = next(line for line in err if line.startswith("eval: la-tiny step 24 ("))
    assert ", depth 4, embedded (n 3): " in point and " acc " in point
    # and, between the two, how far each pass over the task's items has come
    counts = [line for line in err if line.startswith("eval: embedded on la-tiny at step 24, depth 4: ")]
    assert any(line.endswith(": log-likelihoods 3/3 items") for line in counts)
    assert any(line.endswith(": generation 3/3 items") for line in counts)
    assert err.index(counts[-1]) < err.index(point)


def write_items(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_scoring_counts_items_or_choices_batch_by_batch(tmp_path):
    """40 items in batches of 32 (engine.EVAL_BATCH): 0, 32 and 40 done; multiple choice counts its rows,
    2 choices per item: 0, 32, 64, 80."""
    model = FixedNextToken(torch.zeros(128))
    told = []
    records = [{"question": f"q{i}", "answer": "a"} for i in range(40)]
    gold = load_task(f"bpb={write_items(tmp_path / 'gold.jsonl', records)}")
    score.score_task(model, gold, CHAR, seq_len=64, device=torch.device("cpu"), on_progress=told.append)
    assert [text.split(",")[0] for text in told] == [
        "log-likelihoods 0/40 items", "log-likelihoods 32/40 items", "log-likelihoods 40/40 items"]
    told.clear()
    records = [{"question": f"q{i}", "choices": ["a", "b"], "answer": 0} for i in range(40)]
    choice = load_task(f"mc={write_items(tmp_path / 'mc.jsonl', records)}")
    score.score_task(model, choice, CHAR, seq_len=64, device=torch.device("cpu"), on_progress=told.append)
    assert [text.split(",")[0] for text in told] == [f"log-likelihoods {n}/80 choices" for n in (0, 32, 64, 80)]
    assert all(", ETA " in text for text in told[1:-1])


def test_data_encode_prints_progress_lines_in_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one document\n\nanother document, a little longer\n" * 200)
    assert main(["data", "encode", str(corpus), "--out", str(tmp_path / "shards")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("encoding: ")]
    assert lines and all(" of " in line and "/s, ETA " in line for line in lines)
    assert lines[-1].startswith(f"encoding: {corpus.stat().st_size / 1024:.3g} KiB of")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_bad_progress_interval_is_one_clear_error(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, value)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one document\n")
    assert main(["data", "encode", str(corpus), "--out", str(tmp_path / "shards")]) == 2
    assert not (tmp_path / "shards").exists()  # refused before anything is written
    err = capsys.readouterr().err
    assert " ".join(err.split()) == (
        f"error: {PROGRESS_INTERVAL_ENV}={value}: the seconds between progress lines in a log must be a number "
        ">= 0 (such as 30, the default; 0 prints every update); set it to one or unset it")
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--dry-run", "--no-measure"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {PROGRESS_INTERVAL_ENV}={value}: ")


@pytest.mark.parametrize("value, seconds", [("", 30.0), (" 5 ", 5.0), ("0", 0.0), ("2.5", 2.5)])
def test_a_progress_interval_is_read_in_seconds(monkeypatch, value, seconds):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, value)
    assert LogLines(Console(file=io.StringIO())).interval_s == seconds


def test_plan_says_what_it_does_in_a_log(capsys):
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--dry-run"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "planning" and "matching dr to la-tiny" in " ".join(err)
    assert any(line.startswith("measured check: ") for line in err)


def test_runs_on_a_terminal_keep_their_bars():
    """On a terminal the plain lines stay out: the bars redraw in place."""
    from matcher.run.progress import SweepProgress

    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=120)
    with SweepProgress(console, {"la-tiny": 1000}) as progress:
        progress.start("la-tiny")
        progress.record("la-tiny", {"event": "train", "step": 1, "tokens": 500, "train_loss": 3.0,
                                    "tokens_per_s": 100.0})
        progress.end("la-tiny", "finished")
    assert "la-tiny: started" not in console.file.getvalue() and "━" in console.file.getvalue()
