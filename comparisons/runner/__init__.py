"""Run evaluations: `evaluate()` runs a task over a dataset, scores it, and records the run."""

from comparisons.runner.core import ItemResult, MetricResult, RunResult, TaskResult, evaluate

__all__ = ["evaluate", "TaskResult", "RunResult", "ItemResult", "MetricResult"]
