"""Real worker processes (`manage.py procrastinate worker`) on the test database, for tests."""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.dburl import subprocess_database_url

# What the tests' workers may run (the worker is a new process: it reads these from the environment).
TASKS = {"sample-steady": "tests.sample_tasks:steady", "demo-offline": "comparisons.demo_tasks:offline_model"}


@pytest.fixture
def workers(tmp_path):
    """start(*args): a worker process on the test database; stopped (SIGTERM, then SIGKILL) at teardown."""
    processes = []

    def start(*args):
        log = open(tmp_path / f"worker-{len(processes)}.log", "w")  # noqa: SIM115 -- closed at teardown
        process = subprocess.Popen(
            [sys.executable, "manage.py", "procrastinate", "worker", "--queues", "runs", *args],
            env={**os.environ, "DATABASE_URL": subprocess_database_url(), "DEBUG": "1",
                 "EVALCOMPARE_TASKS": json.dumps(TASKS),
                 "EVALCOMPARE_JUDGE_STANDIN": "comparisons.demo_tasks:offline_judge"},
            stdout=log, stderr=subprocess.STDOUT)
        processes.append((process, log))
        return process

    yield start
    for process, log in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
