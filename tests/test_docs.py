"""The docs cannot drift from the code: every model and training field, every CLI command and every
option of each command is named in README.md or docs/*.md; the README stays short; every relative
link (and image) in them resolves to an existing file and, with a #fragment, to one of its headings."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import typer

from matcher.cli import app
from matcher.config import ModelConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 200

# Where a missing item belongs: the page that covers its kind, or its command.
PAGE_OF_CONFIG = {ModelConfig: "docs/cost-model.md", TrainConfig: "docs/running.md"}
PAGE_OF_COMMAND = {"cost": "docs/cost-model.md", "presets": "docs/cost-model.md", "plan": "docs/planning.md",
                   "sweep": "docs/planning.md", "run": "docs/running.md", "status": "docs/running.md",
                   "data": "docs/data.md", "eval": "docs/evaluation.md", "compare": "docs/evaluation.md"}
OTHER_COMMANDS_PAGE = "docs/index.md"

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def read_docs(files: list[Path]) -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def code_text(markdown: str) -> str:
    """What the docs write as code: fenced blocks and inline spans, where field names belong."""
    return "\n".join([*FENCE.findall(markdown), *INLINE_CODE.findall(FENCE.sub("", markdown))])


def config_fields(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, name) of every field of dataclass `cls`, and of the fields of dataclasses nested in it."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        found.append((prefix + f.name, f.name))
        for nested in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(nested):
                found += config_fields(nested, f"{prefix}{f.name}.")
    return found


def missing_fields(markdown: str, classes: dict[type, str] = PAGE_OF_CONFIG) -> list[str]:
    code = code_text(markdown)
    return [f"{cls.__name__}.{path} (add it to {page})" for cls, page in classes.items()
            for path, name in config_fields(cls)
            if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", code)]


def cli_commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(words after `matcher`, command) for every command of typer's command tree, sub-apps included
    (typer builds it from its own copy of click, so groups and options are told apart by what they hold)."""
    found = []
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            found += cli_commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def missing_cli(markdown: str, group: Any = None) -> list[str]:
    group = group or typer.main.get_command(app)
    missing = []
    for words, command in cli_commands(group):
        page = PAGE_OF_COMMAND.get(words[0], OTHER_COMMANDS_PAGE)
        name = " ".join(("matcher", *words))
        if not re.search(rf"{re.escape(name)}(?![\w-])", markdown):
            missing.append(f"command `{name}` (add it to {page})")
        for param in command.params:
            if param.param_type_name != "option":
                continue
            for flag in param.opts:
                if flag.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", markdown):
                    missing.append(f"option `{name} {flag}` (add it to {page})")
    return missing


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
            for heading in HEADING.findall(FENCE.sub("", markdown))}


def broken_links(files: list[Path], root: Path = ROOT) -> list[str]:
    broken = []
    for path in files:
        markdown = path.read_text(encoding="utf-8")
        for target in LINK.findall(FENCE.sub("", markdown)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of the repository
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root).as_posix()}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif (anchor and linked.suffix == ".md"
                  and anchor not in heading_anchors(linked.read_text(encoding="utf-8"))):
                broken.append(f"{where} (no heading with that anchor in {linked.name})")
    return broken


def test_docs_name_every_config_field():
    missing = missing_fields(read_docs(doc_files()))
    assert not missing, "fields missing from README.md and docs/*.md: " + "; ".join(missing)


def test_docs_name_every_command_and_option():
    missing = missing_cli(read_docs(doc_files()))
    assert not missing, "CLI items missing from README.md and docs/*.md: " + "; ".join(missing)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most {README_MAX_LINES}): move the "
                                       "details to docs/ and link them")


def test_every_relative_link_resolves():
    assert (DOCS / "index.md").is_file()
    broken = broken_links(doc_files())
    assert not broken, "broken links: " + "; ".join(broken)


# The checks themselves: each reports what is missing, and where it belongs.

@dataclasses.dataclass
class Inner:
    depth_scale: float = 1.0


@dataclasses.dataclass
class Outer:
    width: int = 1
    inner: Inner | None = None


def test_a_missing_field_is_named_with_its_page():
    assert missing_fields("`width`, `inner`", {Outer: "docs/x.md"}) == ["Outer.inner.depth_scale (add it to docs/x.md)"]
    # a name in prose or inside a longer identifier does not count
    assert missing_fields("width and `inner_width`, `inner`, `depth_scale`", {Outer: "docs/x.md"}) == [
        "Outer.width (add it to docs/x.md)"]


def test_a_missing_command_or_option_is_named_with_its_page():
    group = typer.main.get_command(app)
    text = read_docs(doc_files())
    without_encode = text.replace("matcher data encode", "matcher data ENCODE").replace("--shard-tokens", "--shard")
    missing = missing_cli(without_encode, group)
    assert "command `matcher data encode` (add it to docs/data.md)" in missing
    assert "option `matcher data encode --shard-tokens` (add it to docs/data.md)" in missing
    # `--no-measure` does not stand in for `--measure`
    assert "option `matcher plan --measure` (add it to docs/planning.md)" in missing_cli(
        text.replace("--measure", "--no-measure"), group)


def test_a_broken_link_is_reported(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A page\n\n## Some heading (`x:`)\n", encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text("[ok](docs/a.md#some-heading-x) [web](https://example.org) [gone](docs/b.md) "
                      "[bad anchor](docs/a.md#nowhere) ![img](missing.png)\n```\n[in code](nothing.md)\n```\n",
                      encoding="utf-8")
    assert broken_links([readme, docs / "a.md"], root=tmp_path) == [
        "README.md: docs/b.md (no such file)",
        "README.md: docs/a.md#nowhere (no heading with that anchor in a.md)",
        "README.md: missing.png (no such file)",
    ]


@pytest.mark.parametrize("heading, anchor", [("Training settings (`train:`)", "training-settings-train"),
                                             ("Multi-GPU and FSDP2", "multi-gpu-and-fsdp2")])
def test_heading_anchors_follow_github(heading, anchor):
    assert anchor in heading_anchors(f"# Title\n\n## {heading}\n")
