"""The Slurm path past one node: the multi-node job script (golden file), option checks before anything is
written, and the script itself run under stand-in `srun` / `scontrol` commands: two "nodes" (two torchrun
agents meeting in a c10d rendezvous on loopback) train the losses of one process, a SIGTERM before the
time limit checkpoints and requeues the task, the requeued task finishes with no lost or doubled metric
line, and a run that fails for a reason of its own is not requeued."""

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import quiet, write_tiny_sweep
from test_train import assert_same_losses
from tiny_runs import comparable, prepare, tiny_run, tiny_train

from matcher.cli import main
from matcher.commands.status import sweep_status
from matcher.errors import ConfigError
from matcher.run import lock as lock_module
from matcher.run.lock import Holder, RunLock
from matcher.run.rundir import RunDir
from matcher.run.runner import run_sweep
from matcher.run.slurm import PORT_BASE, PORT_SPAN, SlurmOptions, time_limit_seconds
from matcher.run.trainer import train_run

GOLDEN = Path(__file__).parent / "golden"

# Stand-ins, first on PATH: each records its call in $STANDIN_LOG. srun starts its command once per
# "node" ($SLURM_NNODES) on this machine and passes SIGTERM on, as srun passes signals to its tasks.
SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$STANDIN_LOG"
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; echo 127.0.0.2; fi
"""
SRUN = """#!/bin/bash
echo "srun $*" >> "$STANDIN_LOG"
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
code=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid"; status=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  [ "$status" -gt "$code" ] && code=$status
done
exit $code
"""


def test_multinode_sbatch_script_matches_golden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = write_tiny_sweep(Path("."))
    options = SlurmOptions(partition="gpu", time="1-00:00:00", nodes=4, gpus_per_node=2, cpus_per_gpu=12,
                           max_parallel=1, python=".venv/bin/python", sbatch_args=["--qos=long", "--constraint=h100"],
                           setup=["module load cuda/12.4", "source .venv/bin/activate"])
    console = quiet()
    run_sweep(sweep, "results", launcher="slurm", dry_run=True, fsdp=True, slurm=options, console=console)
    script = Path("results/tiny/slurm/tiny.sbatch").read_text()
    assert script == (GOLDEN / "tiny-multinode.sbatch").read_text(), "the script changed: review it, then the golden"
    assert subprocess.run(["bash", "-n", "results/tiny/slurm/tiny.sbatch"]).returncode == 0
    assert script.strip() in console.file.getvalue()  # --dry-run prints it


def test_the_cli_maps_its_options_and_prints_the_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_tiny_sweep(Path("."))
    assert main(["run", "tiny.yaml", "--launcher", "slurm", "--dry-run", "--nodes", "2", "--gpus-per-node", "4",
                 "--sbatch-arg=--qos=long", "--setup", "module load cuda", "--time", "2-00:00"]) == 0
    printed = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in printed and "#SBATCH --gpus-per-node=4" in printed
    assert "#SBATCH --qos=long" in printed and "\nmodule load cuda\n" in printed
    assert "--nnodes=\"$SLURM_NNODES\" --nproc-per-node=4 --rdzv-backend=c10d" in printed
    # --gpus-per-run keeps its meaning: one node, that many GPUs
    assert main(["run", "tiny.yaml", "--launcher", "slurm", "--dry-run", "--gpus-per-run", "2"]) == 0
    script = Path("results/tiny/slurm/tiny.sbatch").read_text()
    assert "#SBATCH --nodes=1\n" in script and "#SBATCH --gpus-per-node=2\n" in script
    assert '-m matcher.run.runner "$RUN_DIR" --nproc 2 &' in script and "srun" not in script


def test_nproc_under_slurm_is_the_gpus_per_node(tmp_path, monkeypatch):
    """`--nproc N --launcher slurm` writes the script of --gpus-per-node N (torchrun with N processes per
    node), on one node and on several; it was silently dropped before."""
    monkeypatch.chdir(tmp_path)
    write_tiny_sweep(Path("."))
    scripts = {}
    for name, args in [("nproc", ["--nproc", "2"]), ("gpus", ["--gpus-per-node", "2"]),
                       ("nproc-nodes", ["--nproc", "2", "--nodes", "2"]),
                       ("gpus-nodes", ["--gpus-per-node", "2", "--nodes", "2"])]:
        assert main(["run", "tiny.yaml", "--launcher", "slurm", "--dry-run", *args]) == 0
        scripts[name] = Path("results/tiny/slurm/tiny.sbatch").read_text()
    assert scripts["nproc"] == scripts["gpus"] and scripts["nproc-nodes"] == scripts["gpus-nodes"]
    assert '-m matcher.run.runner "$RUN_DIR" --nproc 2 &' in scripts["nproc"]
    assert "#SBATCH --gpus-per-node=2\n" in scripts["nproc"]
    assert "--nproc-per-node=2 --rdzv-backend=c10d" in scripts["nproc-nodes"]


@pytest.mark.parametrize(("args", "message"), [
    (["--nproc", "2", "--gpus-per-node", "4"], "--nproc 2 and --gpus-per-node 4 disagree"),
    (["--time", "bogus"], "--time 'bogus' is not a Slurm time limit"),
    (["--time", "00:01:00"], "leaves no time to train"),
    (["--mem", "lots"], "not a Slurm memory size"),
    (["--partition", "gpu; rm -rf ~"], "not a Slurm partition name"),
    (["--sbatch-arg=--time=1:00:00"], "matcher writes #SBATCH --time itself; use `matcher run --time`"),
    (["--sbatch-arg=-N 4"], "matcher writes #SBATCH --nodes itself"),
    (["--sbatch-arg", "qos=long"], "must be one sbatch option"),
    (["--setup", "module load a\nmodule load b"], "must be one non-empty shell line"),
    (["--nodes", "2", "--gpus-per-run", "2"], "--gpus-per-run is --nodes 1 --gpus-per-node N"),
    (["--gpus-per-run", "2", "--gpus-per-node", "4"], "disagree"),
    (["--nodes", "3"], "batch_size 8 does not split over 3 GPUs"),
])
def test_bad_slurm_options_are_one_error_before_anything_is_written(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    write_tiny_sweep(Path("."))
    assert main(["run", "tiny.yaml", "--launcher", "slurm", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not Path("results").exists()


def test_nodes_without_slurm_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_tiny_sweep(Path("."))
    assert main(["run", "tiny.yaml", "--nodes", "2", "--dry-run"]) == 2
    assert "needs --launcher slurm" in capsys.readouterr().err


def test_time_limits_in_slurms_forms():
    assert time_limit_seconds("90") == 90 * 60
    assert time_limit_seconds("90:30") == 90 * 60 + 30
    assert time_limit_seconds("24:00:00") == 24 * 3600
    assert time_limit_seconds("2-12") == 60 * 3600
    assert time_limit_seconds("1-00:30") == 24 * 3600 + 30 * 60
    assert time_limit_seconds("1-00:00:05") == 24 * 3600 + 5
    assert time_limit_seconds("1:2:3:4") is None and time_limit_seconds("1h") is None
    with pytest.raises(ConfigError, match="--nodes must be at least 1"):
        SlurmOptions(nodes=0)


def test_submission_records_each_runs_job_for_status(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bin_dir = _standins(tmp_path)
    (bin_dir / "sbatch").write_text('#!/bin/sh\necho "4242;cluster"\n')
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sweep = write_tiny_sweep(Path("."))
    run_sweep(sweep, "results", launcher="slurm", only="dr-tiny,dr_da-tiny", console=quiet())
    _, runs = sweep_status("results/tiny")
    assert {r.run: (r.state, r.slurm_job) for r in runs} == {"dr-tiny": ("new", "4242_0"),
                                                             "dr_da-tiny": ("new", "4242_1")}
    assert all("waiting for Slurm" in r.reason for r in runs)


def test_a_requeued_job_takes_over_the_lock_its_killed_attempt_left(tmp_path, monkeypatch):
    path = tmp_path / "lock"
    path.write_text(json.dumps({"pid": 1, "host": "node-a", "slurm_job": "4242"}))
    monkeypatch.setenv("SLURM_JOB_ID", "9999")
    assert RunLock(path).acquire() == Holder(pid=1, host="node-a", slurm_job="4242", path=path)  # another job
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the same job, same attempt: a step on another node, alive
    assert RunLock(path).acquire() == Holder(pid=1, host="node-a", slurm_job="4242", path=path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued onto this node
    lock = RunLock(path)
    assert lock.acquire() is None
    written = json.loads(path.read_text())
    assert written.pop("started") == lock_module._start_time(os.getpid())  # against pid reuse
    assert written == {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": "4242", "slurm_restart": 1}
    lock.release()


# ------------------------------------------------------------------ the batch script, under stand-ins


def _standins(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _free_rendezvous_job_id() -> int:
    """A job id whose derived port (PORT_BASE + id % PORT_SPAN) is free here."""
    for _ in range(200):
        port = random.randrange(PORT_BASE, PORT_BASE + PORT_SPAN)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port - PORT_BASE + PORT_SPAN * random.randrange(1, 50)
    raise RuntimeError("no free port")


class BatchJob:
    """The sweep's job script as Slurm would run array task 0, on `nodes` stand-in nodes."""

    def __init__(self, tmp_path: Path, run, nodes: int):
        self.folder = tmp_path
        sweep = write_tiny_sweep(tmp_path, [run])
        options = SlurmOptions(nodes=nodes, gpus_per_node=1, python=sys.executable, time="00:30:00")
        run_sweep(sweep, tmp_path / "results", launcher="slurm", dry_run=True, slurm=options, console=quiet())
        self.script = tmp_path / "results" / "tiny" / "slurm" / "tiny.sbatch"
        self.run_dir = RunDir(tmp_path / "results" / "tiny" / run.name)
        self.log = tmp_path / "standins.log"
        self.env = {**os.environ, "PATH": f"{_standins(tmp_path)}{os.pathsep}{os.environ['PATH']}",
                    "PYTHONPATH": os.pathsep.join(sys.path), "STANDIN_LOG": str(self.log),
                    "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0",
                    "SLURM_JOB_ID": str(_free_rendezvous_job_id()), "SLURM_NNODES": str(nodes),
                    "SLURM_JOB_NODELIST": "127.0.0.[1-2]", "SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "1"}

    def start(self) -> subprocess.Popen:
        return subprocess.Popen(["bash", str(self.script.relative_to(self.folder))], cwd=self.folder, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.is_file() else []


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> RunDir:
    """la-tiny trained by one process, logging every 10 steps as the Slurm tasks do."""
    run_dir = prepare(tmp_path_factory.mktemp("one-process"), tiny_run("la-tiny"))
    assert train_run(run_dir.path, log_every_steps=10).state == "finished"
    return run_dir


@pytest.mark.slow
def test_two_nodes_train_the_losses_of_one_process(tmp_path, one_process):
    job = BatchJob(tmp_path, tiny_run("la-tiny", tiny_train(dashboards=["tensorboard"])), nodes=2)
    done = job.start()
    output, _ = done.communicate(timeout=120)
    assert done.returncode == 0, output + job.run_dir.log.read_text()[-3000:]
    srun = [call for call in job.calls() if call.startswith("srun")]
    assert len(srun) == 1 and "--nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d" in srun[0]
    assert srun[0].startswith("srun --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 ")
    assert "--rdzv-endpoint=127.0.0.1:" in srun[0] and "requeue" not in " ".join(job.calls())
    env = json.loads(job.run_dir.env_json.read_text())
    assert (env["world_size"], env["nodes"], env["slurm_job"]) == (2, 2, "77_0")
    assert_same_losses(job.run_dir, one_process, rel=1e-3)
    assert len(list(job.run_dir.tensorboard.glob("events.out.tfevents.*"))) == 1  # rank 0's only
    _, runs = sweep_status(job.run_dir.path.parent)
    assert (runs[0].state, runs[0].slurm_job, runs[0].eta_s) == ("finished", "77_0", None)


@pytest.mark.slow
def test_sigterm_checkpoints_requeues_and_the_requeued_task_finishes_the_run(tmp_path, one_process):
    job = BatchJob(tmp_path, tiny_run("la-tiny"), nodes=2)
    batch = job.start()
    deadline = time.time() + 90
    while not job.run_dir.checkpoint.is_file() and batch.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    batch.send_signal(signal.SIGTERM)  # what --signal=B:TERM@120 sends to the batch shell
    output, _ = batch.communicate(timeout=120)
    assert batch.returncode == 0, output + job.run_dir.log.read_text()[-3000:]
    status = job.run_dir.status()
    assert status.state == "interrupted" and "SIGTERM" in status.reason
    assert status.step < tiny_train().total_steps
    assert "scontrol requeue 77_0" in job.calls()

    again = job.start()  # the requeued task: same job id, same script
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output + job.run_dir.log.read_text()[-3000:]
    assert job.run_dir.status().state == "finished"
    assert job.calls().count("scontrol requeue 77_0") == 1
    assert [line["event"] for line in job.run_dir.read_metrics()].count("resume") == 1
    assert [(line["event"], line["step"]) for line in comparable(job.run_dir)] == \
        [(line["event"], line["step"]) for line in comparable(one_process)]
    assert_same_losses(job.run_dir, one_process, rel=1e-3)


@pytest.mark.slow
def test_a_run_that_fails_on_its_own_is_not_requeued(tmp_path):
    job = BatchJob(tmp_path, tiny_run("la-tiny", tiny_train(lr=1e30, warmup_fraction=0.0)), nodes=1)
    done = job.start()
    output, _ = done.communicate(timeout=120)
    assert done.returncode == 1, output
    assert job.run_dir.status().state == "failed"
    assert not any("requeue" in call for call in job.calls())
    _, runs = sweep_status(job.run_dir.path.parent)
    assert runs[0].state == "failed" and "training loss became nan" in runs[0].reason
    assert runs[0].slurm_job == "77_0"
