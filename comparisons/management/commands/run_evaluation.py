import json
import math
import re
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from comparisons.models import Evaluation, EvaluationRun
from comparisons.runner import evaluate
from comparisons.runner.core import FAILURE_TAG
from comparisons.runner.model_task import OpenAIModelTask
from comparisons.runner.scorers import ScorerError, import_callable

# ASCII digits only: float() would also take "١" or "1_0", which nobody means as a cutoff.
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def parse_cutoff(text: str) -> tuple[str, float]:
    """`METRIC=VALUE` as (metric, value): VALUE a finite decimal number (`.5`, `0.5`, `5e-1`).
    Raises ValueError with the reason."""
    metric, sep, value = text.partition("=")
    shown = repr(value if len(value) <= 40 else value[:40] + "…")
    if not sep or not metric or any(c.isspace() for c in metric):
        raise ValueError("use METRIC=VALUE, e.g. --cutoff accuracy=0.8")
    if not NUMBER.fullmatch(value):
        raise ValueError(f"{shown} is not a number; use METRIC=VALUE, e.g. --cutoff {metric[:40]}=0.8")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{shown} is too large; a cutoff is a finite number")
    return metric, number


class Command(BaseCommand):
    help = ("Run an evaluation: a task (or a model) over the evaluation's dataset, scored by its evaluators. "
            "Exit 0 when every cutoff holds, 1 when one fails, every datapoint failed or the run failed, "
            "2 on bad input, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).")

    def add_arguments(self, parser):
        parser.add_argument("evaluation", help="the evaluation's name")
        parser.add_argument("--variant", required=True, help="the variant name recorded for this run")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--task", help="module:function called with each datapoint's input (sync or async)")
        source.add_argument("--openai-model", help="call this model with the evaluation's prompt template")
        parser.add_argument("--openai-base-url",
                            help=f"OpenAI-compatible endpoint (default {settings.OPENAI_BASE_URL})")
        parser.add_argument("--concurrency", type=int, default=8, help="tasks in flight at most (default 8)")
        parser.add_argument("--max-datapoints", type=int, help="only the newest N datapoints")
        parser.add_argument("--timeout", type=float, help="seconds a task or scorer may take per datapoint")
        parser.add_argument("--rpm", type=float, metavar="N",
                            help="at most N OpenAI-compatible requests a minute across the model and the judges "
                                 "(retries included), evenly spaced")
        parser.add_argument("--cutoff", action="append", default=[], metavar="METRIC=VALUE",
                            help="fail (exit 1) when METRIC's mean misses VALUE; overrides the evaluator's cutoff")
        parser.add_argument("--allow-none", action="store_true",
                            help="a None output is a valid output (by default it fails its datapoint)")
        parser.add_argument("--unpinned", action="store_true", help="record the variant as sampled, not pinned")
        parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="a tag on the run")
        parser.add_argument("--format", choices=["pretty", "jsonl"], default="pretty")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args, **options):
        evaluation = Evaluation.objects.select_related("function", "dataset").filter(name=options["evaluation"]).first()
        if evaluation is None:
            names = ", ".join(Evaluation.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"There is no evaluation named '{options['evaluation']}' (known: {names}).",
                               returncode=2)
        cutoffs = {}
        for text in options["cutoff"]:
            try:
                metric, value = parse_cutoff(text)
            except ValueError as error:
                raise CommandError(f"Bad --cutoff {text[:200]!r}: {error}.", returncode=2) from None
            cutoffs[metric] = value
        tags = {}
        for text in options["tag"]:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise CommandError(f"Bad --tag '{text}': use KEY=VALUE.", returncode=2)
            tags[key] = value
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.", returncode=2)
        rpm = options["rpm"]
        if rpm is not None and not 0 < rpm < float("inf"):
            raise CommandError(f"--rpm must be a positive number of requests a minute, not {rpm:g}.", returncode=2)

        if options["task"]:
            try:
                task = import_callable(options["task"])
            except Exception as error:  # any import-time failure of user code is bad input
                raise CommandError(f"Cannot import task '{options['task']}': {error}", returncode=2) from error
            config = {"task": options["task"]}
        else:
            task = OpenAIModelTask(
                model=options["openai_model"], base_url=options["openai_base_url"] or settings.OPENAI_BASE_URL,
                api_key=settings.OPENAI_API_KEY, prompt_template=evaluation.prompt_template,
                function_kind=evaluation.function.kind,
            )
            config = {"model": options["openai_model"], "base_url": task.base_url, "prompt": evaluation.prompt_template}

        jsonl = options["format"] == "jsonl"

        def print_item(item):
            self.stdout.write(json.dumps(item.as_dict(), ensure_ascii=False, default=str))

        try:
            result = evaluate(
                evaluation, options["variant"], task, concurrency=options["concurrency"],
                pinned=not options["unpinned"], max_datapoints=options["max_datapoints"], config=config, tags=tags,
                timeout=options["timeout"], progress=not options["no_progress"], cutoffs=cutoffs,
                on_item=print_item if jsonl else None, allow_none=options["allow_none"], rpm=rpm,
            )
        except (ValueError, ScorerError, ImportError) as error:
            raise CommandError(str(error), returncode=2) from error

        if jsonl:
            self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, default=str))
        else:
            self.stdout.write(result.format())
        if result.status == EvaluationRun.Status.CANCELLED:
            # The shell's convention: 128 + the signal (130 for SIGINT, 143 for SIGTERM); a task raising
            # CancelledError reads as Ctrl-C.
            raise CommandError(f"Interrupted: run {result.run.id} is recorded as cancelled with "
                               f"{len(result.items)} finished datapoint(s).",
                               returncode=128 + (result.signal or signal.SIGINT))
        if result.status == EvaluationRun.Status.FAILED:
            raise CommandError(f"The run failed: {result.run.tags.get(FAILURE_TAG)}", returncode=1)
        if result.failure:
            raise CommandError(result.failure, returncode=1)
        failed = result.failed_cutoffs
        if failed:
            reasons = "; ".join(
                f"{m.name} mean {'–' if m.mean is None else f'{m.mean:.4f}'} "
                f"{'<' if m.optimize == 'max' else '>'} cutoff {m.cutoff:g}" for m in failed)
            raise CommandError(f"Cutoff failed: {reasons}.", returncode=1)
