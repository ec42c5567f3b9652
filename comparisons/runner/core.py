"""evaluate(): run a task over an evaluation's dataset, score every output, record the run.

How the work is split:
- The task and scorers run on the runner loop: ONE asyncio event loop per process, in a daemon
  thread, kept across runs (runner_loop(): the loop policy, so loop-bound clients survive). Exactly
  `concurrency` worker coroutines pull datapoints from a shared iterator, so at most `concurrency`
  tasks are ever in flight. `async def` tasks are awaited on that loop; plain functions run in a
  thread pool of the same size; a function that returns an awaitable has its result awaited.
- Finished items go onto a deque. The recording thread, where Django's ORM belongs,
  writes them in batches (every BATCH_SIZE items or FLUSH_EVERY_S seconds) and draws progress. It is
  the calling thread, unless that thread runs an event loop (Jupyter, asyncio.run, aevaluate()):
  Django refuses the ORM there, so the run is recorded from a thread of its own.
- SIGINT (Ctrl-C) and SIGTERM are cooperative cancellation: when evaluate() runs in the main
  thread, handlers only set a flag (no KeyboardInterrupt can land inside a COPY); the calling thread
  then cancels the loop, abandons what does not stop within ABANDON_AFTER_S (a hung sync task: its
  thread is a daemon, never joined), records everything that finished, and marks the run cancelled.
  A second signal exits the process at once. A task raising asyncio.CancelledError cancels the run too.
- The run's status is the truth: `completed` only when every selected datapoint's inference is
  recorded, `failed` (reason in the run's tag FAILURE_TAG) on any exception in the calling thread,
  else `cancelled`. heartbeat_at is refreshed while it runs, so a killed process's run shows as
  interrupted (EvaluationRun.shown_status).
- An exception or timeout in a task or a scorer fails that datapoint only: the inference is
  recorded with the error message (and whatever scores could be computed), never the run. So does
  an output that is None (unless allowed) or not JSON (NaN, infinity, objects JSON has no form for).
- PostgreSQL cannot store NUL characters or unpaired surrogates in text or JSON: they are replaced
  by U+FFFD before scoring, in outputs, tags, errors and reasons, and the inference's tags say so.
"""

import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import math
import numbers
import os
import queue
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from tqdm import tqdm

from comparisons.bulk import copy_rows
from comparisons.ids import parse_uuid, uuid7
from comparisons.models import Evaluation, EvaluationRun, Evaluator, Feedback, Inference, evaluator_snapshot
from comparisons.runner.openai_client import RateLimiter
from comparisons.runner.scorers import RaisedInThread, Score, Scorer, call_in_thread
from comparisons.stats import Interval, metric_interval, percentile, sample_stddev
from evalcompare.prices import price_for

BATCH_SIZE = 200
# Writing runs while tasks run, so it costs no time until the end: flush often, so that what is
# left to write after the last task (and adds to the run's time) is one poll's worth of items.
FLUSH_EVERY_S = 0.1
POLL_S = 0.05
ABANDON_AFTER_S = 1.0  # after a cancel, how long tasks may take to stop before they are abandoned
HEARTBEAT_S = 10.0  # how often a running run's heartbeat_at is refreshed
STOP_POLL_S = 0.5  # how often evaluate(..., should_stop=) is asked whether to cancel the run
FAILURE_TAG = "evalcompare::failure"
PINNED_TAG = "tensorzero::variant_pinned"
REPLACED_TAG = "evalcompare::replaced_characters"


@dataclass
class TaskResult:
    """What a task may return instead of a bare output, to report usage and tags too."""

    output: Any
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    tags: dict = field(default_factory=dict)


@dataclass
class ItemResult:
    """One datapoint's outcome, as recorded."""

    datapoint_id: Any
    inference_id: Any
    output: Any
    error: str | None
    latency_ms: float | None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: float | None = None
    tags: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # metric -> (value, reason)

    def as_dict(self) -> dict:
        return {
            "datapoint_id": str(self.datapoint_id), "inference_id": str(self.inference_id),
            "output": self.output, "error": self.error, "latency_ms": self.latency_ms,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost": self.cost,
            "scores": {name: value for name, (value, _reason) in self.scores.items()},
        }


@dataclass
class MetricResult:
    name: str
    n: int
    mean: float | None
    ci: Interval | None
    cutoff: float | None
    optimize: str
    boolean: bool

    @property
    def passed(self) -> bool | None:
        """Whether the mean meets the cutoff (None without a cutoff); no scores fails a cutoff."""
        if self.cutoff is None:
            return None
        if self.mean is None:
            return False
        return self.mean >= self.cutoff if self.optimize == "max" else self.mean <= self.cutoff


@dataclass
class RunResult:
    """The summary of a run, as printed by `run_evaluation` and returned by `evaluate()`."""

    run: EvaluationRun
    status: str
    datapoints: int
    items: list[ItemResult]
    metrics: list[MetricResult]
    elapsed_s: float
    comparison_url: str
    blocking: "Blocking | None" = None  # the worst stall of the event loop, if over BLOCKING_WARN_S
    unpriced_models: list[str] = field(default_factory=list)  # called, but not in settings.MODEL_PRICES
    resumed: int | None = None  # on a resume: the datapoints the run had recorded before (None otherwise)
    stopped: dict | None = None  # why the run stopped before its last datapoint (also in run.config["stopped"])
    nothing_to_resume: bool = False  # a resumed run was completed with its window covered: nothing was done
    signal: int | None = None  # the signal (SIGINT, SIGTERM) that cancelled the run, if one did

    @property
    def errors(self) -> int:
        return sum(1 for item in self.items if item.error is not None)

    @property
    def failed_cutoffs(self) -> list[MetricResult]:
        return [metric for metric in self.metrics if metric.passed is False]

    @property
    def failure(self) -> str | None:
        """Why the run failed as a whole though it completed: every datapoint failed (None otherwise)."""
        if self.items and all(item.error is not None for item in self.items):
            first = self.items[0].error
            return f"every datapoint failed: {first if len(first) <= 500 else first[:500] + '…'}"
        return None

    @property
    def passed(self) -> bool:
        return self.status == EvaluationRun.Status.COMPLETED and not self.failed_cutoffs and self.failure is None

    def latency_percentiles(self) -> dict[str, float | None]:
        latencies = sorted(item.latency_ms for item in self.items if item.latency_ms is not None)
        return {f"p{q}": percentile(latencies, q) for q in (50, 95, 99)}

    @property
    def throughput(self) -> float:
        return len(self.items) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def totals(self) -> dict:
        def total(name):
            values = [getattr(item, name) for item in self.items if getattr(item, name) is not None]
            return sum(values) if values else None

        return {"input_tokens": total("input_tokens"), "output_tokens": total("output_tokens"), "cost": total("cost")}

    def judge_totals(self) -> dict:
        """LLM judges' tokens and cost over the run (None where no judge reported any)."""
        usages = [getattr(score, "usage", None) or {} for item in self.items for score in item.scores.values()]

        def total(key):
            values = [usage[key] for usage in usages if usage.get(key) is not None]
            return sum(values) if values else None

        return {key: total(key) for key in ("judge_input_tokens", "judge_output_tokens", "judge_cost")}

    def as_dict(self) -> dict:
        return {
            "summary": True, "run_id": str(self.run.id), "evaluation": self.run.evaluation.name,
            "variant": self.run.variant_name, "status": self.status, "datapoints": self.datapoints,
            "inferences": len(self.items), "errors": self.errors, "elapsed_s": round(self.elapsed_s, 3),
            "throughput_per_s": round(self.throughput, 2), "latency_ms": self.latency_percentiles(), **self.totals(),
            **self.judge_totals(), "unpriced_models": self.unpriced_models,
            "metrics": {m.name: {"n": m.n, "mean": m.mean, "ci_low": m.ci and m.ci.low, "ci_high": m.ci and m.ci.high,
                                 "cutoff": m.cutoff, "passed": m.passed} for m in self.metrics},
            "failure": self.failure, "passed": self.passed, "comparison_url": self.comparison_url,
            "loop_blocked": self.blocking and {"seconds": round(self.blocking.seconds, 3), "by": self.blocking.where},
            "resumed": self.resumed, "nothing_to_resume": self.nothing_to_resume, "stopped": self.stopped,
        }

    def format(self) -> str:
        """A human-readable summary."""
        if self.nothing_to_resume:
            why = ("was stopped once its precision targets were reached" if "stopped" in self.run.config
                   else "is already complete")
            return f"run {self.run.id} {why}: nothing to resume"
        lines = [f"Run {self.run.id} of {self.run.evaluation.name} · variant {self.run.variant_name} · {self.status}",
                 f"  {len(self.items)} of {self.datapoints} datapoints in {self.elapsed_s:.2f} s "
                 f"({self.throughput:.1f}/s), {self.errors} error(s)"]
        if self.resumed is not None:
            lines.append(f"  resumed: {self.resumed} datapoint(s) were recorded before; the metrics cover the "
                         "whole run")
        if self.stopped:
            widths = ", ".join(f"{name} ±{m['half_width']:.4f} ≤ {m['target']:g}"
                               for name, m in self.stopped["metrics"].items())
            lines.append(f"  stopped early, {self.stopped['reason']} ({widths}): "
                         f"{self.stopped['datapoints_saved']} datapoint(s) saved")
        p = self.latency_percentiles()
        if p["p50"] is not None:
            lines.append(f"  latency p50 {p['p50']:.0f} ms · p95 {p['p95']:.0f} ms · p99 {p['p99']:.0f} ms")
        totals, judge = self.totals(), self.judge_totals()
        if totals["input_tokens"] is not None or totals["cost"] is not None:
            lines.append(f"  task tokens {totals['input_tokens'] or 0} in / {totals['output_tokens'] or 0} out"
                         + (f" · task cost ${totals['cost']:.4f}" if totals["cost"] is not None else ""))
        if judge["judge_input_tokens"] is not None or judge["judge_cost"] is not None:
            lines.append(f"  judge tokens {judge['judge_input_tokens'] or 0} in / "
                         f"{judge['judge_output_tokens'] or 0} out"
                         + (f" · judge cost ${judge['judge_cost']:.4f}" if judge["judge_cost"] is not None else ""))
        if self.unpriced_models:
            lines.append(f"  cost unknown for {', '.join(self.unpriced_models)}: no price in "
                         "EVALCOMPARE_MODEL_PRICES (left empty, not counted as 0)")
        for metric in self.metrics:
            mean = "–" if metric.mean is None else f"{metric.mean:.4f}"
            ci = f" [{metric.ci.low:.4f}, {metric.ci.high:.4f}]" if metric.ci else ""
            verdict = {True: "  ✓ meets", False: "  ✗ misses", None: ""}[metric.passed]
            cutoff = f"{verdict} cutoff {metric.cutoff:g} ({'≥' if metric.optimize == 'max' else '≤'})" \
                if metric.cutoff is not None else ""
            lines.append(f"  {metric.name}: mean {mean}{ci} n={metric.n}{cutoff}")
        if self.failure:
            lines.append(f"  {self.failure}")
        if self.blocking is not None:
            lines.append(f"  warning: {self.blocking}")
        lines.append(f"  compare: {self.comparison_url}")
        return "\n".join(lines)


BLOCKING_WARN_S = 0.1  # a stall of the event loop longer than this is reported
_BEAT_S = 0.02


@dataclass
class Blocking:
    """The worst time the run's event loop could not run anything else, and what held it."""

    seconds: float
    where: str  # "the task" or "scorer 'name'"

    def __str__(self):
        return (f"the event loop was blocked for {self.seconds:.2f} s by {self.where}: every other datapoint "
                "waited. Use await-able calls in async code (asyncio.sleep, an async client), or a plain "
                "function, which runs in a thread.")


class _LoopWatch:
    """Measures stalls of the engine's event loop and names what caused the worst one.

    A coroutine beats every 20 ms; a beat that comes late by more than BLOCKING_WARN_S was a stall.
    A watchdog thread looks at the loop while it stalls and reads, from the task that holds it, what
    that worker was doing (the task or a named scorer): the stalling code is still running then.
    The watch costs the loop one wake-up per beat.
    """

    def __init__(self, engine):
        self.engine = engine
        self.worst: Blocking | None = None
        self._suspect = None
        self._last_beat = time.monotonic()
        self._stop = threading.Event()

    async def beat(self):
        while True:
            before = time.monotonic()
            self._last_beat = before
            await asyncio.sleep(_BEAT_S)
            stalled = time.monotonic() - before - _BEAT_S
            # Only a stall that a task or scorer held counts: a loop merely waiting for the GIL while
            # threads compute (sync tasks, scorers moved off the loop) is not something to fix there.
            if stalled > BLOCKING_WARN_S and self._suspect and (self.worst is None or stalled > self.worst.seconds):
                self.worst = Blocking(stalled, self._suspect)
            self._suspect = None

    def watch(self, loop):
        while not self._stop.wait(_BEAT_S):
            if time.monotonic() - self._last_beat > BLOCKING_WARN_S + _BEAT_S and self._suspect is None:
                holder = asyncio.tasks._current_tasks.get(loop)  # read-only look from this thread
                doing = self.engine.activity.get(holder.get_name()) if holder is not None else None
                self._suspect = doing

    def stop(self):
        self._stop.set()


class _Context:
    """What scorers share during a run: a thread pool and, made on first use, an HTTP client.

    Creating an httpx client loads the TLS trust store (tens of milliseconds), so a run whose
    evaluators make no HTTP calls never pays for one.
    """

    def __init__(self, executor):
        self.executor = executor
        self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0))
        return self._http

    async def aclose(self):
        if self._http is not None:
            await self._http.aclose()


_ENGINE_NUMBERS = itertools.count()
_runner_lock = threading.Lock()
_runner: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None


def runner_loop() -> asyncio.AbstractEventLoop:
    """evalcompare's event loop, on which every run's tasks and scorers run: one per process, in a
    daemon thread, started on first use and kept for the life of the process.

    This is the loop policy. Whether a run was started by evaluate() in a script, in a notebook cell
    or inside asyncio.run(), or awaited with aevaluate(), its tasks run here, never on the caller's
    loop. So an event-loop-bound object a task keeps between runs (an httpx.AsyncClient made at
    module level, a connection pool) keeps working from one run to the next, and runs started at the
    same time share the loop like any asyncio program.
    """
    global _runner
    with _runner_lock:
        if _runner is None or not _runner[1].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="evalcompare-loop", daemon=True)
            thread.start()
            _runner = (loop, thread)
        return _runner[0]


def _retire_runner_loop(loop):
    """A run's tasks did not stop when cancelled (async code that blocks, or that ignores
    cancellation), so `loop` may be held for good: later runs get a new loop, and this one's thread
    ends whenever the loop is free again."""
    global _runner
    with _runner_lock:
        if _runner is not None and _runner[0] is loop:
            _runner = None
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(loop.stop)


def _forget_runner_loop():  # in a forked child the loop's thread does not exist
    global _runner, _runner_lock
    _runner, _runner_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_runner_loop)


class _Engine:
    """The event-loop side: runs tasks and scorers, puts ItemResults on `results`."""

    def __init__(self, task, scorers, concurrency, timeout, pinned, results, allow_none=False):
        self.task, self.scorers, self.concurrency, self.timeout = task, scorers, concurrency, timeout
        self.allow_none = allow_none
        # A callable object with an `async def __call__` (e.g. OpenAIModelTask) is async too.
        self.task_is_async = inspect.iscoroutinefunction(task) or inspect.iscoroutinefunction(type(task).__call__)
        self.pinned = pinned
        self.results = results
        self.loop = None
        self.main = None
        self.cancel_requested = False
        self.cancelled = False
        self.crash = None
        self.ready = threading.Event()
        self.done = threading.Event()
        self.activity: dict[str, str] = {}  # worker task name -> "the task" / "scorer 'x'" it is running
        self.watch = _LoopWatch(self)
        self.stop_when = None  # called on the loop with each finished item; True: start no more items
        self.stopping = False
        self.started = 0  # items handed to workers

    def start(self, items):
        """Run the items on the runner loop; `done` is set when they are finished or cancelled."""
        self.loop = runner_loop()
        asyncio.run_coroutine_threadsafe(self._run(items), self.loop)

    async def _run(self, items):
        try:
            await self._main(items)
        except BaseException as error:  # reported to the recording thread, which records what finished
            self.crash = error
        finally:
            self.ready.set()
            self.done.set()

    def cancel(self):
        """Cancel from another thread: in-flight items are dropped, finished ones are kept.
        Never raises: the loop may already have closed, with nothing left to cancel."""
        self.cancel_requested = True
        self.ready.wait(ABANDON_AFTER_S)
        if self.loop is not None and self.main is not None:
            with contextlib.suppress(RuntimeError):  # "Event loop is closed"
                self.loop.call_soon_threadsafe(self.main.cancel)

    async def _main(self, items):
        self.loop = asyncio.get_running_loop()
        self.main = asyncio.current_task()
        self.ready.set()
        iterator = self._until_stopped(items)
        executor = _DaemonExecutor(self.concurrency, "evaluate")
        try:
            context = _Context(executor)
            # Names unique to this engine: the loop watch reads a stalling worker's activity by name,
            # and runs started concurrently share the runner loop.
            prefix = f"evaluate-{next(_ENGINE_NUMBERS)}-worker"
            workers = [asyncio.create_task(self._worker(iterator, context), name=f"{prefix}-{n}")
                       for n in range(self.concurrency)]
            beat = asyncio.create_task(self.watch.beat())
            watchdog = threading.Thread(target=self.watch.watch, args=(self.loop,), name="evaluate-watch", daemon=True)
            watchdog.start()
            try:
                await asyncio.gather(*workers)
            except asyncio.CancelledError:
                self.cancelled = True
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
            finally:
                beat.cancel()
                self.watch.stop()
                await context.aclose()
                closer = getattr(self.task, "aclose", None)
                if closer is not None:
                    await closer()
        finally:
            executor.shutdown(cancel_futures=True)

    def _until_stopped(self, items):
        """The items, until stop_when says stop: in-flight items finish, no new one starts."""
        for item in items:
            if self.stopping:
                return
            self.started += 1
            yield item

    async def _worker(self, iterator, context):
        for datapoint_id, input, reference in iterator:
            item = await self._one(datapoint_id, input, reference, context)
            # deque.append is atomic and wakes nobody: the calling thread drains it POLL_S apart,
            # so finished items cost the loop no GIL hand-off.
            self.results.append(item)
            # Decided here, on the loop, before this worker pulls its next item: no item starts
            # after the target was reached.
            if self.stop_when is not None and not self.stopping and self.stop_when(item):
                self.stopping = True

    async def _call_task(self, input, context):
        if self.task_is_async:
            return await self.task(input)
        result = await self.loop.run_in_executor(context.executor, call_in_thread, self.task, input)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _within_timeout(self, awaitable):
        """Await with the run's timeout. Our deadline raises _DeadlineExpired, so that a TimeoutError
        raised by the task or scorer itself stays that datapoint's own error, with its own message."""
        if self.timeout is None:  # the common case skips the timeout's bookkeeping on the hot path
            return await awaitable
        scope = asyncio.timeout(self.timeout)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise _DeadlineExpired from None
            raise

    async def _one(self, datapoint_id, input, reference, context):
        started = time.perf_counter()
        item = ItemResult(datapoint_id, None, None, None, None)
        worker = asyncio.current_task().get_name()
        self.activity[worker] = "the task"
        try:
            result = await self._within_timeout(self._call_task(input, context))
            item.latency_ms = (time.perf_counter() - started) * 1000
            if isinstance(result, TaskResult):
                item.output, item.input_tokens, item.output_tokens = result.output, result.input_tokens, \
                    result.output_tokens
                item.cost, item.tags = result.cost, dict(result.tags or {})
            else:
                item.output = result
            if item.output is None and not self.allow_none:
                raise _Unstorable("the task returned None (allow it with allow_none=True or --allow-none)")
            # Scorers see the output exactly as it is recorded.
            item.output, replaced = storable_json(item.output, "an output")
            item.tags, replaced_in_tags = storable_json(item.tags, "tags")
            if replaced or replaced_in_tags:
                item.tags[REPLACED_TAG] = str(replaced + replaced_in_tags)
        except asyncio.CancelledError:
            if not self.cancel_requested:  # the task itself raised CancelledError: cancel the run
                self.cancel_requested = True
                self.main.cancel()
            raise
        except _DeadlineExpired:
            item.latency_ms = (time.perf_counter() - started) * 1000
            item.error = f"TimeoutError: the task did not finish within {self.timeout:g} s"
            item.output, item.tags = None, {}
        except _Unstorable as error:
            item.error = str(error)
            item.output, item.tags = None, {}
        except (Exception, SystemExit) as error:  # whatever the task raised, TimeoutError included
            item.latency_ms = item.latency_ms or (time.perf_counter() - started) * 1000
            item.error = _describe(error, "task")
            item.output, item.tags = None, {}
        item.inference_id = uuid7()
        if item.error is None:
            problems = []
            for scorer in self.scorers:
                self.activity[worker] = f"scorer '{scorer.name}'"
                try:
                    score = await self._within_timeout(scorer.score(item.output, reference, input, context))
                    value, reason = score
                    item.scores[scorer.name] = Score(value, storable_text(reason)[0], score.usage)
                except asyncio.CancelledError:
                    raise
                except _DeadlineExpired:
                    problems.append(f"scorer '{scorer.name}' did not finish within {self.timeout:g} s")
                except (Exception, SystemExit) as error:
                    problems.append(_describe(error, f"scorer '{scorer.name}'"))
            if problems:
                item.error = "; ".join(problems)
        if item.error is not None:
            item.error = storable_text(item.error)[0]
        return item


class _DaemonExecutor(Executor):
    """A thread pool that never holds the process up. ThreadPoolExecutor joins its threads when
    shut down and again at interpreter exit, so one hung sync task would keep a cancelled run's
    process alive forever; these threads are daemons, and a hung call is abandoned."""

    def __init__(self, max_workers: int, name: str):
        self._max_workers, self._name = max_workers, name
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        self._work.put((future, fn, args, kwargs))
        if len(self._threads) < self._max_workers:
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return future

    def _serve(self):
        while (work := self._work.get()) is not None:
            future, fn, args, kwargs = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # the caller's future carries it, as ThreadPoolExecutor's would
                future.set_exception(error)
            else:
                future.set_result(result)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Stop the threads once their current call returns; never waits for it (`wait` is ignored)."""
        while cancel_futures:
            try:
                work = self._work.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work[0].cancel()
        for _ in self._threads:
            self._work.put(None)


class _Interrupts:
    """SIGINT and SIGTERM as cooperative cancellation, for the recording thread to poll.

    Installed only from the main thread (the only one Python delivers signals to). The first signal
    sets `signal` on every run in progress; nothing is raised, so no KeyboardInterrupt lands inside a
    COPY. A second one means the person asked twice: from a command or script (`exit_on_second`) the
    process exits at once (128 + the signal) without a traceback; in a notebook or under a running
    event loop, where exiting would kill the kernel, it raises KeyboardInterrupt in the waiting caller
    instead and the run finishes cancelling in the background. `cancel()` is the same request without
    a signal: aevaluate()'s caller was cancelled.

    Handlers are shared while runs overlap (several aevaluate() calls gathered in one loop): the first
    run to start installs them, the last to end puts the previous ones back.
    """

    _active: list["_Interrupts"] = []  # touched only in the main thread, like the handlers themselves
    _previous: dict[int, Any] = {}

    def __init__(self, exit_on_second: bool = True):
        self.signal: int | None = None
        self.cancelled = False
        self.exit_on_second = exit_on_second
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.signal is not None or self.cancelled

    def cancel(self):
        self.cancelled = True

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        if not _Interrupts._active:
            for number in (signal.SIGINT, signal.SIGTERM):
                _Interrupts._previous[number] = signal.signal(number, _Interrupts._route)
        _Interrupts._active.append(self)
        self._installed = True

    def restore(self):
        if not self._installed:
            return
        self._installed = False
        _Interrupts._active.remove(self)
        if not _Interrupts._active:
            for number, previous in _Interrupts._previous.items():
                signal.signal(number, signal.SIG_DFL if previous is None else previous)  # None: set outside Python
            _Interrupts._previous = {}

    @staticmethod
    def _route(number, frame):
        active = list(_Interrupts._active)
        name = signal.Signals(number).name
        if any(interrupts.signal is None for interrupts in active):
            for interrupts in active:
                interrupts.signal = interrupts.signal or number
            again = ("interrupt again to exit at once" if all(i.exit_on_second for i in active)
                     else "interrupt again to stop waiting")
            os.write(2, f"\nInterrupted ({name}): cancelling, writing what finished; {again}.\n".encode())
            return
        if number == signal.SIGTERM or all(interrupts.exit_on_second for interrupts in active):
            os.write(2, f"\nInterrupted again ({name}): exiting at once, without writing what is left; the "
                        "run will show as interrupted.\n".encode())
            os._exit(128 + number)
        os.write(2, f"\nInterrupted again ({name}): no longer waiting; the run finishes cancelling in the "
                    "background.\n".encode())
        raise KeyboardInterrupt


class _DeadlineExpired(Exception):
    """The run's timeout expired (unlike a TimeoutError that the task or scorer raised)."""


class _Unstorable(Exception):
    """The task's result cannot be recorded; the message is the datapoint's error."""


def _describe(error: BaseException, where: str) -> str:
    if isinstance(error, RaisedInThread):
        error = error.error
    try:
        message = str(error) or "(no message)"
    except Exception:  # a broken __str__ must not end the run
        message = "(the message could not be read)"
    return f"{type(error).__name__} in {where}: {message}"


# PostgreSQL text and jsonb cannot hold NUL, and UTF-8 cannot hold an unpaired surrogate.
_UNSTORABLE_CHARACTERS = re.compile("[\\x00\\ud800-\\udfff]")


def storable_text(text: str) -> tuple[str, int]:
    """`text` with NUL characters and unpaired surrogates replaced by U+FFFD, and how many were."""
    if (text.isascii() and "\x00" not in text) or not _UNSTORABLE_CHARACTERS.search(text):
        return text, 0
    # A surrogate pair written as two code points is one real character: UTF-16 joins it and turns
    # only the unpaired ones into U+FFFD.
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    replaced = joined.count("\ufffd") - text.count("\ufffd") + text.count("\x00")
    return joined.replace("\x00", "\ufffd"), replaced


class _NotJSON(Exception):
    def __init__(self, problem):
        super().__init__(problem)
        self.problem, self.path = problem, []


def storable_json(value, what: str):
    """(`value` as PostgreSQL can store it as JSON, how many characters were replaced).

    Strings, keys included, go through storable_text. Raises _Unstorable naming the place for what
    JSON has no form for: NaN and infinities, objects that are not JSON, integers too long to write.
    """
    if isinstance(value, str):  # the common cases, without a walk and a trial encoding
        return storable_text(value)
    if isinstance(value, dict | list) and not value:
        return value, 0
    replaced = 0

    def clean(value):
        nonlocal replaced
        if isinstance(value, str):
            text, count = storable_text(value)
            replaced += count
            return text
        if isinstance(value, float) and not math.isfinite(value):
            raise _NotJSON(f"{value!r} (JSON has no NaN or infinity)")
        if isinstance(value, dict):
            cleaned = {}
            for key, item in value.items():
                try:
                    cleaned[clean(key) if isinstance(key, str) else key] = clean(item)
                except _NotJSON as error:
                    error.path.insert(0, f"[{storable_text(key)[0] if isinstance(key, str) else key!r}]")
                    raise
            return cleaned
        if isinstance(value, list | tuple):
            cleaned = []
            for index, item in enumerate(value):
                try:
                    cleaned.append(clean(item))
                except _NotJSON as error:
                    error.path.insert(0, f"[{index}]")
                    raise
            return cleaned
        return value

    try:
        cleaned = clean(value)
        json.dumps(cleaned, allow_nan=False)
    except _NotJSON as error:
        where = f" at {''.join(error.path)}" if error.path else ""
        raise _Unstorable(f"the task returned {what} that cannot be stored as JSON: {error.problem}{where}") \
            from None
    except (TypeError, ValueError, RecursionError) as error:
        raise _Unstorable(f"the task returned {what} that cannot be stored as JSON: "
                          f"{type(error).__name__}: {storable_text(str(error))[0]}") from None
    return cleaned, replaced


class _Recorder:
    """The calling thread's side: batches ItemResults into inferences and feedback."""

    def __init__(self, run, variant, pinned, inputs, evaluation):
        self.run, self.variant, self.pinned, self.inputs = run, variant, pinned, inputs
        self.base_tags = {
            "tensorzero::evaluation_run_id": str(run.id),
            "tensorzero::evaluation_name": evaluation.name,
            "tensorzero::dataset_name": evaluation.dataset.name,
        }
        if pinned:
            self.base_tags[PINNED_TAG] = "true"
        self.pending: list[ItemResult] = []
        self.recorded = 0  # items whose batch has committed
        self.last_flush = self.last_beat = time.monotonic()

    def add(self, item: ItemResult):
        self.pending.append(item)
        if len(self.pending) >= BATCH_SIZE:
            self.flush()

    def flush_if_due(self):
        if self.pending and time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def beat_if_due(self):
        """Refresh the run's heartbeat_at, by which a run left `running` by a killed process shows as
        interrupted."""
        if time.monotonic() - self.last_beat >= HEARTBEAT_S:
            self.last_beat = time.monotonic()
            EvaluationRun.objects.filter(id=self.run.id).update(heartbeat_at=timezone.now())

    def flush(self):
        """Write the pending items in one transaction. They leave memory only once it has committed:
        a batch that fails stays pending, to be written again or reported lost."""
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        batch = self.pending
        inferences, feedback = [], []
        for item in batch:
            inferences.append((
                item.inference_id, self.run.id, item.datapoint_id, self.inputs[item.datapoint_id], item.output,
                self.variant, self.pinned, item.latency_ms, item.input_tokens, item.output_tokens,
                Decimal(str(item.cost)) if item.cost is not None else None, item.error,
                {**self.base_tags, "tensorzero::datapoint_id": str(item.datapoint_id), **item.tags},
            ))
            feedback.extend((uuid7(), item.inference_id, name, score[0], Feedback.Source.EVALUATOR, score[1][:10_000],
                             getattr(score, "usage", None) or {})  # a judge's tokens and cost
                            for name, score in item.scores.items())
        with transaction.atomic():
            copy_rows(Inference, INFERENCE_FIELDS, inferences)
            copy_rows(Feedback, FEEDBACK_FIELDS, feedback)
        self.pending = []
        self.recorded += len(batch)


INFERENCE_FIELDS = ["id", "run_id", "datapoint_id", "input", "output", "variant_name", "variant_pinned", "latency_ms",
                    "input_tokens", "output_tokens", "cost", "error", "tags"]
FEEDBACK_FIELDS = ["id", "inference_id", "metric", "value", "source", "reason", "tags"]


def _resolve_cutoffs(evaluators: list[Evaluator], cutoffs: dict | None) -> dict[str, float | None]:
    resolved = {e.name: e.cutoff for e in evaluators}
    for name, value in (cutoffs or {}).items():
        if name not in resolved:
            known = ", ".join(resolved) or "none"
            raise ValueError(f"cutoff for unknown metric '{name}'; this evaluation has: {known}")
        try:
            resolved[name] = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"cutoff for '{name}' must be a number, not {value!r}") from None
        if not math.isfinite(resolved[name]):
            raise ValueError(f"cutoff for '{name}' must be a finite number, not {value!r}")
    return resolved


MIN_SCORED_FOR_PRECISION = 20  # no stop on fewer scores per metric: small-n intervals are unreliable


def _resolve_precision(evaluators: list[Evaluator], precision: dict | None) -> dict[str, float]:
    """The precision targets (metric -> 95% CI half-width) after validation; raises ValueError."""
    if precision is None:
        return {}
    if not isinstance(precision, dict) or not precision:
        raise ValueError(f"precision must map metric names to CI half-widths, e.g. {{'exact': 0.03}}, "
                         f"not {precision!r}"[:300])
    by_name = {e.name: e for e in evaluators}
    targets = {}
    for name, value in precision.items():
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise ValueError(f"precision for unknown metric {str(name)[:100]!r}; this evaluation has: {known}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"precision for '{name}' must be a number (a 95% CI half-width), not {value!r}"[:300])
        target = float(value)
        if not math.isfinite(target) or target <= 0:
            raise ValueError(f"precision for '{name}' must be a positive finite half-width, not {value!r}")
        low, high = by_name[name].min_value, by_name[name].max_value
        if low is not None and high is not None and target >= (high - low) / 2:
            raise ValueError(f"precision for '{name}' must be below {(high - low) / 2:g}: its values lie in "
                             f"[{low:g}, {high:g}], so a half-width of {target:g} would be reached at once")
        targets[name] = target
    return targets


class _PrecisionStop:
    """Decides, item by item on the engine's loop, when every targeted metric's 95% CI is narrow
    enough: the intervals of the comparison page (stats.metric_interval), on running sums."""

    def __init__(self, evaluators: list[Evaluator], targets: dict[str, float]):
        self.targets = targets
        self.boolean = {e.name: e.is_boolean for e in evaluators if e.name in targets}
        self.moments = {name: [0, 0.0, 0.0] for name in targets}  # n, mean, sum of squared deviations
        self.scored = 0  # datapoints with every targeted metric scored

    def half_width(self, name: str) -> float | None:
        n, mean, m2 = self.moments[name]
        stddev = math.sqrt(m2 / (n - 1)) if n > 1 else None
        interval = metric_interval(self.boolean[name], mean if n else None, stddev, n)
        return None if interval is None else (interval.high - interval.low) / 2

    def __call__(self, item: ItemResult) -> bool:
        if all(name in item.scores for name in self.targets):
            self.scored += 1
        for name in self.targets:
            if name in item.scores:  # Welford: one pass, stable
                moments = self.moments[name]
                value = item.scores[name][0]
                moments[0] += 1
                delta = value - moments[1]
                moments[1] += delta / moments[0]
                moments[2] += delta * (value - moments[1])
        for name, target in self.targets.items():
            if self.moments[name][0] < MIN_SCORED_FOR_PRECISION:
                return False
            width = self.half_width(name)
            if width is None or width > target:
                return False
        return True


def find_run(resume) -> EvaluationRun:
    """The run `resume` names (a run, its UUID or its id as text); raises ValueError."""
    if isinstance(resume, EvaluationRun):
        run_id = resume.id
    else:
        run_id = parse_uuid(resume) if isinstance(resume, str | uuid.UUID) else None
        if run_id is None:
            raise ValueError(f"{str(resume)[:100]!r} is not a run id (a UUID like 0190f4c2-…)")
    run = EvaluationRun.objects.select_related("evaluation").filter(id=run_id).first()
    if run is None:
        raise ValueError(f"there is no run {run_id}")
    return run


def _check_resume(run, evaluation, variant, pinned, config, tags, datapoint_ids, precision, seed) -> bool:
    """Refuse what contradicts resuming `run`; the run's pinned flag (from its inferences) or `pinned`."""
    if run.evaluation_id != evaluation.id:
        raise ValueError(f"run {run.id} is a run of '{run.evaluation.name}', not of '{evaluation.name}'")
    if variant and variant != run.variant_name:
        raise ValueError(f"run {run.id} is of variant '{run.variant_name}', not '{variant}': a resume keeps "
                         "the run's own variant")
    recorded = run.inferences.values_list("variant_pinned", flat=True).first()
    if pinned is not None and recorded is not None and pinned != recorded:
        raise ValueError(f"run {run.id} recorded its variant as {'pinned' if recorded else 'sampled'}; "
                         "a resume keeps it so")
    for what, given, own in (("config", config, run.config), ("tags", tags, run.tags)):
        if given is not None and given != own:
            raise ValueError(f"a resume keeps the run's own {what} ({json.dumps(own)[:200]}); "
                             f"{json.dumps(given, default=str)[:200]} differs")
    if datapoint_ids is not None:
        raise ValueError("datapoint_ids cannot be combined with resume: a resume runs the datapoints of the "
                         "run's window it has no inference for")
    if precision is not None or seed is not None:
        raise ValueError("precision and seed cannot be combined with resume")
    if recorded is not None:
        return recorded
    return True if pinned is None else pinned


def _recorded_items(run) -> list[ItemResult]:
    """What a run has recorded so far, as ItemResults with each metric's winning feedback."""
    items = {inference.id: ItemResult(inference.datapoint_id, inference.id, inference.output, inference.error,
                                      inference.latency_ms, inference.input_tokens, inference.output_tokens,
                                      float(inference.cost) if inference.cost is not None else None, inference.tags)
             for inference in Inference.objects.filter(run=run).order_by("id")}
    for inference_id, metric, value, reason in (Feedback.objects.filter(inference__run=run).winning()
                                                .values_list("inference_id", "metric", "value", "reason")):
        items[inference_id].scores[metric] = (value, reason)
    return list(items.values())


def _record_stop(run, engine, evaluators, targets, items, selected) -> dict:
    """Record in run.config["stopped"] why the run stopped early and what it saved; returns it."""
    metrics = {m.name: {"half_width": (m.ci.high - m.ci.low) / 2, "n": m.n, "target": targets[m.name]}
               for m in _summaries(evaluators, items, {e.name: None for e in evaluators})
               if m.name in targets and m.ci is not None}
    stopped = {"reason": "precision reached", "metrics": metrics,
               "datapoints_run": len(items),
               "datapoints_scored": sum(1 for item in items if all(name in item.scores for name in targets)),
               "datapoints_saved": selected - engine.started}
    run.config = {**run.config, "stopped": stopped}
    run.save(update_fields=["config"])
    return stopped


def _task_problem(task) -> str | None:
    """Why `task` cannot be a task (None when it can): the run would fail every datapoint otherwise."""
    shown = f"{type(task).__name__} {task!r}"[:200]
    expected = ("expected a function taking a datapoint's input and returning its output: a plain function, "
                "an async def function, or a callable object")
    if not callable(task):
        return f"task must be callable, not {shown}; {expected}"
    if inspect.isclass(task):
        return f"task is the class {task.__qualname__}; pass an instance of it (or a function); {expected}"
    for what, test in (("an async generator function", inspect.isasyncgenfunction),
                       ("a generator function", inspect.isgeneratorfunction)):
        if test(task) or test(type(task).__call__):
            return f"task is {what} ({getattr(task, '__qualname__', shown)}), which yields instead of returning; " \
                   f"{expected}"
    return None


def _summaries(evaluators, items, cutoffs) -> list[MetricResult]:
    metrics = []
    for evaluator in evaluators:
        values = [item.scores[evaluator.name][0] for item in items if evaluator.name in item.scores]
        n = len(values)
        mean = sum(values) / n if n else None
        ci = metric_interval(evaluator.is_boolean, mean, sample_stddev(values), n)
        metrics.append(MetricResult(evaluator.name, n, mean, ci, cutoffs[evaluator.name], evaluator.optimize,
                                    evaluator.is_boolean))
    return metrics


def _unpriced_models(task, items: list[ItemResult]) -> list[str]:
    """Models the run called (task or judges) that have no price, so their cost is unknown."""
    models = set(getattr(task, "unpriced_models", ()))  # OpenAIModelTask keeps its own
    for item in items:
        for score in item.scores.values():
            model = (getattr(score, "usage", None) or {}).get("judge_model")
            if model and price_for(settings.MODEL_PRICES, model) is None:
                models.add(model)
    return sorted(models)


def comparison_url(run: EvaluationRun) -> str:
    """The comparison page of this run against the previous run of its evaluation (alone if first)."""
    previous = (EvaluationRun.objects.for_evaluation(run.evaluation).filter(id__lt=run.id).recent()
                .values_list("id", flat=True).first())
    ids = f"{previous},{run.id}" if previous else str(run.id)
    return f"{settings.PUBLIC_URL}/evaluations/{run.evaluation.name}/?run_ids={ids}"


def _evaluate(
    interrupts: _Interrupts | None,
    evaluation: Evaluation | str,
    variant: str | None,
    task,
    *,
    concurrency: int = 8,
    pinned: bool | None = None,
    datapoint_ids=None,
    max_datapoints: int | None = None,
    config: dict | None = None,
    tags: dict | None = None,
    timeout: float | None = None,
    progress: bool = True,
    cutoffs: dict | None = None,
    scorers: dict | None = None,
    on_item=None,
    allow_none: bool = False,
    rpm: float | None = None,
    resume=None,
    precision: dict | None = None,
    seed: int | None = None,
    should_stop=None,
) -> RunResult:
    """Run `task` over the evaluation's dataset as it is now, score each output, record the run.

    `task(input)` may be a plain function, an `async def` function or a function returning an
    awaitable; it returns the output or a TaskResult. `scorers` maps custom evaluator names to
    callables `(output, reference, input) -> bool | float | (value, reason)`, sync or async.
    `cutoffs` overrides evaluator cutoffs. `on_item(ItemResult)` is called in this thread as each
    datapoint finishes. A None output fails its datapoint unless `allow_none`. `rpm` limits the run's
    OpenAI-compatible requests (LLM judges and an OpenAIModelTask, retries included) to that many a
    minute, evenly spaced; plain-function tasks are not limited. Raises ValueError for bad arguments
    (generators, classes and other non-tasks included) before anything is recorded.

    `pinned` defaults to True. `resume` (a run or its id) continues that run instead of starting one:
    the datapoints of the run's own window it has no inference for, with its variant, pinned flag and
    config (given ones must agree); a completed run with nothing missing is left as it is.
    `precision` ({metric: 95% CI half-width}) takes the datapoints in a random order seeded by `seed`
    (drawn when None; both recorded in the run's config) and starts no more once every named metric's
    interval is that narrow over at least 20 scores; the stop is recorded in `run.config["stopped"]`.
    `should_stop()` (e.g. "was Stop pressed in the portal?") is called by the recording thread every
    STOP_POLL_S while the run runs; True cancels the run as a signal would (what finished is kept).
    """
    started = time.perf_counter()  # elapsed_s covers the whole call: setup, tasks, scoring, recording
    if isinstance(evaluation, str):
        found = Evaluation.objects.select_related("dataset", "function").filter(name=evaluation).first()
        if found is None:
            raise ValueError(f"there is no evaluation named '{evaluation}'")
        evaluation = found
    problem = _task_problem(task)
    if problem:
        raise ValueError(problem)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")
    if not variant and resume is None:
        raise ValueError("a variant name is required")
    rate_limiter = RateLimiter(rpm) if rpm is not None else None  # ValueError unless positive
    if hasattr(task, "rate_limiter"):  # an OpenAIModelTask: its requests share the run's limit
        task.rate_limiter = rate_limiter
    evaluators = list(evaluation.evaluators.order_by("id"))
    run_scorers = [Scorer(e, (scorers or {}).get(e.name), rate_limiter) for e in evaluators]
    unknown = set(scorers or {}) - {e.name for e in evaluators}
    if unknown:
        raise ValueError(f"scorers given for unknown evaluators: {', '.join(sorted(unknown))}")
    resolved_cutoffs = _resolve_cutoffs(evaluators, cutoffs)
    targets = _resolve_precision(evaluators, precision)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, not {seed!r}"[:200])
    if seed is not None and not targets and resume is None:
        raise ValueError("a seed only applies with precision (the order is newest first otherwise)")

    previous = None
    if resume is not None:
        run = find_run(resume)
        pinned = _check_resume(run, evaluation, variant, pinned, config, tags, datapoint_ids, precision, seed)
        variant = run.variant_name
        missing = ~Exists(Inference.objects.filter(run=run.id, datapoint=OuterRef("id")))
        datapoints = run.window_datapoints().filter(missing).newest_first()
        if run.config.get("precision"):  # a precision run goes on in its own seeded order, to its own targets
            targets, seed = _resolve_precision(evaluators, run.config["precision"]), run.config.get("seed")
    else:
        pinned = True if pinned is None else pinned
        if targets:
            seed = random.SystemRandom().randrange(2**63) if seed is None else seed
            config = {**(config or {}), "precision": targets, "seed": seed}
        run = EvaluationRun.new(evaluation, variant, config=config, tags=tags)
        datapoints = evaluation.datapoints().in_window(run.started_at).newest_first()
    if datapoint_ids is not None:
        wanted = [str(i) for i in datapoint_ids]
        datapoints = datapoints.filter(id__in=wanted)
        found_ids = {str(i) for i in datapoints.values_list("id", flat=True)}
        absent = [i for i in wanted if i not in found_ids]
        if absent:
            raise ValueError(f"not current datapoints of '{evaluation.name}': {', '.join(absent)}")
    if max_datapoints is not None and max_datapoints < 1:
        raise ValueError("max_datapoints must be at least 1")

    def select_work():
        if targets:  # a seeded random sample, newest first before shuffling so the seed reproduces it
            window = datapoints if resume is None else run.window_datapoints().newest_first()
            work = list(window.values_list("id", "input", "reference_output"))
            random.Random(seed).shuffle(work)
            if resume is not None:  # the order the run started in, without what it has recorded
                left = set(datapoints.values_list("id", flat=True))
                work = [entry for entry in work if entry[0] in left]
            return work[:max_datapoints]
        chosen = datapoints[:max_datapoints] if max_datapoints is not None else datapoints
        return list(chosen.values_list("id", "input", "reference_output"))  # tuples: no model instances

    if resume is None:
        work = select_work()  # the run is saved below, once no signal can leave it `running`
    else:
        with transaction.atomic():  # the row lock keeps two resumes of one run from running the same datapoints
            run = EvaluationRun.objects.select_for_update().select_related("evaluation").get(id=run.id)
            if run.status == EvaluationRun.Status.RUNNING and not run.interrupted:
                raise ValueError(f"run {run.id} is still running (its process beat "
                                 f"{(timezone.now() - (run.heartbeat_at or run.started_at)).total_seconds():.0f} s "
                                 "ago); only a cancelled, failed, interrupted or completed run can be resumed")
            work = select_work()
            previous = _recorded_items(run)
            done = run.status == EvaluationRun.Status.COMPLETED and (not work or "stopped" in run.config)
            if done:  # every datapoint recorded, or all that its precision targets needed
                return RunResult(run, run.status, 0, [], _summaries(evaluators, previous, resolved_cutoffs),
                                 time.perf_counter() - started, comparison_url(run), resumed=len(previous),
                                 nothing_to_resume=True)
            run.status = EvaluationRun.Status.RUNNING
            fields = ["status"]
            if not previous:  # nothing scored yet (a launched run's first start): today's evaluators score it
                run.evaluator_snapshot = evaluator_snapshot(evaluation)
                fields.append("evaluator_snapshot")
            run.save(update_fields=fields)

    inputs = {datapoint_id: input for datapoint_id, input, _ in work}
    results: deque[ItemResult] = deque()
    engine = _Engine(task, run_scorers, concurrency, timeout, pinned, results, allow_none)
    if targets:
        engine.stop_when = _PrecisionStop(evaluators, targets)
        for item in previous or ():  # a resumed precision run counts what it scored before
            engine.stopping = engine.stop_when(item) or engine.stopping
    recorder = _Recorder(run, variant, pinned, inputs, evaluation)
    items: list[ItemResult] = []
    bar = tqdm(total=len(work), file=sys.stderr, disable=not progress, unit="dp", dynamic_ncols=True,
               desc=f"{evaluation.name} · {variant}")
    sums = {s.name: [0.0, 0] for s in run_scorers}

    def take_finished(report=True):
        count = 0
        while results:
            item = results.popleft()
            items.append(item)
            recorder.add(item)
            for name, (value, _reason) in item.scores.items():
                sums[name][0] += value
                sums[name][1] += 1
            if on_item is not None and report:
                on_item(item)
            count += 1
        if count:
            bar.update(count)
            if sums:
                bar.set_postfix({k: f"{s / n:.3f}" for k, (s, n) in sums.items() if n}, refresh=False)

    def stop_engine():
        """Cancel the tasks; those that do not stop within ABANDON_AFTER_S (a hung sync task) are
        abandoned, never joined, and count as not run."""
        if not engine.done.is_set():
            engine.cancel()
            if not engine.done.wait(ABANDON_AFTER_S):
                _retire_runner_loop(engine.loop)

    own_interrupts = interrupts is None  # else evaluate() or aevaluate() installed them in the main thread
    if own_interrupts:
        interrupts = _Interrupts()
        interrupts.install()  # before the run exists: from here on no signal can leave it `running`
    try:
        run.heartbeat_at = run.running_since = timezone.now()
        if resume is None:
            run.save(force_insert=True)
        else:  # claimed as `running` above, under its row lock
            run.save(update_fields=["heartbeat_at", "running_since"])
    except BaseException:
        if own_interrupts:
            interrupts.restore()
        raise
    engine.start(work)
    failure = None
    next_stop_poll = time.monotonic()
    try:
        while not engine.done.wait(POLL_S) and not interrupts.requested:
            take_finished()
            recorder.flush_if_due()
            recorder.beat_if_due()
            if should_stop is not None and time.monotonic() >= next_stop_poll:
                next_stop_poll = time.monotonic() + STOP_POLL_S
                if should_stop():
                    interrupts.cancel()
        stop_engine()
        take_finished()
        if engine.crash is not None and not isinstance(engine.crash, asyncio.CancelledError):
            failure = f"the run failed: {engine.crash!r}"
    except BaseException as error:  # in this thread: on_item (a closed pipe), the database, ...
        failure = _describe(error, "evaluate()")
        stop_engine()
        with contextlib.suppress(Exception):  # keep what finished; on_item has failed, so it is not called
            take_finished(report=False)
        raise
    finally:
        try:
            bar.close()
            try:
                recorder.flush()
            except Exception as error:
                failure = failure or (f"{len(recorder.pending)} finished datapoint(s) could not be written: "
                                      f"{_describe(error, 'the final write')}")
            if failure is not None:
                status = EvaluationRun.Status.FAILED
                run.tags = {**run.tags, FAILURE_TAG: storable_text(failure)[0][:2000]}
            elif recorder.recorded == len(work) or (engine.stopping and not interrupts.requested
                                                    and not engine.cancelled):
                status = EvaluationRun.Status.COMPLETED  # every datapoint, or all that precision needed
            else:  # a signal, a task raising CancelledError, or tasks abandoned
                status = EvaluationRun.Status.CANCELLED
            run.status = status
            run.finished_at = run.heartbeat_at = timezone.now()
            run.save(update_fields=["status", "finished_at", "heartbeat_at", "tags"])
        finally:
            if own_interrupts:
                interrupts.restore()
    if engine.crash is not None and not isinstance(engine.crash, asyncio.CancelledError):
        raise RuntimeError(f"the run failed: {engine.crash!r}") from engine.crash
    stopped = None
    if engine.stopping and status == EvaluationRun.Status.COMPLETED:
        stopped = _record_stop(run, engine, evaluators, targets, (previous or []) + items, len(work))
    elapsed = time.perf_counter() - started
    summarised = items if previous is None else previous + items
    return RunResult(run, status, len(work), items, _summaries(evaluators, summarised, resolved_cutoffs), elapsed,
                     comparison_url(run), engine.watch.worst, _unpriced_models(task, items),
                     resumed=None if previous is None else len(previous), stopped=stopped,
                     signal=interrupts.signal if status == EvaluationRun.Status.CANCELLED else None)



def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _recording_thread(call, deliver):
    """Run `call` in a new thread, where Django's ORM may run (it refuses a thread with a running
    event loop), and hand its outcome to `deliver(result, error)`; the thread's database connection
    is closed when it ends."""
    def body():
        try:
            result = call()
        except BaseException as error:
            deliver(None, error)
        else:
            deliver(result, None)
        finally:
            connections.close_all()

    thread = threading.Thread(target=body, name="evaluate-recorder", daemon=True)
    thread.start()
    return thread


@functools.wraps(_evaluate)
def evaluate(*args, **kwargs) -> RunResult:
    if not _loop_running_here():
        return _evaluate(None, *args, **kwargs)
    # Called from a thread with a running event loop (a Jupyter cell, code inside asyncio.run):
    # the recording moves to its own thread while this one waits; signals stay with this thread.
    outcome = []
    interrupts = _Interrupts(exit_on_second=False)
    interrupts.install()
    try:
        _recording_thread(functools.partial(_evaluate, interrupts, *args, **kwargs),
                          lambda result, error: outcome.append((result, error))).join()
    finally:
        interrupts.restore()
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


async def aevaluate(*args, **kwargs) -> RunResult:
    """`await aevaluate(...)`: evaluate() for async code, with the same arguments and result.

    The caller's event loop is never blocked: the run is recorded in a thread of its own, and its
    tasks run on evalcompare's runner loop (see runner_loop()), like every run's. If the awaiting
    task is cancelled, the run is cancelled as by Ctrl-C (what finished is written, the run is marked
    `cancelled`) and CancelledError is raised once that is done.
    """
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def deliver(result, error):
        def settle():
            if not finished.done():
                finished.set_exception(error) if error is not None else finished.set_result(result)
        with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody is waiting
            loop.call_soon_threadsafe(settle)

    interrupts = _Interrupts(exit_on_second=False)
    interrupts.install()
    try:
        _recording_thread(functools.partial(_evaluate, interrupts, *args, **kwargs), deliver)
        try:
            return await asyncio.shield(finished)
        except asyncio.CancelledError:
            interrupts.cancel()
            with contextlib.suppress(BaseException):  # cancelled again: it finishes in the background
                await asyncio.shield(finished)
            raise
    finally:
        interrupts.restore()


_PUBLIC_SIGNATURE = inspect.signature(_evaluate).replace(
    parameters=list(inspect.signature(_evaluate).parameters.values())[1:])
evaluate.__signature__ = aevaluate.__signature__ = _PUBLIC_SIGNATURE
del evaluate.__wrapped__
