"""The embedded task: multi-step arithmetic with variable tracking, generated from a seed.

A problem with 3 steps reads

    Q: k=3; x=k+4; b=x*2; b? A: k=3, x=7, b=14 #### 14

Each step assigns a fresh variable (names drawn at random, so position does not give the answer)
from one or two earlier variables and a digit, with +, - or *. The answer writes every
intermediate value before `#### <final>`, so a model has to carry the chain; `data_steps` sets its
length. Values stay in 0..999 so the numbers remain a few characters long at any depth.

Problem streams are pure functions of (seed, split, index): training row `i` always holds the same
problems, which makes the stream resumable from a step count and shardable across ranks, and the
held-out `eval` split uses different seeds from `train`.
"""

from __future__ import annotations

import random
import string

from matcher.data.problems import Problem
from matcher.errors import DataError

MATH_DATA = ("math", "math-latent")  # the data names of this generator: the written-out chain, or the final value only
MAX_VALUE = 999
MAX_STEPS = len(string.ascii_lowercase)  # one fresh variable name per step


def check_steps(n_steps: int) -> None:
    if not 1 <= n_steps <= MAX_STEPS:
        raise DataError(f"data_steps must be between 1 and {MAX_STEPS} (one variable per step), "
                        f"got {n_steps}")


def make_problem(rng: random.Random, n_steps: int) -> Problem:
    names = rng.sample(string.ascii_lowercase, n_steps)
    values = {names[0]: rng.randint(0, 20)}
    statements = [f"{names[0]}={values[names[0]]}"]
    for name in names[1:]:
        expression, value = _step(rng, list(values.items()))
        values[name] = value
        statements.append(f"{name}={expression}")
    final = str(values[names[-1]])
    question = "; ".join(statements) + f"; {names[-1]}?"
    answer = ", ".join(f"{name}={values[name]}" for name in names) + f" #### {final}"
    return Problem(question=question, answer=answer, final=final)


def _step(rng: random.Random, earlier: list[tuple[str, int]]) -> tuple[str, int]:
    """One new value from earlier ones. Half the time it reads the latest variable (a chain); else any
    earlier one (tracking). Only candidates that stay in 0..MAX_VALUE are offered; `x+d` or `x-d`
    always qualifies, so there is always one."""
    left_name, left = earlier[-1] if rng.random() < 0.5 else rng.choice(earlier)
    candidates = []
    digit = rng.randint(1, 9)
    candidates += [(f"{left_name}+{digit}", left + digit), (f"{left_name}-{digit}", left - digit)]
    candidates.append((f"{left_name}*{digit}", left * digit))
    if len(earlier) >= 2:
        right_name, right = rng.choice([item for item in earlier if item[0] != left_name])
        candidates += [(f"{left_name}+{right_name}", left + right),
                       (f"{left_name}-{right_name}", left - right)]
    valid = [(text, value) for text, value in candidates if 0 <= value <= MAX_VALUE]
    return rng.choice(valid)


def problem_rng(seed: int, split: str, index: int) -> random.Random:
    # String seeds go through SHA-512 in `random`, so streams are independent of PYTHONHASHSEED and
    # of each other for different (seed, split, index).
    return random.Random(f"matcher-math:{seed}:{split}:{index}")


def eval_problems(n_steps: int, count: int) -> list[Problem]:
    """The held-out problems: split `eval`, one generator per problem. The same for every run whatever
    its seed, so all runs of a sweep are scored on the same problems."""
    check_steps(n_steps)
    return [make_problem(problem_rng(0, "eval", i), n_steps) for i in range(count)]
