"""`manage.py rollback X.Y.Z`: migrate the database back to release X.Y.Z and name its image."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalcompare.rollback import RollbackError, plan_rollback, read_manifest, rollback


class Command(BaseCommand):
    help = ("Roll the database back to a release: read releases/VERSION.json (its manifest), migrate every app "
            "back to that release's last migration, and print the image to redeploy.")

    def add_arguments(self, parser):
        parser.add_argument("version", help="The release to go back to, e.g. 0.1.0 (its manifest must exist).")
        parser.add_argument("--releases-dir", help="Where the manifests are (default: $EVALCOMPARE_RELEASES_DIR "
                                                   "or ./releases).")
        parser.add_argument("--dry-run", action="store_true", help="Only print the migrations it would unapply.")

    def handle(self, *args, version, releases_dir=None, dry_run=False, **options):
        directory = Path(releases_dir) if releases_dir else None
        try:
            manifest = read_manifest(version, directory)
            if dry_run:
                plan = plan_rollback(manifest)
            else:
                self.stdout.write(f"Rolling the database back to release {version} ...")
                plan = rollback(manifest, stdout=self.stdout)
        except RollbackError as error:
            raise CommandError(str(error), returncode=2) from error
        steps = "\n".join(f"  unapply {app}.{name}" for app, name in plan.steps)
        targets = ", ".join(f"{app} → {name or 'zero'}" for app, name in plan.targets.items())
        image = manifest.get("image") or f"evalcompare:{version}"
        if dry_run:
            self.stdout.write(f"Rolling back to release {version} would unapply, in this order:\n{steps}\n"
                              f"leaving {targets}.")
            return
        self.stdout.write(self.style.SUCCESS(f"The database is at release {version} ({targets})."))
        image_id = f" (image id {manifest['image_id']})" if manifest.get("image_id") else ""
        self.stdout.write(f"Now redeploy the image {image}{image_id}; the newer image must not serve this database.")
