"""`manage.py release_manifest VERSION`: the JSON manifest of a release, with the last migration of each app."""

import hashlib
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evalcompare.rollback import RollbackError, build_manifest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Command(BaseCommand):
    help = ("Print (or write with --output) the release manifest: version, commit, image, wheel and sdist with "
            "their sha256, and the last migration of every app from the migration graph. `make release` writes "
            "it to releases/VERSION.json; `manage.py rollback VERSION` reads it.")

    def add_arguments(self, parser):
        parser.add_argument("version")
        parser.add_argument("--commit", default="", help="The git commit of the release.")
        parser.add_argument("--image", default="", help="The image tag (default evalcompare:VERSION).")
        parser.add_argument("--image-id", default="", help="The image id the build printed.")
        parser.add_argument("--wheel", type=Path, help="The built wheel: its name and sha256 go in the manifest.")
        parser.add_argument("--sdist", type=Path, help="The built sdist: its name and sha256 go in the manifest.")
        parser.add_argument("--output", type=Path, help="Write the manifest to this file instead of stdout.")

    def handle(self, *args, version, commit, image, image_id, wheel, sdist, output, **options):
        fields = {"git_commit": commit, "image": image or f"evalcompare:{version}", "image_id": image_id}
        for kind, path in (("wheel", wheel), ("sdist", sdist)):
            if path is None:
                continue
            if not path.is_file():
                raise CommandError(f"The {kind} {path} does not exist.", returncode=2)
            fields[kind] = path.name
            fields[f"{kind}_sha256"] = sha256_of(path)
        try:
            manifest = build_manifest(version, **fields)
        except RollbackError as error:
            raise CommandError(str(error), returncode=2) from error
        text = json.dumps(manifest, indent=2) + "\n"
        if output is None:
            self.stdout.write(text, ending="")
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        self.stdout.write(f"Wrote {output}.")
