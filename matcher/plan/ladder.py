"""A ladder: the same comparison planned at several target sizes, for scaling curves.

Every rung is an ordinary sweep (matcher.plan.planner), planned with one shared rule set so that the
rungs differ only in size: one vocabulary (--tokenizer's, else --vocab-size, else the largest rung's;
embeddings are parameters, so it is fixed before matching), training tokens = TOKENS_PER_PARAM x the rung's
target body (non-embedding) parameters, as the scaling-law papers count them, and the batch and
learning rate from the same compute fits (default_training). A manifest next to the sweeps lists the
rungs with their sizes and training compute, so `matcher compare` can put them on one axis. The manifest
and the rung sweeps share a folder (sweeps/ladder-<rungs>-vs-<variants>/ by default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matcher.config import read_yaml
from matcher.errors import ConfigError
from matcher.plan.planner import BATCH_TOKENS_FIT, LR_FIT, TOKENS_PER_PARAM, Plan, make_plan
from matcher.plan.presets import load_target
from matcher.plan.request import TOKENS_BASES, PlanRequest

LADDER_FORMAT = 1
# Options that would break the shared rule: each rung's tokens, batch and rate follow from its size.
PER_RUNG_RULES = ("tokens", "batch", "target", "flops", "params")
TOKENS_BASIS = "body"  # TOKENS_PER_PARAM counts each rung target's body (non-embedding) parameters


@dataclass
class Ladder:
    request: PlanRequest
    rungs: list[str]  # target names, smallest first
    vocab_size: int
    plans: list[Plan]

    def sweep_path(self, plan: Plan, folder: Path) -> Path:
        """<folder>/<folder name>-<rung>.yaml: the sweep's name is its results folder's
        (results/<sweep>/), so it names the ladder as well as the rung."""
        return folder / f"{folder.name}-{plan.target_label}.yaml"

    def default_path(self, folder: Path = Path("sweeps")) -> Path:
        """sweeps/ladder-<rungs>-vs-<variants>/ladder.yaml: a folder of its own, so a rung's sweep never
        overwrites the sweep of a plain `matcher plan --target <rung>`."""
        variants = self.plans[0].variants
        rungs = [plan.target_label for plan in self.plans]  # a config file's stem, not its path
        return folder / f"ladder-{'-'.join(rungs)}-vs-{'-'.join(variants)}" / "ladder.yaml"


def parse_ladder(text: str) -> list[str]:
    rungs = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if len(rungs) < 2:
        raise ConfigError(f"--ladder takes two or more comma-separated targets such as la-100m,la-1b,la-2b, "
                          f"got {text!r}")
    return rungs


def plan_ladder(request: PlanRequest, progress=lambda text: None) -> Ladder:
    """One plan per rung under the shared rules; rungs must grow in parameters."""
    given = [name for name in PER_RUNG_RULES if getattr(request, name) is not None]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ConfigError(f"--ladder sets each rung's target, tokens and batch by one rule "
                          f"({TOKENS_PER_PARAM} tokens per body parameter, compute-scaled batch and rate): "
                          f"drop {flags}")
    rungs = parse_ladder(request.ladder)
    shapes = [load_target(rung)[0] for rung in rungs]
    # a tokenizer (--tokenizer) fixes one vocabulary for every rung itself; otherwise the largest rung's
    vocab = None if request.tokenizer else request.vocab_size or max(shape.vocab_size for shape in shapes)
    plans = []
    for rung in rungs:
        progress(f"planning the {rung} rung")
        rung_request = dataclasses.replace(request, ladder=None, target=rung, vocab_size=vocab)
        plans.append(make_plan(rung_request, progress, tokens_basis=TOKENS_BASIS))
    vocab = plans[0].target.config.vocab_size
    sizes = [plan.target.predicted["total_params"] for plan in plans]
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        listing = ", ".join(f"{rung} {size / 1e6:.0f}M" for rung, size in zip(rungs, sizes))
        raise ConfigError(f"--ladder rungs must grow in parameters, smallest first; got {listing}")
    return Ladder(request=request, rungs=rungs, vocab_size=vocab, plans=plans)


def manifest(ladder: Ladder, sweep_paths: list[Path], created: str) -> dict[str, Any]:
    """The ladder file: shared rules, then per rung its sweep and the sizes compare plots against."""
    rungs = []
    for rung, plan, path in zip(ladder.rungs, ladder.plans, sweep_paths):
        target = plan.target.predicted
        rungs.append({"target": rung, "sweep": path.name, "total_params": target["total_params"],
                      "body_params": target["body_params"],
                      "train_flops_per_token": target["train_flops_per_token"],
                      "total_tokens": plan.train.total_tokens,
                      "train_flops": target["train_flops_per_token"] * plan.train.total_tokens,
                      "batch_size": plan.train.batch_size, "lr": plan.train.lr})
    return {
        "matcher_ladder": LADDER_FORMAT,
        "variants": ladder.plans[0].variants,
        "matched": list(ladder.plans[0].matched),
        "rules": {"vocab_size": ladder.vocab_size, "tokens_per_param": TOKENS_PER_PARAM,
                  "tokens_per_param_counts": TOKENS_BASES[TOKENS_BASIS],
                  "batch_tokens_fit": list(BATCH_TOKENS_FIT), "lr_fit": list(LR_FIT),
                  "seq_len": sorted({plan.train.seq_len for plan in ladder.plans})},
        "command": ladder.request.command_line(),
        "created": created,
        "results_root": "results",  # `matcher run` writes each rung to <results_root>/<sweep name>/
        "rungs": rungs,
    }


def load_ladder(path: str | Path) -> dict[str, Any]:
    """A ladder manifest, checked: its sweeps exist beside it."""
    path = Path(path)
    data = read_yaml(path, missing="write one with `matcher plan --ladder la-100m,la-1b,la-2b`")
    if not isinstance(data, dict) or data.get("matcher_ladder") != LADDER_FORMAT or not data.get("rungs"):
        raise ConfigError(f"{path}: not a ladder manifest (matcher_ladder: {LADDER_FORMAT} and rungs)")
    missing = [rung["sweep"] for rung in data["rungs"] if not (path.parent / rung["sweep"]).is_file()]
    if missing:
        raise ConfigError(f"{path}: the sweeps {', '.join(missing)} are not beside it; plan the ladder again "
                          f"(`{data.get('command', 'matcher plan --ladder ...')}`)")
    return data
