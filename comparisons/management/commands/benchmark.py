import json
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from comparisons import benchmark, loadtest
from evalcompare import gunicorn_conf


class Command(BaseCommand):
    help = ("Load deterministic synthetic data into a database of its own and measure the comparison page, "
            "statistics, search, filters, sort, export and runner. Never touches your data.")

    def add_arguments(self, parser):
        parser.add_argument("--scale", choices=list(benchmark.SCALES), default="default")
        parser.add_argument("--runs-compared", default="2,5", help="comma-separated run counts (default 2,5)")
        parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
        parser.add_argument("--keep", action="store_true",
                            help="keep the benchmark database (a later run with the same scale reuses it)")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--load", action="store_true",
                            help="also load the production server (gunicorn on loopback) with concurrent clients")
        parser.add_argument("--load-only", action="store_true", help="only the load test (implies --load)")
        parser.add_argument("--load-clients", type=int, default=50,
                            help=f"concurrent logged-in clients (default 50, at most {loadtest.MAX_CLIENTS})")
        parser.add_argument("--load-seconds", type=float, default=30,
                            help=f"how long the load lasts (default 30, at most {loadtest.MAX_SECONDS})")
        parser.add_argument("--load-workers", type=int, default=gunicorn_conf.workers,
                            help=f"gunicorn workers (default: WEB_CONCURRENCY or {gunicorn_conf.workers})")

    def handle(self, *args, **options):
        scale = options["scale"]
        try:
            runs_compared = sorted({int(n) for n in options["runs_compared"].split(",") if n.strip()})
        except ValueError as error:
            raise CommandError("--runs-compared takes run counts like 2,5.", returncode=2) from error
        available = benchmark.SCALES[scale].runs
        if not runs_compared or min(runs_compared) < 1 or max(runs_compared) > min(available, 10):
            raise CommandError(f"--runs-compared must be between 1 and {min(available, 10)} at scale {scale}.",
                               returncode=2)
        load = options["load"] or options["load_only"]
        if load and not (1 <= options["load_clients"] <= loadtest.MAX_CLIENTS
                         and 0 < options["load_seconds"] <= loadtest.MAX_SECONDS
                         and 1 <= options["load_workers"] <= loadtest.MAX_WORKERS):
            raise CommandError(f"--load-clients must be 1–{loadtest.MAX_CLIENTS}, --load-seconds above 0 and at most "
                               f"{loadtest.MAX_SECONDS}, --load-workers 1–{loadtest.MAX_WORKERS}.", returncode=2)
        progress = not options["no_progress"]
        original = settings.DATABASES["default"]["NAME"]
        name = benchmark.database_name(scale)
        benchmark.use_database(name, create=True)
        try:
            if not benchmark.is_loaded(scale):
                if progress:
                    self.stderr.write(f"Creating {name} and loading the {scale} data set …")
                benchmark.use_database(original, create=False)
                benchmark.drop_database(name, original)
                benchmark.use_database(name, create=True)
                call_command("migrate", verbosity=0)
                counts = benchmark.load(scale, progress=progress)
                if progress:
                    self.stderr.write(f"Loaded {counts['datapoints']:,} datapoint versions, "
                                      f"{counts['inferences']:,} inferences, {counts['feedback']:,} feedback rows.")
            else:
                if progress:
                    self.stderr.write(f"Reusing {name} (kept by an earlier --keep run).")
                call_command("migrate", verbosity=0)
            results = {"scale": scale} if options["load_only"] else benchmark.measure(scale, runs_compared,
                                                                                        progress=progress)
            if load:
                results.update(benchmark.measure_load(
                    runs_compared, clients=options["load_clients"], seconds=options["load_seconds"],
                    workers=options["load_workers"], progress=progress))
        finally:
            if options["keep"]:
                benchmark.use_database(original, create=False)
            else:
                benchmark.drop_database(name, original)
        if not options["load_only"]:
            self.stdout.write(benchmark.format_table(results))
        if load:
            self.stdout.write(loadtest.format_load_table(results))
        if options["json_path"]:
            Path(options["json_path"]).write_text(json.dumps(results, indent=2) + "\n")
            self.stderr.write(f"Wrote {options['json_path']}.")
