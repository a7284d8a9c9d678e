"""Eval tasks: each a named spec (the prompt format, few-shot count, stop strings, generation budget
and metrics are data here, as in lm-evaluation-harness's task YAMLs) and the items read from a file.

| task | file (JSONL) | how it is scored | metrics |
|---|---|---|---|
| gsm8k | question, answer ending in `#### N` | greedy generation, 5-shot, 256 new tokens | strict, flexible |
| math | problem + solution with `\\boxed{}` (or question + answer) | greedy, 4-shot, 256 new tokens | acc |
| mc | question, choices (list), answer (index) | log-likelihood per choice | acc, acc_norm, acc_norm_per_{byte,token} |
| bpb | question, answer | bits per byte of the gold answer | bpb |
| embedded | none (held-out generated problems) or a GSM8K-style file | greedy, `Q: ... A:` | acc, loss, bpb |
| latent | none (held-out generated problems) | the final value only: ` #### N` | acc, loss, bpb |

`--task NAME[=FILE][,key=value...]` chooses one; keys: n_shot, fewshot (a file of solved examples;
default: the first n_shot items of FILE, which are then not scored), max_new_tokens, limit (score the
first N items), and for the embedded tasks n (problems) and steps (chain length; default the run's).
The generation budget is fixed by the spec or `max_new_tokens`, never by the reference answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matcher.data import math_task
from matcher.data.math_task import MATH_DATA
from matcher.data.problems import Problem, final_number, jsonl_records, load_jsonl, prompt_text
from matcher.errors import DataError
from matcher.eval.extract import exact_match_text, last_boxed

if TYPE_CHECKING:
    from matcher.config import TrainConfig


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str  # generate (greedy answers) | choice (log-likelihood of each choice) | bpb | embedded
    question_template: str = "Question: {question}\nAnswer:"  # what the model is given for one item
    answer_prefix: str = " "  # between the question and its answer (few-shot examples, gold continuations)
    fewshot_delimiter: str = "\n\n"
    n_shot: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # generation ends at the model's EOS or the first of these
    metrics: tuple[str, ...] = ("acc",)
    needs_file: bool = True
    # generate: how the gold answer is written and a generated one checked. final_number: a solution ending
    # in `#### N`, scored strict and flexible (GSM8K); boxed: the last \boxed{} (or the whole answer),
    # compared by math equivalence (MATH)
    answer_format: str = "boxed"


# loss_answer: nats per token of the final value (` #### N` and EOS); loss_chain: per token of the
# written-out chain before it (none in the latent form). Their token-weighted mean is loss.
EMBEDDED_METRICS = ("acc", "loss", "loss_answer", "loss_chain", "bpb")
SPECS = {
    "gsm8k": TaskSpec(name="gsm8k", kind="generate", n_shot=5, stop=("Question:", "</s>", "<|im_end|>"),
                      metrics=("strict", "flexible"), answer_format="final_number"),
    "math": TaskSpec(name="math", kind="generate", question_template="Problem:\n{question}\n\nSolution:",
                     n_shot=4, stop=("Problem:",), metrics=("acc",)),
    "mc": TaskSpec(name="mc", kind="choice", metrics=("acc", "acc_norm", "acc_norm_per_byte", "acc_norm_per_token")),
    "bpb": TaskSpec(name="bpb", kind="bpb", metrics=("bpb",)),
    # the embedded task's prompts are the training documents' (matcher.data.problems); its budget is the
    # longest answer a chain of `steps` can have, so no problem's own answer length leaks into it
    "embedded": TaskSpec(name="embedded", kind="embedded", question_template="Q: {question} A:",
                         max_new_tokens=0, metrics=EMBEDDED_METRICS, needs_file=False),
    "latent": TaskSpec(name="latent", kind="embedded", question_template="Q: {question} A:",
                       max_new_tokens=0, metrics=EMBEDDED_METRICS, needs_file=False),
}
OPTIONS = ("n_shot", "fewshot", "max_new_tokens", "limit", "n", "steps")
EMBEDDED_PROBLEMS = 256  # held-out problems `matcher eval --task embedded` scores by default


@dataclass(frozen=True)
class Item:
    prompt: str  # the text the model continues, few-shot examples included (BOS is added by the engine)
    reference: str  # the gold continuation (the answer text), for loss and bits per byte
    target: str | None = None  # what a generated answer must equal: a number, a boxed expression
    choices: tuple[str, ...] = ()  # mc: the choices' texts (lm-evaluation-harness's doc_to_choice)
    target_delimiter: str = " "  # mc: what comes between the prompt and each choice in its continuation
    answer_index: int = -1  # mc: the right one
    item_id: str = ""  # where the item comes from ("line 12" of its file, "problem 3" generated): samples name it


@dataclass(frozen=True)
class Task:
    spec: TaskSpec
    items: list[Item]
    source: str  # the file, or "generated" for the embedded problems
    options: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 256
    n_total: int | None = None  # the items there were, where a limit (limit, eval_examples) scores fewer
    generated_steps: int | None = None  # the chain length of generated embedded problems (their identity)

    @property
    def label(self) -> str:
        """How results name the task: its name, with the file's stem when it has one, or the embedded
        problems' count and chain length when they are not the run's eval set (embedded-n1000)."""
        if self.source != "generated":
            return f"{self.spec.name}-{Path(self.source).stem}"
        extra = [f"{key}{self.options[key]}" for key in ("n", "steps") if key in self.options]
        return "-".join([self.spec.name, *extra])


def parse_task(text: str) -> tuple[str, str | None, dict[str, str]]:
    """`NAME[=FILE][,key=value...]` -> (name, file or None, options)."""
    head, *rest = text.split(",")
    name, _, file = head.partition("=")
    name = name.strip().lower()
    if name not in SPECS:
        raise DataError(f"--task {text}: unknown task {name!r}; choose one of {', '.join(SPECS)} "
                        "(e.g. --task gsm8k=test.jsonl)")
    options = {}
    for pair in rest:
        key, sep, value = pair.partition("=")
        if not sep or key.strip() not in OPTIONS:
            raise DataError(f"--task {text}: {pair!r} is not an option; give key=value with a key of "
                            f"{', '.join(OPTIONS)}")
        options[key.strip()] = value.strip()
    if SPECS[name].needs_file and not file:
        raise DataError(f"--task {text}: {name} needs a JSONL file: --task {name}=FILE")
    return name, file or None, options


def int_option(options: dict[str, str], key: str, default: int, text: str, minimum: int = 0) -> int:
    value = options.get(key)
    if value is None:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise DataError(f"--task {text}: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_task(text: str, *, data_steps: int = 2) -> Task:
    """The task `text` names (`--task` syntax), its items read and checked. `data_steps`: the chain
    length of the embedded problems (the run's train.data_steps)."""
    name, file, options = parse_task(text)
    spec = SPECS[name]
    limit = int_option(options, "limit", 0, text)
    if spec.kind == "embedded":
        steps = int_option(options, "steps", data_steps, text, minimum=1)
        count = int_option(options, "n", EMBEDDED_PROBLEMS, text, minimum=1)
        if file is not None:
            if name == "latent":
                raise DataError(f"--task {text}: the latent task is generated; give --task latent without a file")

            problems = load_jsonl(file)
        else:
            problems = math_task.eval_problems(steps, count)
        task = embedded_task(problems, latent=name == "latent", steps=steps, source=file or "generated")
        return limited(replace(task, options=options), limit)
    records = _records(file)
    fewshot_file = options.get("fewshot")
    n_shot = int_option(options, "n_shot", spec.n_shot, text)
    if fewshot_file:
        shots, scored = _records(fewshot_file)[:n_shot], records
    else:
        shots, scored = records[:n_shot], records[n_shot:]
    if not scored:
        raise DataError(f"{file}: nothing left to score after the {n_shot} few-shot examples taken from it; "
                        "give a fewshot=FILE or a smaller n_shot")
    make = {"generate": _generate_item, "choice": _choice_item, "bpb": _bpb_item}[spec.kind]
    prefix = "".join(_solved(spec, make(spec, "", where, record)) + spec.fewshot_delimiter
                     for where, record in shots)
    items = [replace(make(spec, prefix, where, record), item_id=f"line {where.rsplit(':', 1)[-1]}")
             for where, record in scored]
    budget = int_option(options, "max_new_tokens", spec.max_new_tokens, text, minimum=1)
    return limited(Task(spec, items, str(file), options, budget), limit)


def limited(task: Task, limit: int) -> Task:
    """`task` scoring its first `limit` items (0: all), remembering how many there were."""
    if not limit or limit >= len(task.items):
        return task
    return replace(task, items=task.items[:limit], n_total=task.n_total or len(task.items))


def embedded_task(problems: list[Problem], *, latent: bool = False, steps: int = 2,
                  source: str = "generated") -> Task:
    """The embedded task on `problems`: the written-out chain, or (latent) the final value only.
    Budget: the longest answer `steps` variables can have (`x=999, ` per step, ` #### 999`, EOS), or
    for the longest reference when the problems come from a file (a bound on the set, not per problem)."""
    spec = SPECS["latent" if latent else "embedded"]
    items = [Item(prompt=prompt_text(p.question), reference=" " + (f"#### {p.final}" if latent else p.answer),
                  target=p.final, item_id=f"problem {i}") for i, p in enumerate(problems)]
    if source == "generated":
        return Task(spec, items, source, {}, generated_budget(steps, latent), generated_steps=steps)
    return Task(spec, items, source, {}, max(len(item.reference) for item in items) + 1)


def generated_budget(steps: int, latent: bool) -> int:
    """The longest answer a generated chain of `steps` variables can have, in characters (the char
    tokenizer's tokens), EOS included."""
    return len(" #### 999") + 1 if latent else len(" " + ", ".join(["x=999"] * steps) + " #### 999") + 1


def run_eval_task(problems: list, cfg: TrainConfig) -> Task:
    """The task a run's in-training eval scores: its eval problems (eval_data, eval_examples), in the
    latent form (the final value only) where eval_data is math-latent; n_total is the file's problem
    count where eval_examples scores fewer."""
    task = embedded_task(problems, latent=cfg.eval_data == "math-latent", steps=cfg.data_steps,
                         source="generated" if cfg.eval_data in MATH_DATA else cfg.eval_data)
    if cfg.eval_data in MATH_DATA:
        return task
    available = len(load_jsonl(cfg.eval_data))  # eval_examples may score fewer: the result says so
    return replace(task, n_total=available) if available > len(task.items) else task


def _records(file: str | Path) -> list[tuple[str, dict]]:
    path = Path(file)
    if not path.is_file():
        raise DataError(f"{path}: no such task file; give a JSONL file, one problem per line")
    records = [(where, record) for where, record in jsonl_records(path)]
    if not records:
        raise DataError(f"{path}: no items in the file; it is empty")
    for where, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{where}: each line must be a JSON object")
    return records


def _field(record: dict, where: str, *keys: str) -> str:
    for key in keys:
        if isinstance(record.get(key), str):
            return record[key].strip()
    raise DataError(f"{where}: expected a string field {' or '.join(repr(k) for k in keys)}")


def _solved(spec: TaskSpec, item: Item) -> str:
    """A few-shot example: the question with its gold answer."""
    return item.prompt + spec.answer_prefix + item.reference.lstrip()


def _generate_item(spec: TaskSpec, prefix: str, where: str, record: dict) -> Item:
    question = _field(record, where, "question", "problem")
    if spec.answer_format == "final_number":
        answer = _field(record, where, "answer")
        if final_number(answer) is None:
            raise DataError(f"{where}: the answer must end in '#### <number>' (the GSM8K convention)")
        target = exact_match_text(answer)  # the number as lm-evaluation-harness's exact_match compares it
    else:
        answer = _field(record, where, "solution", "answer")
        target = record["answer"].strip() if isinstance(record.get("answer"), str) and "solution" in record \
            else last_boxed(answer)
        if target is None:
            target = answer
    return Item(prompt=prefix + spec.question_template.format(question=question),
                reference=spec.answer_prefix + answer, target=target)


def _choice_item(spec: TaskSpec, prefix: str, where: str, record: dict) -> Item:
    question = _field(record, where, "question")
    choices, answer = record.get("choices"), record.get("answer")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{where}: `choices` must be a list of at least two non-empty strings")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: `answer` must be the index (0..{len(choices) - 1}) of the right choice")
    return Item(prompt=prefix + spec.question_template.format(question=question),
                reference=spec.answer_prefix + choices[answer], target=str(answer),
                choices=tuple(choices), target_delimiter=spec.answer_prefix, answer_index=answer)


def _bpb_item(spec: TaskSpec, prefix: str, where: str, record: dict) -> Item:
    question, answer = _field(record, where, "question", "problem"), _field(record, where, "answer", "solution")
    return Item(prompt=prefix + spec.question_template.format(question=question),
                reference=spec.answer_prefix + answer)
