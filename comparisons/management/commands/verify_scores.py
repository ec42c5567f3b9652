"""`manage.py verify_scores [--evaluation NAME] [--repair]`: are the kept tables equal to the raw rows?"""

from django.core.management.base import BaseCommand, CommandError

from comparisons.integrity import find_drift, repair
from comparisons.models import Evaluation, EvaluationRun


class Command(BaseCommand):
    help = ("Recompute every kept table (window scores, run sums, paired sums, coverage) from the raw "
            "feedback, inferences and datapoints; print each drift and exit 1 if any. --repair rebuilds them.")

    def add_arguments(self, parser):
        parser.add_argument("--evaluation", help="Only this evaluation's runs (default: every run).")
        parser.add_argument("--repair", action="store_true",
                            help="Rebuild the kept tables in one transaction, then verify again.")
        parser.add_argument("--limit", type=int, default=1000, help="Drifts shown per table at most (default 1000).")

    def handle(self, *args, evaluation=None, limit=1000, **options):
        run_ids = None
        if evaluation is not None:
            # PostgreSQL cannot even compare a text with a NUL in it; no name has one.
            found = Evaluation.objects.filter(name=evaluation).first() if "\x00" not in evaluation else None
            if found is None:
                names = ", ".join(Evaluation.objects.values_list("name", flat=True)[:20]) or "none yet"
                raise CommandError(f"There is no evaluation named '{evaluation[:200]}' (evaluations: {names}).",
                                   returncode=2)
            run_ids = list(EvaluationRun.objects.filter(evaluation=found).values_list("id", flat=True))
        if limit < 1:
            raise CommandError("--limit must be at least 1.", returncode=2)
        scope = f"evaluation '{evaluation}'" if evaluation else "every evaluation"
        drifts = find_drift(run_ids, limit=limit)
        for drift in drifts:
            self.stdout.write(f"drift: {drift}")
        if not drifts:
            self.stdout.write(self.style.SUCCESS(f"No drift: the kept tables of {scope} equal a recomputation."))
            return
        if not options["repair"]:
            raise CommandError(f"{len(drifts)} drift(s) in the kept tables of {scope}; "
                               "run again with --repair to rebuild them.", returncode=1)
        repair(run_ids)
        remaining = find_drift(run_ids, limit=limit)
        if remaining:
            raise CommandError(f"{len(remaining)} drift(s) remain after the repair.", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"Repaired {len(drifts)} drift(s) in the kept tables of {scope}."))
