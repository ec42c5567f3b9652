"""Tasks and scorers importable by `run_evaluation --task tests.sample_tasks:NAME` in the tests."""

import asyncio
import itertools
import threading
import time


def _answer(input):
    number = int(input["question"].split()[-1])
    return f"answer {number}" if number % 2 == 0 else "wrong"


def sync_task(input):
    time.sleep(0.001)
    return _answer(input)


async def async_task(input):
    await asyncio.sleep(0.001)
    return _answer(input)


def awaitable_task(input):
    return async_task(input)  # a plain function returning a coroutine


def perfect(input):
    return "answer " + input["question"].split()[-1]


def not_a_function_but_a_string():
    return None


broken = "this is not callable"


def none_for_odd(input):
    number = int(input["question"].split()[-1])
    return None if number % 2 else f"answer {number}"


def always_fails(input):
    raise RuntimeError(f"no model for {input['question']}")


async def streams(input):  # an async generator: not a task
    yield "answer"


_calls = itertools.count()  # per process: each run_evaluation is a new one


async def steady(input):
    """About 20 ms, varying by datapoint, for interrupting runs at many moments."""
    number = int(input["question"].split()[-1])
    await asyncio.sleep(0.005 + (number * 7919 % 31) / 1000)
    return f"answer {number}"


def hang_after_first(input):
    """The process's first call answers at once; every later one hangs forever, as a stuck sync call would."""
    if next(_calls):
        threading.Event().wait()
    return "answer"


async def ignores_cancel_after_first(input):
    """The process's first call answers at once; every later one waits forever, swallowing cancellation."""
    while next(_calls):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
    return "answer"
