"""The GPU check: everything matcher does on CUDA, in one call of a bare GPU machine, in under 8 minutes.

    bash bench/gpu_check.sh [OUT_DIR]            # on a GPU machine (docs/gpu.md): parts d, b, c, a
    bash bench/gpu_check.sh --smoke OUT_DIR      # the same parts on the CPU, tiny, in about a minute

Parts, each with its own time budget under one global deadline, each written to OUT_DIR as it ends:

- env.json (d): torch, CUDA, cuDNN and driver versions (nvidia-smi), the GPU, the Python packages the
  CLI needs, and which grouped GEMM the experts run (F.grouped_mm or its older name torch._grouped_mm),
  probed on the device in bf16 and fp32 against a per-expert loop.
- loop.json (b): `matcher plan` of la-tiny vs dr, dr_da; `matcher run` of the sweep on the device (bf16
  autocast on CUDA); the resume check: one fp32 run killed with SIGKILL after its second evaluation and
  resumed, its curve compared with an uninterrupted run of the same config (deterministic algorithms:
  equal to the last bit, max abs difference recorded); `matcher eval` (the embedded task and a GSM8K-style
  file, by generation; a multiple-choice file, by log-likelihood); `matcher status`; `matcher compare
  --plot`.
- distributed.json (c): the trainer under torchrun with FSDP2 (nccl on CUDA, gloo on the CPU). With one
  process `matcher run --nproc 1` trains without torchrun and does not shard (wrap() is a no-op for one
  rank), and one GPU cannot hold two nccl ranks; so the worker (this file, --fsdp-worker) joins a one-rank
  group and shards with matcher's own wrap(): fully_shard, the DTensor optimizer step and the collective
  checkpoint run for real. An uninterrupted run and one killed with SIGKILL and resumed must agree exactly.
- cost.json (a): bench/gpu.py as it is, with what time is left (its rows are written as they end).
- summary.json: every part's ok, elapsed time or skip reason, and "complete": true once every part ran.
- gpu_check.log: every command with its output; curves.png: the comparison's plot.

At most 8 files: what the GPU tool brings back from $OUT. Matcher is imported from this source tree (no
install needed: a folder of links makes `matcher.models` resolve to models/, for this process and every
process it starts), and run as `python -m matcher`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "gpu"
# what `matcher run`, `eval`, `status` and `compare` import (fvcore is only `matcher cost --fvcore`'s)
CLI_PACKAGES = ("torch", "typer", "rich", "yaml", "scipy", "pandas", "numpy", "tokenizers", "safetensors")
TIMING_FIELDS = ("tokens_per_s", "mfu", "elapsed_s", "peak_memory_bytes")


@dataclass(frozen=True)
class Sizes:
    """What each part trains, and the seconds each may take (under the global deadline)."""

    device: str
    deadline_s: float  # the whole check; parts that would start later are skipped with the reason
    budgets_s: dict[str, float]
    sweep_batch: int  # la-tiny vs dr, dr_da: sequences of 128 tokens per step
    sweep_steps: int
    sweep_evals: int
    sweep_eval_examples: int
    plan_measure: bool  # the plan's measured check (meta device, no GPU in it): seconds the smoke can spare
    resume_batch: int  # the fp32 dr_da-tiny run killed and resumed (parts b and c)
    resume_seq_len: int
    resume_steps: int  # evaluations at 1/3, 2/3 and the end; killed after the one at 2/3
    resume_eval_examples: int
    eval_limit: int  # items of each benchmark file scored by `matcher eval`


GPU = Sizes(device="cuda", deadline_s=450, budgets_s={"env": 40, "loop": 200, "distributed": 90, "cost": 230},
            sweep_batch=32, sweep_steps=400, sweep_evals=4, sweep_eval_examples=64, plan_measure=True,
            resume_batch=16, resume_seq_len=128, resume_steps=240, resume_eval_examples=16, eval_limit=32)
SMOKE = Sizes(device="cpu", deadline_s=240, budgets_s={"env": 30, "loop": 120, "distributed": 90, "cost": 60},
              sweep_batch=2, sweep_steps=4, sweep_evals=2, sweep_eval_examples=2, plan_measure=False,
              resume_batch=4, resume_seq_len=64, resume_steps=9, resume_eval_examples=2, eval_limit=4)
PARTS = ("env", "loop", "distributed", "cost")  # the cost table last: it uses what time is left


class OutOfTime(Exception):
    """A command's time budget ran out; what ran is recorded."""


class Check:
    def __init__(self, out_dir: Path, sizes: Sizes, smoke: bool, parts: tuple[str, ...] = PARTS):
        self.out, self.sizes, self.smoke, self.parts = out_dir, sizes, smoke, parts
        self.started = time.monotonic()
        self.work = Path(tempfile.mkdtemp(prefix="matcher-gpu-check-"))
        self.log_path = out_dir / "gpu_check.log"
        self.env = self._child_env()
        self.part_deadline = self.started + sizes.deadline_s
        self.results: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------------------- processes
    def _child_env(self) -> dict[str, str]:
        """Every process started here imports matcher from this source tree, with matcher.models -> models/."""
        src = self.work / "src"
        package = src / "matcher"
        package.mkdir(parents=True)
        for entry in (ROOT / "matcher").iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        (package / "models").symlink_to(ROOT / "models")
        env = {k: v for k, v in os.environ.items() if k != "OUT"}  # bench/gpu.py writes $OUT/gpu.json if set
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.update(PYTHONUNBUFFERED="1", COLUMNS="160", NO_COLOR="1")
        if self.smoke:
            env["OMP_NUM_THREADS"] = "1"  # small shared CI machines: threads spinning against each other
        return env

    def remaining_s(self) -> float:
        return min(self.part_deadline, self.started + self.sizes.deadline_s) - time.monotonic()

    def log(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(text if text.endswith("\n") else text + "\n")

    def matcher(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "matcher", *args]

    def run(self, argv: list[str], *, capture: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run a command to its end within the part's time; its output goes to the log (and is returned
        with `capture`). Past the time: SIGTERM to its process group (matcher checkpoints), then SIGKILL."""
        timeout_s = self.remaining_s()
        shown = " ".join(str(a) for a in argv)
        self.log(f"\n$ {shown}")
        if timeout_s <= 1:
            raise OutOfTime(f"no time left for: {shown}")
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(argv, cwd=cwd or self.work, env=self.env, start_new_session=True,
                                       stdout=subprocess.PIPE if capture else log, stderr=log)
            try:
                stdout, _ = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop_group(process)
                raise OutOfTime(f"stopped after {time.monotonic() - started:.0f} s (the part's budget): "
                                f"{shown}") from None
        text = stdout.decode("utf-8", "replace") if capture else ""
        self.log(f"{text}[exit {process.returncode} after {time.monotonic() - started:.1f} s]")
        return subprocess.CompletedProcess(argv, process.returncode, text, "")

    def kill_after_second_eval(self, argv: list[str], metrics: Path) -> dict[str, Any]:
        """Start a training command and SIGKILL its whole process tree (the trainer first, so no handler
        checkpoints) once its second evaluation is in metrics.jsonl; returns where it stood."""
        self.log(f"\n$ {' '.join(argv)}  (SIGKILL after the second eval)")
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(argv, cwd=self.work, env=self.env, start_new_session=True, stdout=log,
                                       stderr=log)
            seen: list[dict] = []
            while process.poll() is None and time.monotonic() - started < self.remaining_s():
                seen = read_jsonl(metrics)
                if sum(line.get("event") == "eval" for line in seen) >= 2:
                    break
                time.sleep(0.01)
            killed = process.poll() is None
            if killed:
                for pid in reversed(descendants(process.pid)):  # the deepest (the trainer) first
                    with _suppress_gone():
                        os.kill(pid, signal.SIGKILL)
                process.kill()
            process.wait()
        last_step = max((line.get("step", 0) for line in read_jsonl(metrics)), default=0)
        self.log(f"[{'killed' if killed else 'ended by itself'} at step {last_step}, "
                 f"exit {process.returncode}, {time.monotonic() - started:.1f} s]")
        return {"killed": killed, "killed_at_step": last_step, "exit_code": process.returncode}

    # -------------------------------------------------------------------------------- parts
    def part(self, name: str, body) -> dict[str, Any]:
        budget_s = self.sizes.budgets_s[name]
        left_s = self.sizes.deadline_s - (time.monotonic() - self.started)
        result: dict[str, Any] = {"part": name, "ok": False}
        if left_s < min(budget_s, 20):
            result["skipped"] = f"{left_s:.0f} s left of the {self.sizes.deadline_s:.0f} s deadline"
        else:
            self.part_deadline = time.monotonic() + min(budget_s, left_s)
            self.log(f"\n===== part {name} (budget {min(budget_s, left_s):.0f} s) =====")
            started = time.monotonic()
            try:
                result.update(body())
            except OutOfTime as stop:
                result["skipped"] = str(stop)
            except Exception as error:  # noqa: BLE001  a part's failure is its result; the next part still runs
                result["error"] = f"{type(error).__name__}: {error}"
                self.log(traceback.format_exc())
            result["elapsed_s"] = round(time.monotonic() - started, 1)
        self.results[name] = result
        self.scrub_log()
        write_json(self.out / f"{name}.json", result)
        self.write_summary()
        return result

    def scrub_log(self) -> None:
        """The log names the temporary folder $WORK and the checkout $REPO: no machine's paths in what is
        committed."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        self.log_path.write_text(text.replace(str(self.work), "$WORK").replace(str(ROOT), "$REPO"),
                                 encoding="utf-8")

    def write_summary(self) -> None:
        complete = all(name in self.results and "skipped" not in self.results[name] for name in self.parts)
        write_json(self.out / "summary.json", {
            "complete": complete, "ok": complete and all(r["ok"] for r in self.results.values()),
            "mode": "smoke" if self.smoke else "gpu", "device": self.results.get("env", {}).get("device"),
            "elapsed_s": round(time.monotonic() - self.started, 1), "deadline_s": self.sizes.deadline_s,
            "parts_asked": list(self.parts),
            "parts": {name: {key: r[key] for key in ("ok", "elapsed_s", "skipped", "error") if key in r}
                      for name, r in self.results.items()}})

    def env_part(self) -> dict[str, Any]:
        import torch

        from matcher import __version__

        found = {name: importlib.util.find_spec(name) is not None for name in (*CLI_PACKAGES, "matplotlib")}
        result: dict[str, Any] = {
            "matcher": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "cuda_available": torch.cuda.is_available(), "packages": found,
            "missing_cli_packages": [name for name in CLI_PACKAGES if not found[name]],
            "nvidia_smi": nvidia_smi()}
        device = torch.device(self.sizes.device)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device visible to torch")
            props = torch.cuda.get_device_properties(device)
            result.update(device=torch.cuda.get_device_name(device),
                          capability=list(torch.cuda.get_device_capability(device)),
                          memory_bytes=props.total_memory, multiprocessors=props.multi_processor_count)
        else:
            result["device"] = f"CPU ({torch.get_num_threads()} threads)"
        result["grouped_mm"] = grouped_mm_probe(device)
        result["ok"] = (not result["missing_cli_packages"]
                        and all(probe.get("ok") for probe in result["grouped_mm"]["dtypes"].values()))
        return result

    def loop_part(self) -> dict[str, Any]:
        s = self.sizes
        missing = self.results.get("env", {}).get("missing_cli_packages")
        if missing:
            raise RuntimeError(f"the CLI needs {', '.join(missing)}; carry wheels (docs/gpu.md)")
        steps: list[dict[str, Any]] = []
        result: dict[str, Any] = {"steps": steps}

        def step(name: str, argv: list[str], capture: bool = False) -> subprocess.CompletedProcess:
            done = self.run(argv, capture=capture)
            steps.append({"step": name, "exit_code": done.returncode})
            if done.returncode != 0:
                raise RuntimeError(f"{name} exited with {done.returncode} (gpu_check.log has its output)")
            return done

        sweep, results = self.work / "sweeps" / "gpu-check.yaml", self.work / "results"
        step("plan", self.matcher(
            "plan", "--target", "la-tiny", "--variants", "dr,dr_da", "--batch", str(s.sweep_batch), "--seq-len", "128",
            "--tokens", str(s.sweep_steps * s.sweep_batch * 128), "--set", f"train.n_evals={s.sweep_evals}",
            *([] if s.plan_measure else ["--no-measure"]),
            "--set", f"train.eval_examples={s.sweep_eval_examples}", "--set", "train.data_steps=2",
            "--out", str(sweep)))
        step("run", self.matcher("run", str(sweep), "--results", str(results)))
        sweep_dir = results / "gpu-check"
        result["runs"] = {run.name: run_summary(run) for run in sorted(sweep_dir.iterdir()) if run.is_dir()}
        result["resume"] = self.resume_check(step)
        gsm8k, mc = write_benchmark_files(self.work)
        evaluated = step("eval", self.matcher(
            "eval", str(sweep_dir), "--task", "embedded,n=32", "--task",
            f"gsm8k={gsm8k},n_shot=0,max_new_tokens=24,limit={s.eval_limit}", "--task", f"mc={mc},limit={s.eval_limit}",
            "--device", s.device, "--json"), capture=True)
        result["eval"] = [{key: row.get(key) for key in ("run", "task", "step", "depth", "n", "scores")}
                          for row in json.loads(evaluated.stdout)]
        step("status", self.matcher("status", str(sweep_dir)))
        plot = self.work / "curves.png"
        if importlib.util.find_spec("matplotlib") is None:
            result["plot"] = "not drawn: matplotlib is not installed"
            step("compare", self.matcher("compare", str(sweep_dir)))
        else:
            step("compare", self.matcher("compare", str(sweep_dir), "--plot", str(plot)))
            shutil.copyfile(plot, self.out / "curves.png")
            result["plot"] = "curves.png"
        finished = all(run["state"] == "finished" for run in result["runs"].values())
        result["ok"] = finished and len(result["runs"]) == 3 and result["resume"]["exact"] and bool(result["eval"])
        return result

    def resume_sweep(self, step) -> Path:
        """dr_da-tiny in fp32, evaluations at 1/3, 2/3 and the end (the resume checks of b and c)."""
        s = self.sizes
        path = self.work / "sweeps" / "resume.yaml"
        if not path.is_file():
            tokens_per_step = s.resume_batch * s.resume_seq_len
            evals = ",".join(str(s.resume_steps * q // 3 * tokens_per_step) for q in (1, 2, 3))
            step("plan resume", self.matcher(
                "plan", "--target", "la-tiny", "--variants", "dr_da", "--batch", str(s.resume_batch), "--seq-len",
                str(s.resume_seq_len), "--tokens", str(s.resume_steps * tokens_per_step), "--no-measure",
                "--set", "train.dtype=fp32", "--set", f"train.eval_tokens=[{evals}]", "--set", "train.data_steps=2",
                "--set", f"train.eval_examples={s.resume_eval_examples}", "--out", str(path)))
        return path

    def resume_check(self, step) -> dict[str, Any]:
        sweep = self.resume_sweep(step)
        run = ["--only", "dr_da"]
        step("run uninterrupted (fp32)", self.matcher("run", str(sweep), "--results", str(self.work / "uninterrupted"),
                                                      *run))
        resumed = self.work / "resumed"
        killed = self.kill_after_second_eval(self.matcher("run", str(sweep), "--results", str(resumed), *run),
                                             resumed / "resume" / "dr_da" / "metrics.jsonl")
        step("run resumed (fp32)", self.matcher("run", str(sweep), "--results", str(self.work / "resumed"), *run))
        return {"dtype": "fp32", "deterministic_algorithms": True, "tolerance": "exact (max abs difference 0)",
                **killed, **resume_compared(self.work / "uninterrupted" / "resume" / "dr_da",
                                            self.work / "resumed" / "resume" / "dr_da")}

    def distributed_part(self) -> dict[str, Any]:
        s = self.sizes
        steps: list[dict[str, Any]] = []

        def step(name: str, argv: list[str]) -> subprocess.CompletedProcess:
            done = self.run(argv)
            steps.append({"step": name, "exit_code": done.returncode})
            if done.returncode != 0:
                raise RuntimeError(f"{name} exited with {done.returncode} (gpu_check.log has its output)")
            return done

        sweep = self.resume_sweep(step)
        from matcher.plan.sweep import load_sweep
        from matcher.run.contract import RunInfo
        from matcher.run.rundir import RunDir

        loaded = load_sweep(sweep)
        (run,) = [run for run in loaded.runs if run.name == "dr_da"]
        folders = {}
        for name in ("fsdp-uninterrupted", "fsdp-resumed"):
            folders[name] = RunDir(self.work / name / run.name)
            folders[name].path.mkdir(parents=True)
            folders[name].write_run_info(RunInfo.from_run(run, loaded.name, str(sweep)))

        def torchrun(folder: RunDir) -> list[str]:
            return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                    str(Path(__file__).resolve()), "--fsdp-worker", str(folder.path), "--device", s.device]

        step("torchrun fsdp2 uninterrupted", torchrun(folders["fsdp-uninterrupted"]))
        killed = self.kill_after_second_eval(torchrun(folders["fsdp-resumed"]), folders["fsdp-resumed"].metrics)
        step("torchrun fsdp2 resumed", torchrun(folders["fsdp-resumed"]))
        result: dict[str, Any] = {"steps": steps, "launcher": "torchrun --standalone --nproc-per-node=1",
                                  "backend": "nccl" if s.device == "cuda" else "gloo", "dtype": "fp32",
                                  "sharded": json.loads((folders["fsdp-resumed"].path / "fsdp.json").read_text()),
                                  "env": json.loads(folders["fsdp-resumed"].env_json.read_text()),
                                  "resume": {**killed, **resume_compared(folders["fsdp-uninterrupted"].path,
                                                                         folders["fsdp-resumed"].path)}}
        single = self.work / "uninterrupted" / "resume" / "dr_da"
        if (single / "metrics.jsonl").is_file():  # part b's run of the same config without FSDP: how close
            result["vs_one_process_without_fsdp"] = compare_curves(single, folders["fsdp-uninterrupted"].path)
        states = [folder.status().state.value for folder in folders.values()]
        result["ok"] = (states == ["finished", "finished"] and result["resume"]["exact"]
                        and result["sharded"]["dtensor_parameters"] == result["sharded"]["parameters"])
        return result

    def cost_part(self) -> dict[str, Any]:
        """bench/gpu.py as it is, told to start no row after what the part has left minus a row's time."""
        left_s = self.remaining_s()
        table = self.out / "cost.json"
        argv = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--json", str(table)]
        argv += ["--smoke", "--compile", "off"] if self.smoke else ["--budget-s", str(max(10, int(left_s - 90)))]
        try:
            done = self.run(argv)
            exit_code: int | None = done.returncode
        except OutOfTime as stop:  # the rows that ended are in its JSON
            exit_code, stopped = None, str(stop)
        else:
            stopped = None
        table_data = json.loads(table.read_text()) if table.is_file() else {"rows": []}
        rows = table_data["rows"]
        failed = [r for r in rows if str(r.get("skipped", "")).startswith(("failed", "out of memory"))]
        # the bars: dr/dr_da time per token within 1.15x la's, measured peak memory within 10% of analytic
        flags = [f"{r['preset']} compile={r['compile']}: time/la {r['time_vs_la']:.2f} > 1.15" for r in rows
                 if r.get("time_vs_la") and r["time_vs_la"] > 1.15]
        for r in rows:
            ratio = r["peak_memory_bytes"] / r["analytic_training_bytes"] if r.get("peak_memory_bytes") else None
            if ratio is not None and abs(ratio - 1) > 0.10:
                flags.append(f"{r['preset']} compile={r['compile']}: peak/analytic memory {ratio:.2f}")
        return {"exit_code": exit_code, "stopped": stopped, "table": "cost.json",
                "rows_measured": sum("tokens_per_s" in r for r in rows),
                "rows_skipped": [f"{r['preset']} compile={r['compile']}: {r['skipped']}" for r in rows
                                 if "skipped" in r],
                "over_the_bars": flags, "complete": table_data.get("complete", False),
                "ok": exit_code == 0 and bool(rows) and not failed}


# ------------------------------------------------------------------------------------ helpers
def stop_group(process: subprocess.Popen) -> None:
    for signum, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with _suppress_gone():
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class _suppress_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, parents before children (from /proc: Linux, as the GPU machines and CI)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:  # a line being written
            break
    return lines


def curve(run_dir: Path) -> list[dict]:
    """metrics.jsonl as an uninterrupted run writes it: no resume events, no timings."""
    return [{k: v for k, v in line.items() if k not in TIMING_FIELDS}
            for line in read_jsonl(run_dir / "metrics.jsonl") if line.get("event") != "resume"]


def numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, list):
        return [x for item in value for x in numbers(item)]
    return []


def compare_curves(reference: Path, other: Path) -> dict[str, Any]:
    """Line by line: the same events at the same steps, every number's largest absolute difference."""
    want, got = curve(reference), curve(other)
    same_lines = [(x.get("event"), x.get("step")) for x in want] == [(x.get("event"), x.get("step")) for x in got]
    diff = 0.0
    if same_lines:
        for a, b in zip(want, got):
            for key in set(a) | set(b):
                xs, ys = numbers(a.get(key)), numbers(b.get(key))
                if len(xs) != len(ys):
                    diff = float("inf")
                diff = max([diff, *(abs(x - y) for x, y in zip(xs, ys))])
    return {"lines": len(want), "same_events_and_steps": same_lines, "max_abs_diff": diff if same_lines else None}


def resume_compared(uninterrupted: Path, resumed: Path) -> dict[str, Any]:
    """The resumed run against the uninterrupted one: exact when it resumed once, finished, and every
    number of its curve equals the other's."""
    compared = compare_curves(uninterrupted, resumed)
    resumed_from = [line["step"] for line in read_jsonl(resumed / "metrics.jsonl") if line.get("event") == "resume"]
    status = resumed / "status.json"
    state = json.loads(status.read_text()).get("state") if status.is_file() else None
    return {**compared, "resumed_from_step": resumed_from, "state": state,
            "exact": compared["max_abs_diff"] == 0.0 and compared["lines"] > 0 and len(resumed_from) == 1
            and state == "finished"}


def run_summary(run_dir: Path) -> dict[str, Any]:
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    lines = read_jsonl(run_dir / "metrics.jsonl")
    evals = [line for line in lines if line.get("event") == "eval"]
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").is_file() else {}
    last = evals[-1] if evals else {}
    return {"state": status.get("state"), "reason": status.get("reason"), "steps": status.get("step"),
            "device": env.get("device"), "dtype": env.get("dtype"), "evals": len(evals),
            **{key: last.get(key) for key in ("train_loss", "eval_loss", "eval_accuracy", "tokens_per_s", "mfu",
                                              "peak_memory_bytes")}}


def write_benchmark_files(folder: Path) -> tuple[Path, Path]:
    """A GSM8K-style file (generation, `#### N`) and a multiple-choice file, in the character set."""
    gsm8k, mc = folder / "gsm8k.jsonl", folder / "mc.jsonl"
    with gsm8k.open("w") as f:
        for i in range(64):
            a, b = i % 9 + 1, i // 9 + 2
            f.write(json.dumps({"question": f"x={a}; y=x+{b}; y?", "answer": f"x={a}, y={a + b} #### {a + b}"}) + "\n")
    with mc.open("w") as f:
        for i in range(64):
            a, b = i % 9 + 1, i // 9 + 2
            choices = [str(a + b + shift) for shift in (0, 1, -1, 2)]
            f.write(json.dumps({"question": f"{a}+{b}=", "choices": choices[i % 4:] + choices[:i % 4],
                                "answer": (4 - i % 4) % 4}) + "\n")
    return gsm8k, mc


def nvidia_smi() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"not run: {error}"
    return done.stdout.strip() or done.stderr.strip()


def grouped_mm_probe(device) -> dict[str, Any]:
    """Which grouped GEMM the experts call, and whether it runs on `device` (forward and backward) and
    agrees with a loop over the experts."""
    import torch
    import torch.nn.functional as F

    from matcher.models import kernels

    public = kernels._GROUPED_MM is getattr(F, "grouped_mm", None)
    found = {"function": "torch.nn.functional.grouped_mm" if public
             else "torch._grouped_mm (older torch: F.grouped_mm is missing)", "dtypes": {}}
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor([5, 0, 11, 16])  # an expert with no rows included
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(int(counts.sum()), 32, generator=generator).to(device, dtype).requires_grad_()
        b = torch.randn(len(counts), 32, 48, generator=generator).to(device, dtype).requires_grad_()
        offsets = counts.cumsum(0).to(device=device, dtype=torch.int32)
        try:
            out = kernels.grouped_mm(a, b, offsets)
            out.float().square().sum().backward()
            want = torch.cat([rows.float() @ b[g].float() for g, rows in enumerate(a.split(counts.tolist()))])
            found["dtypes"][str(dtype).removeprefix("torch.")] = {
                "ok": True, "max_abs_diff_vs_loop": float((out.detach().float() - want.detach()).abs().max()),
                "grad_finite": bool(a.grad.isfinite().all() and b.grad.isfinite().all())}
        except Exception as error:  # noqa: BLE001  recorded: the finding this probe is for
            found["dtypes"][str(dtype).removeprefix("torch.")] = {
                "ok": False, "error": f"{type(error).__name__}: {error}"[:400]}
    return found


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def fsdp_worker(run_dir: str, device: str) -> int:
    """One torchrun rank: join a one-rank group, shard with matcher's wrap() (FSDP2), train the run."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from matcher.run import trainer

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl", device_id=torch.device("cuda", torch.cuda.current_device()))
    else:
        dist.init_process_group("gloo")
    sharding_wrap = trainer.wrap

    def wrap_one_rank(model, world, device, *, fsdp, param_dtype=None):
        # wrap() leaves one rank unsharded; told of two it shards over the group, which has this one rank
        wrapped = sharding_wrap(model, dataclasses.replace(world, size=2), device, fsdp=True, param_dtype=param_dtype)
        params = list(model.parameters())
        write_json(Path(run_dir) / "fsdp.json", {"parameters": len(params), "world_size": dist.get_world_size(),
                                                 "dtensor_parameters": sum(isinstance(p, DTensor) for p in params)})
        return wrapped

    trainer.wrap = wrap_one_rank
    result = trainer.train_run(run_dir, fsdp=True, device=device)
    return 1 if result.state == "failed" else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", type=Path,
                        help="where the JSON and logs go (default: $OUT when set, else bench/results/gpu/)")
    parser.add_argument("--smoke", action="store_true", help="the CPU rehearsal: tiny runs, gloo, bench/gpu.py --smoke")
    parser.add_argument("--deadline-s", type=float, help="the whole check's time (default 450 on a GPU, 240 smoke)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, to rerun only what a fix changed (default {','.join(PARTS)})")
    parser.add_argument("--keep-work", action="store_true", help="keep the sweeps and results (a temporary folder)")
    parser.add_argument("--fsdp-worker", metavar="RUN_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fsdp_worker:
        return fsdp_worker(args.fsdp_worker, args.device)
    sizes = SMOKE if args.smoke else GPU
    if args.deadline_s:
        sizes = dataclasses.replace(sizes, deadline_s=args.deadline_s)
    out = args.out_dir or (Path(os.environ["OUT"]) if os.environ.get("OUT") else DEFAULT_OUT)
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(PARTS)}")
    parts = tuple(part for part in PARTS if part in parts)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*parts, "summary"):  # a rerun into the same folder: no stale result of a part it reruns
        (out / f"{name}.json").unlink(missing_ok=True)
    if "loop" in parts:
        (out / "curves.png").unlink(missing_ok=True)
    (out / "gpu_check.log").write_text("")
    check = Check(out, sizes, args.smoke, parts)
    sys.path.insert(0, str(check.work / "src"))  # this process imports matcher the way its children do
    bodies = {"env": check.env_part, "loop": check.loop_part, "distributed": check.distributed_part,
              "cost": check.cost_part}
    try:
        for name in parts:
            result = check.part(name, bodies[name])
            how = result.get("skipped") or result.get("error") or f"{result.get('elapsed_s')} s"
            print(f"{name}: {'ok' if result['ok'] else 'NOT ok'} ({how})", flush=True)
    finally:
        if not args.keep_work:
            shutil.rmtree(check.work, ignore_errors=True)
    summary = json.loads((out / "summary.json").read_text())
    print(f"complete: {summary['complete']}, ok: {summary['ok']}, {summary['elapsed_s']} s; files in {out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
