"""The package layout: models/ installs as matcher.models (a research repo's own `models` package never
clashes with it), models/ depends on nothing of matcher but the config, and every sub-package is
installed."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def foreign_repo(tmp_path):
    """A research repo with its own `models` package that breaks anyone importing it by mistake."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise ImportError('the research repo own models package')\n")
    return tmp_path


def _run(command, cwd):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cost_runs_beside_a_foreign_models_package(foreign_repo):
    result = _run([sys.executable, "-m", "matcher.cli", "cost", "la-tiny"], foreign_repo)
    assert result.returncode == 0, result.stderr
    assert "la-tiny" in result.stdout


def test_matcher_command_runs_beside_a_foreign_models_package(foreign_repo):
    script = Path(sys.executable).parent / "matcher"
    assert script.is_file(), "the matcher console script is installed beside the interpreter"
    result = _run([str(script), "cost", "dr-tiny", "--measure"], foreign_repo)
    assert result.returncode == 0, result.stderr
    assert "measured" in result.stdout


def test_models_import_only_the_config_from_matcher():
    for path in sorted((ROOT / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("matcher"):
                assert node.module == "matcher.config" or node.module.startswith("matcher.models"), (
                    f"{path.name} imports {node.module}")
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("matcher") and not a.name.startswith("matcher.models")
                               for a in node.names), path.name


def test_every_package_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "matcher").rglob("__init__.py")}
    assert set(config["packages"]) == on_disk | {"matcher.models"}
    assert config["package-dir"] == {"matcher.models": "models"}
