from django.core.management.base import BaseCommand

from comparisons.demo import DEMO_PASSWORD, load_demo


class Command(BaseCommand):
    help = "Load the demo evaluations, datasets, runs and scores (idempotent) and create a demo login."

    def handle(self, *args, **options):
        result = load_demo()
        summary = ", ".join(f"{count} {name}" for name, count in result.created.items())
        self.stdout.write(f"Demo data loaded ({summary} new).")
        changed = ", ".join(f"{count} {name}" for name, count in result.updated.items() if count)
        if changed:
            self.stdout.write(f"Updated {changed} to the demo's.")
        password = result.password or f"{DEMO_PASSWORD} (unless you changed it)"
        self.stdout.write(self.style.SUCCESS(f"Log in at http://127.0.0.1:8000/ as {result.username} / {password}"))
