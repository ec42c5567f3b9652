"""evaluate() and aevaluate() from async code: inside asyncio.run, from a real Jupyter kernel, with
event-loop-bound clients kept across runs, and with the awaiting task cancelled."""

import asyncio
import json
import signal
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import nbformat
import pytest
from django.core.exceptions import SynchronousOnlyOperation
from nbclient import NotebookClient

from comparisons.models import EvaluationRun, Inference
from comparisons.runner import aevaluate, evaluate, runner_loop
from tests import sample_tasks
from tests.dburl import subprocess_database_url
from tests.factories import DatapointFactory, EvaluationFactory, EvaluatorFactory, at

# The run is recorded from a thread of its own, on its own connection: it must see committed data.
pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def evaluation():
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="exact", kind="exact_match")
    for i in range(12):
        DatapointFactory(evaluation=evaluation, created=at(0) + timedelta(seconds=i),
                         input={"question": f"question {i}"}, reference_output=f"answer {i}")
    return evaluation


def recorded(run):
    return sorted((str(i.datapoint_id), i.output, i.error) for i in Inference.objects.filter(run=run))


def test_aevaluate_in_asyncio_run_records_what_evaluate_records(evaluation):
    plain = evaluate(evaluation, "plain", sample_tasks.async_task, progress=False)

    async def main():
        return await aevaluate(evaluation, "awaited", sample_tasks.async_task, progress=False)

    awaited = asyncio.run(main())
    assert awaited.status == plain.status == "completed"
    assert len(awaited.items) == 12 and awaited.metrics[0].mean == plain.metrics[0].mean == 0.5
    assert recorded(awaited.run) == recorded(plain.run) and len(recorded(plain.run)) == 12
    assert EvaluationRun.objects.get(id=awaited.run.id).status == "completed"


def test_evaluate_called_inside_asyncio_run_records_off_the_loop(evaluation):
    async def main():
        loop_thread = threading.current_thread()
        with pytest.raises(SynchronousOnlyOperation):  # what evaluate() must work around
            EvaluationRun.objects.count()
        result = evaluate(evaluation, "inside", sample_tasks.sync_task, progress=False)
        return loop_thread, result

    loop_thread, result = asyncio.run(main())
    assert loop_thread is threading.main_thread()
    assert result.status == "completed" and len(recorded(result.run)) == 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back


def test_errors_from_aevaluate_and_off_loop_evaluate_reach_the_caller(evaluation):
    async def main():
        with pytest.raises(ValueError, match="no evaluation named 'nope'"):
            await aevaluate("nope", "v", sample_tasks.sync_task)
        with pytest.raises(ValueError, match="concurrency must be at least 1"):
            evaluate(evaluation, "v", sample_tasks.sync_task, concurrency=0)

    asyncio.run(main())
    assert not EvaluationRun.objects.exists()


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pooled connections outlive a run

    def do_GET(self):
        body = json.dumps({"answer": "answer " + self.path.rsplit("/", 1)[-1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_module_level_async_client_keeps_working_across_runs(evaluation, echo_server):
    """Made once, like a module-level client, and used by three runs started three different ways."""
    client = httpx.AsyncClient(base_url=echo_server)
    loops = set()

    async def task(input):
        loops.add(asyncio.get_running_loop())
        response = await client.get(f"/{input['question'].split()[-1]}")
        return response.json()["answer"]

    first = evaluate(evaluation, "first", task, concurrency=4, progress=False)

    async def main():
        second = evaluate(evaluation, "second", task, concurrency=4, progress=False)
        third = await aevaluate(evaluation, "third", task, concurrency=4, progress=False)
        return second, third

    second, third = asyncio.run(main())
    for result in (first, second, third):
        assert result.status == "completed" and result.errors == 0, result.format()
        assert result.metrics[0].mean == 1.0
    assert loops == {runner_loop()}  # one loop for every run: the policy
    asyncio.run_coroutine_threadsafe(client.aclose(), runner_loop()).result(5)


def test_cancelling_the_awaiting_task_cancels_the_run_and_keeps_what_finished(evaluation):
    DatapointFactory.create_batch(100, evaluation=evaluation, input={"question": "question 1"})
    finished = []

    async def slow(input):
        await asyncio.sleep(0.05)
        return "answer 1"

    async def main():
        pending = asyncio.create_task(aevaluate(evaluation, "v", slow, concurrency=2, progress=False,
                                                on_item=finished.append))
        while len(finished) < 5:
            await asyncio.sleep(0.01)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending

    asyncio.run(main())
    run = EvaluationRun.objects.get()
    assert run.status == "cancelled" and run.finished_at is not None
    # Every item reported to on_item was written, and nothing was written that was not run.
    written = set(Inference.objects.filter(run=run).values_list("id", flat=True))
    assert {item.inference_id for item in finished} <= written and 5 <= len(written) < 112


def test_gathered_runs_share_the_signal_handlers_and_restore_them(evaluation):
    async def main():
        return await asyncio.gather(*(aevaluate(evaluation, f"v{n}", sample_tasks.async_task, progress=False)
                                      for n in range(3)))

    results = asyncio.run(main())
    assert [r.status for r in results] == ["completed"] * 3
    assert all(len(recorded(r.run)) == 12 for r in results)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


NOTEBOOK_SETUP = """
import os, sys
os.environ.update(DJANGO_SETTINGS_MODULE="evalcompare.settings", DEBUG="1", DATABASE_URL={url!r})
sys.path.insert(0, {root!r})
os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # Django's check stays on, as in anyone's notebook
import asyncio, django, httpx
django.setup()
from comparisons.runner import aevaluate, evaluate
from tests import sample_tasks
"""


def test_a_real_notebook_calls_evaluate_and_aevaluate(evaluation, echo_server):
    """A Jupyter kernel (ipykernel, through nbclient) runs its cells on a running event loop."""
    cells = [
        NOTEBOOK_SETUP.format(url=subprocess_database_url(), root=str(ROOT)),
        # A cell runs with the kernel's loop running, so Django refuses the ORM in it.
        "asyncio.get_running_loop()\n"
        "from django.core.exceptions import SynchronousOnlyOperation\n"
        "try:\n"
        "    django.contrib.auth.models.User.objects.count()\n"
        "except SynchronousOnlyOperation:\n"
        "    print('the ORM is refused in a cell')",
        # A plain call, as people write it in a cell.
        'first = evaluate("qa", "nb-sync", sample_tasks.sync_task, progress=False)\n'
        'print(first.status, len(first.items))',
        # A client made once in the notebook, used by the next two runs.
        f'client = httpx.AsyncClient(base_url={echo_server!r})\n'
        'async def ask(input):\n'
        '    response = await client.get("/" + input["question"].split()[-1])\n'
        '    return response.json()["answer"]\n'
        'second = await aevaluate("qa", "nb-await", ask, concurrency=4, progress=False)\n'
        'print(second.status, len(second.items), second.metrics[0].mean)',
        'third = evaluate("qa", "nb-again", ask, concurrency=4, progress=False)\n'
        'print(third.status, len(third.items), third.metrics[0].mean)',
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = ["".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
               for cell in notebook.cells]
    assert outputs[1].strip() == "the ORM is refused in a cell"
    assert outputs[2].split() == ["completed", "12"]
    assert outputs[3].split() == ["completed", "12", "1.0"]
    assert outputs[4].split() == ["completed", "12", "1.0"]
    runs = {run.variant_name: run for run in EvaluationRun.objects.all()}
    assert set(runs) == {"nb-sync", "nb-await", "nb-again"}
    assert all(run.status == "completed" and run.inferences.count() == 12 for run in runs.values())
