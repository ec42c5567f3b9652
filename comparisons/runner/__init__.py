"""Run evaluations: `evaluate()` runs a task over a dataset, scores it, and records the run."""

from comparisons.runner.core import ItemResult, MetricResult, RunResult, TaskResult, aevaluate, evaluate, runner_loop

__all__ = ["evaluate", "aevaluate", "runner_loop", "TaskResult", "RunResult", "ItemResult", "MetricResult"]
