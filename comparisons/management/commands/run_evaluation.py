import json
import math
import os
import re
import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from comparisons.models import Evaluation, EvaluationRun
from comparisons.runner import evaluate
from comparisons.runner.core import FAILURE_TAG, find_run
from comparisons.runner.model_task import OpenAIModelTask
from comparisons.runner.scorers import ScorerError, import_callable

# ASCII digits only: float() would also take "١" or "1_0", which nobody means as a cutoff.
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def parse_cutoff(text: str, option: str = "--cutoff", example: str = "0.8") -> tuple[str, float]:
    """`METRIC=VALUE` as (metric, value): VALUE a finite decimal number (`.5`, `0.5`, `5e-1`).
    Raises ValueError with the reason."""
    metric, sep, value = text.partition("=")
    shown = repr(value if len(value) <= 40 else value[:40] + "…")
    if not sep or not metric or any(c.isspace() for c in metric):
        raise ValueError(f"use METRIC=VALUE, e.g. {option} accuracy={example}")
    if not NUMBER.fullmatch(value):
        raise ValueError(f"{shown} is not a number; use METRIC=VALUE, e.g. {option} {metric[:40]}={example}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{shown} is too large; a {option[2:]} is a finite number")
    return metric, number


class Command(BaseCommand):
    help = ("Run an evaluation: a task (or a model) over the evaluation's dataset, scored by its evaluators. "
            "Exit 0 when every cutoff holds, 1 when one fails, every datapoint failed or the run failed, "
            "2 on bad input, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).")

    def add_arguments(self, parser):
        parser.add_argument("evaluation", help="the evaluation's name")
        parser.add_argument("--variant", help="the variant name recorded for this run (required unless --resume)")
        source = parser.add_mutually_exclusive_group()
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
        parser.add_argument("--resume", metavar="RUN_ID",
                            help="continue this run: the datapoints of its window it has no inference for, with its "
                                 "variant, pinned flag and config (its --task or model unless given)")
        parser.add_argument("--precision", action="append", default=[], metavar="METRIC=HALF_WIDTH",
                            help="repeatable; random order, stop once METRIC's 95%% CI half-width is at most "
                                 "HALF_WIDTH (after 20 scored datapoints)")
        parser.add_argument("--seed", help="the seed of --precision's random order (default: drawn and recorded)")
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

        precision = {}
        for text in options["precision"]:
            try:
                metric, value = parse_cutoff(text, "--precision", "0.03")
            except ValueError as error:
                raise CommandError(f"Bad --precision {text[:200]!r}: {error}.", returncode=2) from None
            precision[metric] = value
        seed = None
        if options["seed"] is not None:
            if not re.fullmatch(r"\d{1,19}", options["seed"], re.ASCII):
                raise CommandError(f"Bad --seed {options['seed'][:40]!r}: use a whole number from 0 to 2**63 - 1.",
                                   returncode=2)
            seed = int(options["seed"])

        resumed = None
        if options["resume"] is not None:
            resumed = self.resumed_run(options, evaluation)
        elif not options["variant"]:
            raise CommandError("--variant is required (unless --resume).", returncode=2)
        elif not options["task"] and not options["openai_model"]:
            raise CommandError("one of --task or --openai-model is required (unless --resume).", returncode=2)

        if resumed is not None and not options["task"]:
            task = self.task_of(resumed, evaluation)
        elif options["task"]:
            try:
                task = import_callable(options["task"])
            except Exception as error:  # any import-time failure of user code is bad input
                raise CommandError(f"Cannot import task '{options['task']}': {error}", returncode=2) from error
            config = {"task": options["task"]}
        elif options["openai_model"]:
            task = OpenAIModelTask(
                model=options["openai_model"], base_url=options["openai_base_url"] or settings.OPENAI_BASE_URL,
                api_key=settings.OPENAI_API_KEY, prompt_template=evaluation.prompt_template,
                function_kind=evaluation.function.kind,
            )
            config = {"model": options["openai_model"], "base_url": task.base_url, "prompt": evaluation.prompt_template}
        if resumed is not None:
            config = None  # the run keeps its own

        jsonl = options["format"] == "jsonl"

        def print_item(item):
            self.stdout.write(json.dumps(item.as_dict(), ensure_ascii=False, default=str))

        try:
            result = evaluate(
                evaluation, options["variant"], task, concurrency=options["concurrency"],
                pinned=(False if options["unpinned"] else None if resumed else True),
                max_datapoints=options["max_datapoints"], config=config, tags=tags or None,
                timeout=options["timeout"], progress=not options["no_progress"], cutoffs=cutoffs,
                on_item=print_item if jsonl else None, allow_none=options["allow_none"], rpm=rpm,
                resume=resumed, precision=precision or None, seed=seed,
            )
        except (ValueError, ScorerError, ImportError) as error:
            raise CommandError(str(error), returncode=2) from error
        except BrokenPipeError:
            # The reader went away (`... --format jsonl | head -1`): the run stopped and is recorded as
            # failed with what finished. Exit as a process killed by SIGPIPE would, without a traceback.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            self.stderr.write("The output was closed (broken pipe): the run stopped and is recorded as failed, with "
                              "what had finished.")
            raise SystemExit(128 + signal.SIGPIPE) from None

        if jsonl:
            self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, default=str))
        else:
            self.stdout.write(result.format())
        if result.nothing_to_resume:
            return
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

    def resumed_run(self, options, evaluation) -> EvaluationRun:
        """The run --resume names, after refusing the options that contradict resuming it."""
        try:
            run = find_run(options["resume"])
        except ValueError as error:
            raise CommandError(f"Bad --resume: {error}.", returncode=2) from None
        if run.evaluation_id != evaluation.id:
            raise CommandError(f"Bad --resume: run {run.id} is a run of '{run.evaluation.name}', not of "
                               f"'{evaluation.name}'.", returncode=2)
        own = run.config
        contradictions = [
            ("--variant", options["variant"], run.variant_name),
            ("--task", options["task"], own.get("task")),
            ("--openai-model", options["openai_model"], own.get("model")),
            ("--openai-base-url", options["openai_base_url"], own.get("base_url")),
        ]
        for option, given, recorded in contradictions:
            if given is not None and given != recorded:
                shown = "none" if recorded is None else repr(recorded)
                raise CommandError(f"--resume keeps the run's own settings: {option} {given!r} contradicts the "
                                   f"run's {shown}.", returncode=2)
        for option in ("tag", "precision", "seed"):
            if options[option]:
                raise CommandError(f"--{option} cannot be combined with --resume: the run keeps its own "
                                   f"{'tags' if option == 'tag' else 'order'}.", returncode=2)
        return run

    def task_of(self, run: EvaluationRun, evaluation):
        """The task a run was recorded with (its config's `task` or `model`), to resume it."""
        if run.config.get("task"):
            try:
                return import_callable(run.config["task"])
            except Exception as error:
                raise CommandError(f"Cannot import the run's task '{run.config['task']}': {error}",
                                   returncode=2) from error
        if run.config.get("model"):
            return OpenAIModelTask(
                model=run.config["model"], base_url=run.config.get("base_url") or settings.OPENAI_BASE_URL,
                api_key=settings.OPENAI_API_KEY, prompt_template=run.config.get("prompt", evaluation.prompt_template),
                function_kind=evaluation.function.kind,
            )
        raise CommandError(f"run {run.id} records no task or model in its config: pass --task or --openai-model.",
                           returncode=2)
