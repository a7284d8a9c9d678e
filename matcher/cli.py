"""The `matcher` command line. Each subcommand is a thin wrapper over a plain function in
matcher/commands/; heavy libraries are imported only by the commands that use them."""

# Function-local imports: each command's module, imported when that command runs, so `matcher --help` and every
# command load only what they use.

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from matcher import __version__
from matcher.commands.plan_options import with_request_options
from matcher.console import error as print_error
from matcher.console import notice, progress_interval_s
from matcher.cost.analytic import Conventions
from matcher.errors import ConfigError, MatcherError
from matcher.names import resolve
from matcher.plan.request import PlanRequest


def _user_errors(fn: Callable) -> Callable:
    """One clear message for errors a user can cause (bad config, unknown preset...), exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            progress_interval_s()  # a bad value is refused before the command does anything, on a terminal too
            return fn(*args, **kwargs)
        except MatcherError as error:
            print_error(error)
            raise typer.Exit(2) from None
        except OSError as error:  # a path the user gave: missing folder, read-only or full disk, a file for a folder
            where = f"{error.filename}: " if error.filename else ""
            print_error(f"{where}{error.strerror or error}; check that the path exists, is writable and its disk "
                        "has space")
            raise typer.Exit(2) from None

    return wrapper


class _Typer(typer.Typer):
    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda fn: register(_user_errors(fn))


app = _Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="Plan, train and compare FLOP-, parameter- and memory-matched depth-recurrent language models.",
)
sweep_app = _Typer(no_args_is_help=True, help="Check and show sweep files.")
app.add_typer(sweep_app, name="sweep")
data_app = _Typer(no_args_is_help=True, help="Training data: token shards for real corpora.")
app.add_typer(data_app, name="data")


def _conventions(causal_half: bool, recompute: str, activation_dtype: str):
    return Conventions(causal_half=causal_half, recompute=recompute, activation_dtype=activation_dtype)


CausalHalf = Annotated[bool, typer.Option("--causal-half", help="Halve sequence-attention score FLOPs (causal mask).")]
Recompute = Annotated[str, typer.Option(help="Activation recomputation in training: none | full.")]
ActDtype = Annotated[str, typer.Option("--activation-dtype", help="Saved activations: bf16 (GPU autocast) | fp32.")]


@app.command()
def cost(
    target: Annotated[str, typer.Argument(help="Preset name (see `matcher presets`) or model-config YAML.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence (default: the config's).", min=1)] = None,
    batch: Annotated[int, typer.Option(help="Sequences per step, for memory.", min=1)] = 1,
    measure: Annotated[bool, typer.Option(help="Also count on the real module (meta device, fake tensors).")] = True,
    fvcore: Annotated[bool, typer.Option(help="Also count FLOPs with fvcore (real CPU tensors).")] = False,
    causal_half: CausalHalf = False,
    recompute: Recompute = "none",
    activation_dtype: ActDtype = "bf16",
) -> None:
    """Parameters, FLOPs and memory of a model: analytic vs measured, with the conventions used."""
    from matcher.commands.cost import cost_command

    counters = ["torch", "fvcore"] if fvcore else ["torch"]
    cost_command(target, batch, seq_len, _conventions(causal_half, recompute, activation_dtype), measure,
                 counters, as_json)


@app.command()
def presets(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the model presets with their headline costs."""
    from matcher.commands.cost import presets_command

    presets_command(as_json)


def plan(
    out: Annotated[Path | None, typer.Option(help="Sweep file (default sweeps/<target>-vs-<variants>.yaml).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing sweep file.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Plan and print; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    measure: Annotated[bool, typer.Option(help="Check the chosen configs on the real modules (meta device).")] = True,
    **request_options,
) -> None:
    """Match the variants to a target on FLOPs, parameters (and memory) and write the sweep."""
    from matcher.commands.plan import plan_command

    plan_command(PlanRequest(**request_options), out, force, dry_run, as_json, measure)


def _plan_command() -> Callable:
    return with_request_options(plan)


app.command()(_plan_command())


@sweep_app.command("validate")
def sweep_validate(path: Annotated[Path, typer.Argument(help="Sweep YAML file.")]) -> None:
    """Check a (possibly hand-edited) sweep file; report every problem with its place in the file."""
    from matcher.commands.sweep import validate_command

    validate_command(path)


@sweep_app.command("show")
def sweep_show(path: Annotated[Path, typer.Argument(help="Sweep YAML file.")]) -> None:
    """Print a sweep's runs and predicted costs as a table."""
    from matcher.commands.sweep import show_command

    show_command(path)


@data_app.command("encode")
def data_encode(
    inputs: Annotated[list[Path], typer.Argument(help="Text files; JSONL with text, question/answer or chat "
                                                      "messages; parquet with the same columns.")],
    out: Annotated[Path, typer.Option(help="Folder for the shards and manifest.json (train.data: OUT).")],
    tokenizer: Annotated[str, typer.Option(help="`char` or a Hugging Face tokenizer.json.")] = "char",
    shard_tokens: Annotated[int, typer.Option(help="Tokens per shard (the last one may hold fewer; at least "
                                                   "1,024).")] = 1 << 26,
    force: Annotated[bool, typer.Option(help="Replace what OUT holds (another or a finished encode).")] = False,
    val_fraction: Annotated[float, typer.Option(help="Hold this share of whole documents out into a val split "
                                                     "(OUT/val), for validation loss and selection.")] = 0.0,
    val_docs: Annotated[int, typer.Option(help="Hold exactly this many whole documents out into the val split "
                                               "instead (chosen by --split-seed; the inputs are read once more "
                                               "to count them).")] = 0,
    split_seed: Annotated[int, typer.Option(help="Seed of which documents the val split holds.")] = 0,
) -> None:
    """Tokenize a corpus into fixed-size shards with a manifest; a rerun resumes an interrupted encode."""
    from matcher.commands.data import encode_command

    encode_command(inputs, out, tokenizer, shard_tokens, force, val_fraction=val_fraction, val_docs=val_docs,
                   split_seed=split_seed)


@data_app.command("overlap")
def data_overlap(
    corpus: Annotated[Path, typer.Argument(help="Training shards: a `matcher data encode` folder (or .bin shards).")],
    eval_file: Annotated[Path, typer.Argument(help="Eval items, JSONL (question/answer, problem/solution, choices).")],
    n: Annotated[int, typer.Option("--n", help="Tokens per n-gram.", min=1)] = 13,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per eval item, whether any of its n-grams of tokens occur in the training shards (contamination)."""
    from matcher.commands.data import overlap_command

    overlap_command(corpus, eval_file, n, as_json)


@app.command()
def compare(
    results_dir: Annotated[Path, typer.Argument(help="results/<sweep> (or a results/ holding one sweep); for a "
                                                    "ladder, one rung's results folder at a time.")],
    targets: Annotated[str | None, typer.Option(help="Target accuracies, e.g. 0.2,0.4 or 20%,40%, or levels of "
                                                     "a metric: bpb:1.2, loss:2.0, gsm8k-test.strict:0.3 (default: "
                                                     "25/50/75% of the baseline's best accuracy).")] = None,
    format: Annotated[str | None, typer.Option("--format", help="table | markdown | csv.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the tables to this file instead of stdout.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write curves and expert-load maps to this image.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Compare with this group (or a run of it) instead of the "
                                                      "sweep's target, e.g. dr to price depth attention.")] = None,
    select: Annotated[str | None, typer.Option(help="How each variant's grid point is chosen: val_loss | val_bpb "
                                                    "(lowest mean final value over seeds) | none (every point "
                                                    "its own group; needs --baseline). Default: val_loss on a "
                                                    "grid sweep.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON, with each variant's selected "
                                                         "point and grid edges.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out or --plot file.")] = False,
    eval_setting: Annotated[list[str] | None, typer.Option(
        "--eval-setting", help="For a task scored under several eval settings, the one its curves use: the "
                               "setting's id (or a prefix); repeat for several tasks.")] = None,
) -> None:
    """Compare data-efficiency curves: tokens to reach each accuracy and the ratio to the baseline."""
    from matcher.commands.compare import compare_command

    compare_command(results_dir, targets=targets, fmt=format, out=out, plot=plot, baseline=baseline, select=select,
                    as_json=as_json, force=force, eval_settings=eval_setting)


@app.command("eval")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run's folder, results/<sweep>/<run> (or a sweep's: every run).")],
    task: Annotated[list[str] | None, typer.Option(
        "--task", help="NAME[=FILE][,key=value...]: gsm8k=FILE, math=FILE, mc=FILE, bpb=FILE, embedded (the "
        "run's eval set; embedded,n=1000 for more problems), latent. Repeatable; default: embedded.")] = None,
    step: Annotated[int | None, typer.Option(help="Score the checkpoint of this step (default: the last).")] = None,
    all_steps: Annotated[bool, typer.Option("--all-steps", help="Score every saved checkpoint.")] = False,
    depth: Annotated[str | None, typer.Option(help="Test-time depths for dr/dr_da, e.g. 8,16,32 (default: "
                                                   "the trained depth).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when available).")] = None,
    truncate: Annotated[str | None, typer.Option(help="left: score items longer than the model's context on "
                                                      "their last tokens (counted as truncated), not refuse.")] = None,
    show: Annotated[int | None, typer.Option(help="Print the first N wrong items of each task: of those scored, or "
                                                  "without --task of the samples stored at the step.", min=0)] = None,
) -> None:
    """Score a run's saved model checkpoints on benchmark tasks; results go to the run's evals.jsonl."""
    from matcher.commands.eval import eval_command

    eval_command(run_dir, task or [], step=step, all_steps=all_steps, depth=depth, as_json=as_json, device=device,
                 truncate=truncate, show=show)


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lm_eval_(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run's folder, results/<sweep>/<run>.")],
    step: Annotated[int | None, typer.Option(help="The checkpoint of this step (default: the last).")] = None,
    depth: Annotated[int | None, typer.Option(help="Test-time depth for dr/dr_da (default: the trained one).",
                                              min=1)] = None,
) -> None:
    """lm-evaluation-harness's own CLI on a run's checkpoint: matcher lm-eval RUN -- --tasks arc_easy ...
    (results in RUN/lm-eval/ and, per task, in RUN/evals.jsonl as lm-eval-<task>)."""
    from matcher.commands.lm_eval import lm_eval_command

    lm_eval_command(run_dir, list(ctx.args), step=step, depth=depth)


def _quiet_exit_on_sigint() -> None:
    """Everything is saved once the sweep returns: a Ctrl-C from here on (a second one, pressed while
    exit hooks join the trainer's threads) ends the process at once, without a traceback."""
    def leave(signum, frame):
        os.write(2, b"\nstopped\n")
        os._exit(130)

    signal.signal(signal.SIGINT, leave)


@app.command()
def run(
    sweep: Annotated[Path, typer.Argument(help="Sweep YAML file (from `matcher plan`).")],
    launcher: Annotated[str, typer.Option(help="local (this machine: visible GPUs, or CPU) | slurm.")] = "local",
    nproc: Annotated[int, typer.Option(help="Processes (GPUs) per run, under torchrun with DDP (slurm: per node, "
                                            "as --gpus-per-node).", min=1)] = 1,
    fsdp: Annotated[bool, typer.Option(help="Shard with FSDP2 instead of DDP when --nproc > 1.")] = False,
    only: Annotated[str | None, typer.Option(help="Comma-separated run names to train.")] = None,
    results: Annotated[Path, typer.Option(help="Results root; runs go to RESULTS/<sweep>/<run>/.")] = Path("results"),
    retry_failed: Annotated[bool, typer.Option(help="Resume failed runs from their last good checkpoint.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Show what would run (slurm: print and write the job script).")] = False,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    time: Annotated[str, typer.Option(help="Slurm time limit per attempt, [D-]HH:MM:SS; a run that reaches it "
                                           "checkpoints and requeues itself.")] = "24:00:00",
    nodes: Annotated[int, typer.Option(help="Slurm: nodes per run (srun + torchrun, c10d rendezvous).", min=1)] = 1,
    gpus_per_node: Annotated[int | None, typer.Option(help="Slurm: GPUs per node (default 1).", min=1)] = None,
    gpus_per_run: Annotated[int | None, typer.Option(help="Slurm: GPUs of one node per run: --nodes 1 "
                                                          "--gpus-per-node N.", min=1)] = None,
    max_parallel: Annotated[int | None, typer.Option(help="Slurm: at most this many runs at once.", min=1)] = None,
    cpus_per_gpu: Annotated[int, typer.Option(help="Slurm: CPU cores per GPU.", min=1)] = 8,
    mem: Annotated[str | None, typer.Option(help="Slurm: memory per node, e.g. 64G.")] = None,
    python: Annotated[str, typer.Option(help="Slurm: the interpreter with matcher installed on the nodes.")] = "python",
    sbatch_arg: Annotated[list[str] | None, typer.Option(help="Slurm: an extra #SBATCH option, e.g. "
                                                              "--sbatch-arg=--qos=long (repeatable).")] = None,
    setup: Annotated[list[str] | None, typer.Option(help="Slurm: a shell line run before training, e.g. "
                                                         "'module load cuda' (repeatable).")] = None,
) -> None:
    """Train every run of a sweep; finished runs are skipped, partial ones resume from their checkpoint."""
    from matcher.data.overlap import sweep_overlap_warnings
    from matcher.plan.sweep import load_sweep
    from matcher.run.contract import ExitCode, Outcome
    from matcher.run.runner import run_sweep

    if sweep.is_file():  # a missing sweep is run_sweep's error to give
        for line in sweep_overlap_warnings(load_sweep(sweep, notices=False)):  # run_sweep gives its notices
            notice(line)
    slurm = _slurm_options(launcher, nproc=nproc, partition=partition, account=account, time=time, nodes=nodes,
                           gpus_per_node=gpus_per_node, gpus_per_run=gpus_per_run, max_parallel=max_parallel,
                           cpus_per_gpu=cpus_per_gpu, mem=mem, python=python, sbatch_args=sbatch_arg or [],
                           setup=setup or [])
    summaries = run_sweep(sweep, results, launcher=launcher, nproc=nproc, only=only, dry_run=dry_run, fsdp=fsdp,
                          retry_failed=retry_failed, slurm=slurm)
    _quiet_exit_on_sigint()
    if any(summary.state == Outcome.FAILED for summary in summaries):
        raise typer.Exit(ExitCode.FAILED)  # scripts notice (failed now or earlier); the reasons are in the table
    if any(summary.state == Outcome.INTERRUPTED for summary in summaries):
        again = " ".join(["matcher run", str(sweep), *([f"--results {results}"] if results != Path("results") else []),
                          *([f"--only {only}"] if only else []), *([f"--nproc {nproc}"] if nproc != 1 else []),
                          *(["--fsdp"] if fsdp else [])])
        notice(f"interrupted: run `{again}` again to resume from the last checkpoint")
        raise typer.Exit(ExitCode.STOPPED_BY_SIGNAL)  # as a shell reports SIGINT, so a script's loop stops too
    locked = [summary.run for summary in summaries if summary.state == Outcome.LOCKED]
    if locked:
        notice(f"not trained: {', '.join(locked)} (another process holds the lock; see the table); run again "
               "once it has stopped")
        raise typer.Exit(ExitCode.LOCKED)  # as `python -m matcher.run.runner` exits for a locked run


@app.command()
def status(
    results_dir: Annotated[Path, typer.Argument(help="results/<sweep> (or a results/ holding one sweep); for a "
                                                    "ladder, one rung's results folder at a time.")],
    watch: Annotated[bool, typer.Option(help="Redraw until every run is finished or failed, or nothing trains "
                                             "any more (exit 1 if a run did not finish; Ctrl-C stops).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between redraws with --watch.")] = 5.0,
) -> None:
    """Every run of a sweep: state, step, tokens, last accuracy, tokens/s, ETA, Slurm job, failure reason."""
    from matcher.commands.status import status_command

    code = status_command(results_dir, watch=watch, as_json=as_json, interval_s=interval)
    if code:
        raise typer.Exit(code)


def _slurm_options(launcher: str, *, nproc: int, nodes: int, gpus_per_node: int | None, gpus_per_run: int | None,
                   **options):
    """`--gpus-per-run G` is `--nodes 1 --gpus-per-node G`; under Slurm `--nproc N` is `--gpus-per-node N`
    (one torchrun per node with N processes). The Slurm options are checked whatever the launcher, and a
    multi-node request without Slurm is refused rather than ignored."""
    from matcher.run.slurm import SlurmOptions

    if gpus_per_run is not None:
        if nodes > 1:
            raise ConfigError(f"--gpus-per-run is --nodes 1 --gpus-per-node N; with --nodes {nodes} give "
                              "--gpus-per-node")
        if gpus_per_node is not None and gpus_per_node != gpus_per_run:
            raise ConfigError(f"--gpus-per-run {gpus_per_run} and --gpus-per-node {gpus_per_node} disagree; "
                              "give one of them")
        gpus_per_node = gpus_per_run
    if launcher == "slurm" and nproc > 1:
        if gpus_per_node is not None and gpus_per_node != nproc:
            raise ConfigError(f"--nproc {nproc} and --gpus-per-node {gpus_per_node} disagree: under Slurm both "
                              "are the processes (GPUs) per node of a run; give one of them")
        gpus_per_node = nproc
    if nodes > 1 and launcher != "slurm":
        raise ConfigError(f"--nodes {nodes} needs --launcher slurm (the local launcher trains on this machine)")
    return SlurmOptions(nodes=nodes, gpus_per_node=gpus_per_node or 1, **options)


@app.command()
def demo(
    scale: Annotated[str, typer.Option(help="default (~10 min on 2 CPU cores) | smoke (seconds).")] = "default",
    sweeps: Annotated[Path, typer.Option(help="Where the demo sweeps (chain and latent form) are written.")] = Path(
        "sweeps"),
    results: Annotated[Path, typer.Option(help="Results root.")] = Path("results"),
    plot: Annotated[bool, typer.Option(help="Also write results/<demo>/curves.png (needs matplotlib).")] = True,
) -> None:
    """The whole loop on the embedded default: plan la-tiny vs dr, dr_da; train on CPU on the chain and
    the latent form (final value only); compare each form."""
    from matcher.commands.demo import SCALES, Interrupted, demo_command

    try:
        demo_command(resolve(scale, SCALES, "scale").name, sweeps, results, plot)
    except Interrupted:
        raise typer.Exit(130) from None


@app.command()
def version() -> None:
    """Print matcher's version."""
    print(f"matcher {__version__}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (user errors: 2, with one message and no traceback)."""
    try:
        app(args=argv, prog_name="matcher")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def console_main() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
