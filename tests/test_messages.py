"""Messages are rendered once (matcher.console) and never mangled: text that looks like rich markup
(`[/`, `[bold]`), a 300-character path and non-ASCII text reach stderr as written, on one line, with
exit code 2, whether stderr is a terminal or a pipe; tables and lines that show user text never crash."""

import io
import re
import sys
from pathlib import Path

import pytest

from matcher.cli import main
from matcher.config import dump_yaml
from matcher.plan.presets import get_preset

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (80 columns unless COLUMNS says otherwise)."""

    def isatty(self) -> bool:
        return True


def awkward_path(root: Path) -> Path:
    """Markup look-alikes, non-ASCII and more than 300 characters in all."""
    path = root / "[" / "x][bold]ünï-Ωmega[/bold]"
    while len(str(path)) < 300:
        path = path / ("deep-" + "d" * 40)
    return path / "[/]end"


@pytest.fixture(params=["pipe", "terminal"])
def stderr_of(request, monkeypatch, capsys):
    """Returns a function that calls `call()` and gives its result and what it wrote to stderr (without
    colour codes), with stderr a pipe or a 60-column terminal."""
    def pipe(call):
        capsys.readouterr()
        return call(), capsys.readouterr().err

    def terminal(call):
        fake, captured = Terminal(), sys.stderr
        sys.stderr = fake  # here, not in the fixture: pytest puts its own capture back before the test
        try:
            result = call()
        finally:
            sys.stderr = captured
        return result, ANSI.sub("", fake.getvalue())

    if request.param == "terminal":
        monkeypatch.setenv("COLUMNS", "60")
    return pipe if request.param == "pipe" else terminal


def one_line(text: str) -> str:
    lines = text.strip("\n").split("\n")
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["cost", "{path}.yaml", "--no-measure"], "{path}.yaml: no such file"),
    (["plan", "--target", "{path}.yaml", "--no-measure", "--dry-run"], "{path}.yaml: no such file"),
    (["sweep", "validate", "{path}.yaml"], "{path}.yaml: no such file"),
    (["sweep", "show", "{path}.yaml"], "{path}.yaml: no such file"),
    (["run", "{path}.yaml"], "{path}.yaml: no such file"),
    (["status", "{path}"], "{path}: no such folder"),
    (["eval", "{path}"], "{path}: not a run folder"),
    (["compare", "{path}"], "{path}: no such folder"),
    (["data", "encode", "{path}.txt", "--out", "{path}-out"], "{path}.txt: no such file to encode"),
])
def test_every_commands_error_arrives_intact_on_one_line(tmp_path, stderr_of, args, expected):
    path = str(awkward_path(tmp_path))
    code, text = stderr_of(lambda: main([arg.replace("{path}", path) for arg in args]))
    line = one_line(text.removeprefix("planning\n"))  # plan's progress line in a log
    assert code == 2
    assert line.startswith("error: ") and expected.replace("{path}", path) in line
    assert "Traceback" not in line


def test_the_message_functions_print_text_as_written(stderr_of):
    from matcher.console import error, notice, warning

    text = "[/] [bold]not bold[/bold] ünï Ω " + "p" * 300
    for show, label in ((error, "error:"), (warning, "warning:"), (notice, "note:")):
        _, printed = stderr_of(lambda show=show: show(text))
        assert one_line(printed) == f"{label} {text}"


def test_a_run_whose_status_holds_markup_is_shown_by_run_and_status(tmp_path, capsys):
    """A failure reason with `[/` in it once crashed `matcher run` and `matcher status` on every call."""
    from matcher.plan.sweep import load_sweep
    from matcher.run.contract import RunInfo
    from matcher.run.rundir import RunDir

    sweep_path = tmp_path / "sweep.yaml"
    assert main(["plan", "--target", "la-tiny", "--variants", "dr", "--no-measure", "--out", str(sweep_path)]) == 0
    sweep = load_sweep(sweep_path)
    run = sweep.runs[0]
    run_dir = RunDir(tmp_path / "results" / sweep.name / run.name)
    run_dir.path.mkdir(parents=True)
    run_dir.write_run_info(RunInfo.from_run(run, sweep.name, str(sweep_path.resolve())))
    reason = "[/x] [bold]ünï died"
    run_dir.write_status("failed", step=3, tokens=96, reason=reason)
    capsys.readouterr()

    assert main(["run", str(sweep_path), "--results", str(tmp_path / "results"), "--only", run.name]) == 1
    assert reason in capsys.readouterr().out
    assert main(["status", str(tmp_path / "results" / sweep.name)]) == 0
    assert reason in capsys.readouterr().out


def test_plan_and_sweep_show_print_a_target_path_that_looks_like_markup(tmp_path, capsys):
    """`matcher plan` once wrote the sweep and then crashed printing the target's name."""
    folder = tmp_path / "[" / "x][bold]ünï[/bold]"
    folder.mkdir(parents=True)
    target = folder / "tiny.yaml"
    target.write_text(dump_yaml(get_preset("la-tiny").to_dict()))
    sweep_path = folder / "sweep.yaml"
    assert main(["plan", "--target", str(target), "--variants", "dr", "--no-measure", "--out", str(sweep_path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"wrote {sweep_path.as_posix()} (2 runs); check it with `matcher sweep show {sweep_path.as_posix()}`" \
        in printed
    assert main(["sweep", "show", str(sweep_path)]) == 0
    assert str(target) in " ".join(capsys.readouterr().out.split())  # the command that wrote it
    assert main(["sweep", "validate", str(sweep_path)]) == 0
    assert f"ok {sweep_path}" in " ".join(capsys.readouterr().out.split())
