"""Benchmark evaluation: tasks as named specs (matcher/eval/tasks.py), answer extraction and equivalence
(extract.py), batched generation and log-likelihoods over prompts of different lengths (engine.py),
scoring a model on a task (score.py), and the intervals every score carries (intervals.py).

The in-training evaluation (eval_loss, eval_accuracy) is the embedded task scored here, and
`matcher eval RUN_DIR` scores the run's saved model checkpoints on any task with the same code, so a
score computed later equals the one logged during training.
"""
