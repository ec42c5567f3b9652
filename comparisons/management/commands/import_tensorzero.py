from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from comparisons.tensorzero import ImportAborted, import_tensorzero


class Command(BaseCommand):
    help = ("Import a TensorZero ClickHouse export (JSONEachRow files named after its tables) as functions, "
            "datasets, evaluations, runs, inferences and feedback. Idempotent; one transaction.")

    def add_arguments(self, parser):
        parser.add_argument("directory", help="folder holding e.g. chat_inference_examples.jsonl")
        parser.add_argument("--strict", action="store_true", help="abort, importing nothing, on any malformed line")

    def handle(self, *args, **options):
        directory = Path(options["directory"])
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a folder.", returncode=2)
        try:
            report = import_tensorzero(directory, strict=options["strict"])
        except FileNotFoundError as error:
            raise CommandError(str(error), returncode=2) from error
        except ImportAborted as error:
            details = "\n".join(f"  {p}" for p in error.problems[:50])
            raise CommandError(f"--strict: {error}.\n{details}", returncode=1) from error
        for line in report.lines():
            self.stdout.write(line)
