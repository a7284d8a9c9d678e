"""`matcher demo`: the whole loop on the embedded default, on CPU — plan a tiny sweep (la-tiny as
the target, dr and dr_da matched to it), train it on the embedded math task, compare the curves.
The same three runs are trained again on the task's latent form (data and eval_data math-latent:
the final value only, no written-out chain, so the reasoning has to happen in depth), in a second
sweep `<name>-latent`, so each form has its own comparison table.

Re-running it resumes: the sweep file is reused and finished runs are skipped, so an interrupted
demo picks up where it stopped. Delete `sweeps/demo*.yaml` and `results/demo*` to start over.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from matcher import fmt
from matcher.commands import compare
from matcher.commands.sweep import show_command
from matcher.console import escape, notice, out
from matcher.plan.planner import build_sweep, make_plan
from matcher.plan.request import PlanRequest
from matcher.plan.sweep import load_sweep, write_sweep
from matcher.run import runner


@dataclass(frozen=True)
class DemoScale:
    name: str
    total_tokens: int
    batch_size: int
    seq_len: int
    data_steps: int  # reasoning steps per generated problem
    eval_examples: int
    n_evals: int
    lr: float
    latent_tokens: int  # tokens per run of the latent form (shorter at the default scale: the time limit)


# `default` is meant to fit in 10 minutes on 2 CPU cores (128 eval problems: a 95% interval of about +-9
# points at 50%, where 64 gave +-12): three runs of 1.5M tokens took 3 min 41 s with 64 problems, about
# 50 s more with 128 (README), so the latent form's three runs get 1M tokens each. `smoke` is the test
# suite's end-to-end run.
SCALES = {
    "default": DemoScale("default", total_tokens=1_500_000, batch_size=16, seq_len=128, data_steps=2,
                         eval_examples=128, n_evals=12, lr=3e-3, latent_tokens=1_000_000),
    "smoke": DemoScale("smoke", total_tokens=6 * 2 * 128, batch_size=2, seq_len=128, data_steps=1,
                       eval_examples=2, n_evals=2, lr=3e-3, latent_tokens=6 * 2 * 128),
}


FORMS = {"chain": "math", "latent": "math-latent"}  # the demo's two forms of the task: train.data and eval_data


def demo_sweep(scale: DemoScale, form: str = "chain"):
    """Plan la-tiny vs dr, dr_da and set the demo's training settings (the same for every run)."""
    tokens = scale.latent_tokens if form == "latent" else scale.total_tokens
    request = PlanRequest(target="la-tiny", variants="dr,dr_da", tokens=tokens,
                          batch=scale.batch_size, seq_len=scale.seq_len)
    sweep = build_sweep(make_plan(request))
    for run in sweep.runs:
        run.train = dataclasses.replace(
            run.train, data_steps=scale.data_steps, eval_examples=scale.eval_examples, n_evals=scale.n_evals,
            eval_tokens=[], lr=scale.lr, data=FORMS[form], eval_data=FORMS[form])
    sweep.meta.command = f"matcher demo --scale {scale.name}"
    return sweep


def demo_command(scale_name: str, sweeps_dir: Path, results_root: Path, plot: bool) -> Path:
    scale = SCALES[scale_name]
    base = "demo" if scale.name == "default" else f"demo-{scale.name}"
    names = {"chain": base, "latent": f"{base}-latent"}
    console = out()
    if plot:
        if importlib.util.find_spec("matplotlib") is None:  # said now, not after minutes of training
            notice('no plot: matplotlib is not installed (pip install "matcher[plot]"); the tables follow')
            plot = False
    console.rule("[bold]1/3 plan[/]: la-tiny (target) vs dr, dr_da matched on training FLOPs and parameters")
    paths = {}
    for form, name in names.items():
        path = paths[form] = sweeps_dir / f"{name}.yaml"
        if path.exists():
            load_sweep(path)  # validated before anything trains
            notice(f"reusing {path} (finished runs are skipped); delete it and {results_root / name} to start over")
            continue
        write_sweep(demo_sweep(scale, form), path)
        if form == "chain":
            show_command(path)
        console.print(f"sweep written to {escape(path)}" + (
            " (the same runs on the latent form: data and eval_data math-latent)" if form == "latent" else ""))
    if scale.latent_tokens < scale.total_tokens:
        console.print(f"the latent form's runs are shorter, {fmt.si(scale.latent_tokens)} tokens each against "
                      f"{fmt.si(scale.total_tokens)}, to keep the demo within 10 minutes on 2 CPU cores")
    trained, interrupted = [], False
    for form, what in (("chain", "the embedded math task, answers written out step by step"),
                       ("latent", "its latent form, the final value only (` #### N`)")):
        console.rule(f"[bold]2/3 train[/] on {what} (CPU)")
        summaries = runner.run_sweep(paths[form], results_root)
        trained.append(form)
        if any(summary.state == "interrupted" for summary in summaries):
            interrupted = True
            break
    for form in trained:
        name = names[form]
        console.rule(f"[bold]3/3 compare[/] ({form} form, {name}): tokens to reach each accuracy, ratio to the "
                     "la baseline")
        sweep_dir = results_root / name
        # the demo's own figure, drawn again from the same runs each time it is run
        compare.compare_command(sweep_dir, plot=sweep_dir / "curves.png" if plot else None, force=True)
    if interrupted:
        notice("interrupted: the comparison above is partial; run `matcher demo` again to resume "
               "from the last checkpoints")
        raise Interrupted
    return results_root / base


class Interrupted(Exception):
    """The user stopped training (Ctrl-C); progress is saved. The CLI exits 130, as a shell does."""
