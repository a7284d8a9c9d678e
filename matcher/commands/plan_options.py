"""`matcher plan`'s options: one per PlanRequest field, with its help text here. Apart from the command
itself (matcher/commands/plan.py), because the CLI builds this signature at start-up and the command's
imports (the planner, the ladder, the measured check) are needed only when a plan is made."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from matcher.cost.gpu_hours import DEVICES
from matcher.plan.request import PlanRequest, option_flag


def _help(text: str, **limits: Any) -> dict[str, Any]:
    return {"help": text, **limits}


# the command line of each PlanRequest field: its help text and the limits typer checks
OPTIONS = {
    "target": _help("Target: preset name or model-config YAML."),
    "variants": _help("Comma-separated variants to match: la, dr, dr_da."),
    "flops": _help("Budget instead of --target: training FLOPs per token."),
    "params": _help("Budget instead of --target: total parameters."),
    "align": _help("d_ff is a multiple of this (default 64; d_ff/4 for targets narrower "
                                "than 256).", min=1),
    "match": _help("Quantities to match: flops, params, inference_memory_bytes "
                         "(weights + SA KV + DA caches), train_memory_bytes (one step at the micro-batch), body_flops, "
                         "body_params (non-embedding: without the token embedding and LM head)."),
    "free": _help("Free variables: d_ff,n_experts and optionally one of router_rank, "
                               "n_kv_heads, top_k (default: chosen by the search when needed)."),
    "inference_batch": _help("Sequences decoded at once, for inference memory.", min=1),
    "inference_context": _help("Context tokens per sequence, for inference memory "
                                            "(default: seq_len).", min=1),
    "max_memory_ratio": _help("Hard limit: training memory at most R x the target's."),
    "tolerance": _help("Largest residual that counts as matched (default 0.5%; 2% for "
                                      "targets whose expert is narrower than 128 and for budgets).", min=0),
    "tokens": _help("Training tokens per run (default 20 x the target's parameters).", min=1),
    "batch": _help("Sequences per step (default: scaled to compute).", min=1),
    "micro_batch": _help("Sequences per forward on one GPU: gradient accumulation (same "
                                      "steps, less memory).", min=1),
    "seq_len": _help("Tokens per sequence (default: the target's).", min=1),
    "vocab_size": _help("Vocabulary of the target and variants (default: the target's).", min=1),
    "ladder": _help("Instead of --target: comma-separated targets, smallest first (such as "
                                 "la-100m,la-1b,la-2b): one sweep per rung and a ladder manifest."),
    "seeds": _help("Comma-separated seeds; several give runs <variant>-s<seed>."),
    "grid": _help("A hyperparameter grid, repeatable: train.FIELD=V1,V2,... (xM: M x the "
                                     "plan's value, such as train.lr=x0.33,x1,x3); VARIANT:train.FIELD=... for "
                                     "one variant. Runs are the product of the grids and --seeds, named "
                                     "<variant>-lr1e-3[-s0]."),
    "base": _help("Shape of the family when budgets are given."),
    "depth": _help("Variants' depth (default: the target's).", min=1),
    "d_model": _help("Variants' width; keeps the head width.", min=1),
    "top_k": _help("Variants' experts per token.", min=1),
    "da_heads": _help("Depth-attention heads (dr_da).", min=1),
    "set_fields": _help("Any model field of the variants: key=value (setting d_ff "
                                           "or n_experts holds it); train.FIELD=VALUE: a training setting of "
                                           "every run (data, eval_data, lr, loss_on, ...)."),
    "tokenizer": _help("A Hugging Face tokenizer.json (or char): every run's vocab_size is "
                                    "its size padded to a multiple of 64, set before matching."),
    "gpu": _help(f"Device for the GPU-hours before launch: {', '.join(DEVICES)} (peak dense "
                       "bf16 from the vendor's datasheet)."),
    "mfu": _help("Assumed model FLOPs utilization for the GPU-hours: the share of the "
                         "device's peak the training reaches."),
    "causal_half": _help("Halve sequence-attention score FLOPs (causal mask)."),
    "recompute": _help("Activation recomputation in training: none | full."),
    "activation_dtype": _help("Saved activations: bf16 (GPU autocast) | fp32."),
}


def with_request_options(command: Callable) -> Callable:
    """`matcher plan`'s signature: the command's own options, then one per PlanRequest field (OPTIONS)."""
    hints = typing.get_type_hints(PlanRequest)
    own_hints = typing.get_type_hints(command, include_extras=True)
    own = [p.replace(annotation=own_hints[p.name]) for p in inspect.signature(command).parameters.values()
           if p.kind is not p.VAR_KEYWORD]
    added = []
    for option in dataclasses.fields(PlanRequest):
        added.append(inspect.Parameter(
            option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default,
            annotation=Annotated[hints[option.name], typer.Option(option_flag(option), **OPTIONS[option.name])]))
    command.__signature__ = inspect.Signature([*own, *added])
    return command
