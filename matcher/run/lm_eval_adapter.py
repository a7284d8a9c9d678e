"""A matcher checkpoint as an lm-evaluation-harness model (`pip install 'matcher[lm-eval]'`), so the
harness's tasks (with local data files) score any saved eval point:

    import lm_eval
    from matcher.run.lm_eval_adapter import MatcherLM

    lm = MatcherLM("results/<sweep>/<run>", step=1200)
    lm_eval.simple_evaluate(model=lm, tasks=["my_local_task"], task_manager=lm_eval.tasks.TaskManager(
        include_path="my_tasks/"))

or from the command line, `matcher lm-eval results/<sweep>/<run> --step 1200 -- --tasks ...`, which
imports this module (registering the model name `matcher`) and then runs the harness's own CLI
(matcher/commands/lm_eval.py). The device defaults to what the machine has (cpu on a CPU build). The
three request types run through matcher/eval/engine.py, the same batching, padding and context rules
as `matcher eval`.
"""

from __future__ import annotations

import contextlib

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from matcher.data.tokenizer import tokenizer_for
from matcher.eval import engine
from matcher.run.distributed import autocast_for, pick_device, resolve_dtype
from matcher.run.evaluate import choose_steps
from matcher.run.rundir import RunDir
from matcher.run.snapshots import list_snapshots, load_snapshot


@register_model("matcher")
class MatcherLM(LM):
    def __init__(self, run_dir=None, step=None, depth=None, device=None, batch_size=engine.EVAL_BATCH, *,
                 model=None, tokenizer=None, seq_len=None, **kwargs):
        """A run's checkpoint (`run_dir`, `step`: default the last, `depth`: test-time depth), or a
        `model` with its `tokenizer` and `seq_len` given directly."""
        super().__init__()

        self.device_ = pick_device(device)
        self.batch_size_ = int(batch_size)
        self.autocast = contextlib.nullcontext()
        if model is None:
            run = RunDir(run_dir)
            info = run.read_run_info()
            model_cfg, cfg = info.model, info.train
            snapshots = dict(list_snapshots(run.path))
            chosen = choose_steps(sorted(snapshots), None if step is None else int(step), False, run.path)[0]
            model, _ = load_snapshot(snapshots[chosen], model_cfg, depth=None if depth is None else int(depth),
                                     device=self.device_)
            tokenizer, seq_len = tokenizer_for(cfg), cfg.seq_len
            self.autocast = autocast_for(resolve_dtype(cfg.dtype, self.device_), self.device_)
        self.model, self.tokenizer, self.seq_len = model, tokenizer, int(seq_len)

    def _kwargs(self) -> dict:
        return dict(seq_len=self.seq_len, pad_id=self.tokenizer.pad_id, device=self.device_, autocast=self.autocast,
                    batch_size=self.batch_size_)

    def _context(self, text: str) -> list[int]:
        return [self.tokenizer.bos_id, *self.tokenizer.encode(text)]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            pairs.append((self._context(context), self.tokenizer.encode(continuation) or [self.tokenizer.eos_id]))
        greedy: list[bool] = []
        nats = engine.continuation_nats(self.model, pairs, greedy=greedy, **self._kwargs())
        return [(-sum(n), g) for n, g in zip(nats, greedy)]

    def loglikelihood_rolling(self, requests) -> list[float]:
        """The whole text's log-likelihood after BOS, in windows of half the context, each scored with
        the tokens before it as context (as many as fit)."""
        step = max(1, self.seq_len // 2)
        results = []
        for request in requests:
            tokens = self._context(request.args[0])
            pairs = [(tokens[:start], tokens[start:start + step]) for start in range(1, len(tokens), step)]
            nats = engine.continuation_nats(self.model, pairs, **self._kwargs()) if pairs else []
            results.append(-sum(sum(n) for n in nats))
        return results

    def generate_until(self, requests) -> list[str]:
        results = []
        for request in requests:  # one at a time: each request has its own stop strings and budget
            context, options = request.args
            until = options.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            budget = int(options.get("max_gen_toks", 256))
            text = engine.greedy_generate(self.model, [self._context(context)], max_new_tokens=budget,
                                          eos_id=self.tokenizer.eos_id, decode=self.tokenizer.decode, stop=until,
                                          **self._kwargs())[0]
            results.append(text)
        return results

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self.seq_len

    def tok_encode(self, string: str, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.tokenizer.decode(tokens)

