"""Benchmark evaluation: tasks as named specs (tasks.py), answer extraction and equivalence
(extract.py), batched generation and log-likelihoods over prompts of different lengths (engine.py),
scoring a model on a task (score.py), and the intervals every score carries (intervals.py). Imports
data/ and the top level; matcher/run/evaluate.py applies it to runs (the in-training eval, `matcher eval`
over saved checkpoints) and matcher/report/ reads its intervals.
"""
