"""Progress in a log: where output is not a terminal, `matcher run`, `eval`, `data encode` and `plan`
print plain lines at a steady interval (MATCHER_PROGRESS_INTERVAL_S) and a line per eval point, so a
batch job's log shows that the job is alive."""

import io
import os
import subprocess
import sys
import time

from rich.console import Console
from test_runner import write_tiny_sweep
from tiny_runs import tiny_run, tiny_train

from matcher.cli import main
from matcher.console import PROGRESS_INTERVAL_ENV, Activity, LogLines


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


def test_data_encode_prints_progress_lines_in_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one document\n\nanother document, a little longer\n" * 200)
    assert main(["data", "encode", str(corpus), "--out", str(tmp_path / "shards")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("encoding: ")]
    assert lines and all(" of " in line and "/s, ETA " in line for line in lines)
    assert lines[-1].startswith(f"encoding: {corpus.stat().st_size / 1024:.3g} KiB of")


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
