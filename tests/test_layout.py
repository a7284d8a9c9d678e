"""The package layout: models/ installs as matcher.models (a research repo's own `models` package never
clashes with it), models/ depends on nothing of matcher but the config, and every sub-package is
installed."""

import ast
import functools
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


@functools.cache  # read once: every module's imports are resolved against it
def _module_names() -> dict[str, Path]:
    """Every module of the package by its import name (models/ as matcher.models)."""
    names = {}
    for folder, package in ((ROOT / "matcher", "matcher"), (ROOT / "models", "matcher.models")):
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            names[".".join((package, *parts[:-1], *([] if parts[-1] == "__init__" else parts[-1:])))] = path
    return names


def _runtime_imports(tree: ast.AST):
    """Every import statement that can run: at module level and inside functions (a function-local
    import is a dependency all the same, only a later one), but not under `if TYPE_CHECKING:`, which
    never runs."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from a import b` counts a.b when b is a module)."""
    names = _module_names()
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            targets |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
        graph[name] = {target for target in targets if target in names and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"matcher.run.runner", "matcher.run.slurm", "matcher.models.model"} <= set(graph)
    assert "matcher.run.contract" in graph["matcher.run.slurm"]  # a function-local import is an edge too
    assert cycles(graph) == []


# Function-local imports defer what a command may not need: a heavy or optional package (directly, or
# through a module of the package that imports one at its top) that the importing module does not
# already load. The modules the CLI imports at start-up defer lighter ones too: what `import matcher.cli`
# does not load.
HEAVY = {"torch", "numpy", "pandas", "scipy", "matplotlib", "fvcore", "tokenizers", "safetensors", "pyarrow",
         "lm_eval", "math_verify", "wandb", "tensorboard",
         # parts of torch that `import torch` does not load and that take a second or so each
         "torch._inductor", "torch.distributed.fsdp", "torch.distributed.checkpoint", "torch.utils.tensorboard"}
REASON = "# Function-local imports:"


def _imports(name: str, path: Path):
    """(node, what it loads, whether it is inside a function, its enclosing nodes) for every import that can
    run. What it loads: the package's modules and other packages' dotted names, each with its parents
    (`import torch.distributed.fsdp` loads torch, torch.distributed and torch.distributed.fsdp)."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    modules = _module_names()
    for node in _runtime_imports(tree):
        chain, at = [], node
        while at in parents:
            at = parents[at]
            chain.append(at)
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        loaded = set()
        for target in targets:
            if target in modules or not target.startswith("matcher"):
                parts = target.split(".")
                loaded |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        loaded = {t for t in loaded if t in modules or not t.startswith("matcher")} - {name}
        yield node, loaded, any(isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)) for a in chain), chain


def _heavy_at_top() -> dict[str, set[str]]:
    """module -> the heavy packages importing it loads (its top-level imports, followed through the package)."""
    modules = _module_names()
    top = {name: set() for name in modules}
    for name, path in modules.items():
        for _, loaded, local, _ in _imports(name, path):
            if not local:
                top[name] |= loaded
    heavy: dict[str, set[str]] = {}

    def visit(name: str, seen: set[str]) -> set[str]:
        if name in heavy:
            return heavy[name]
        found = set()
        for target in top[name]:
            if target in modules and target not in seen:
                found |= visit(target, seen | {name})
            elif target in HEAVY:
                found.add(target)
        heavy[name] = found
        return found

    for name in modules:
        visit(name, set())
    return heavy


def _catches_import_error(chain) -> bool:
    return any(isinstance(node, ast.Try) and any(
        isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError")
        for handler in node.handlers) for node in chain)


def _loaded_at_start_up() -> set[str]:
    result = subprocess.run([sys.executable, "-c", "import sys, matcher.cli; print(*sorted(sys.modules))"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_function_local_imports_defer_something_and_say_why():
    heavy, start_up = _heavy_at_top(), _loaded_at_start_up()
    assert "torch" in heavy["matcher.cost.measured"] and not heavy["matcher.cli"]
    needless, unexplained, stale = [], [], []
    for name, path in sorted(_module_names().items()):
        deferred = False
        for node, loaded, local, chain in _imports(name, path):
            if not local:
                continue
            deferred = True
            defers = {package for target in loaded
                      for package in (heavy.get(target) or ({target} & HEAVY))} - heavy[name]
            if defers or _catches_import_error(chain):
                continue
            if name in start_up and not loaded <= start_up:  # a module of the CLI's start-up defers the rest
                continue
            needless.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        text = path.read_text()
        has_reason = any(line.startswith(REASON) for line in text.splitlines())
        if deferred and not has_reason:
            unexplained.append(path.name)
        if has_reason and not deferred:
            stale.append(path.name)
    assert not needless, f"function-local imports that defer nothing heavy: move them to the top: {needless}"
    assert not unexplained, f"modules with function-local imports need a `{REASON}` comment: {unexplained}"
    assert not stale, f"`{REASON}` comments on modules without any: {stale}"
