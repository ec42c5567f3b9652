"""procrastinate finds its tasks in each app's `tasks` module: the portal's job lives in jobs.py."""

from comparisons.jobs import run_queued  # noqa: F401
