"""Release manifests and rolling the database back to a release.

A release manifest (`releases/<version>.json`, written by `make release`) records, besides the
version, commit, image and wheel, the last migration of every app in the migration graph of that
release. Rolling back to it migrates each app back to that migration, newest dependents first, so
that the release's image can run on the database again.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

MANIFEST_FORMAT = 1


class RollbackError(Exception):
    """A rollback that must not happen, with the reason in words."""


def releases_dir() -> Path:
    """Where manifests live: $EVALCOMPARE_RELEASES_DIR, else `releases/` in the current directory."""
    return Path(os.environ.get("EVALCOMPARE_RELEASES_DIR") or "releases")


def last_migrations() -> dict[str, str]:
    """The last migration of each app in the code's migration graph (not the database's state)."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    leaves: dict[str, str] = {}
    for app, name in graph.leaf_nodes():
        if app in leaves:  # two leaves in one app: `makemigrations --merge` is missing
            raise RollbackError(f"App '{app}' has several last migrations ({leaves[app]}, {name}); merge them first.")
        leaves[app] = name
    return dict(sorted(leaves.items()))


def build_manifest(version: str, **fields) -> dict:
    """A release manifest: the version, the given fields (commit, image, wheel...) and the migrations."""
    return {"format": MANIFEST_FORMAT, "version": version, **fields, "migrations": last_migrations()}


def read_manifest(version: str, directory: Path | None = None) -> dict:
    """The manifest of release `version`, checked enough to roll back with it."""
    path = (directory or releases_dir()) / f"{version}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise RollbackError(f"No manifest for release {version}: {path} does not exist "
                            f"(manifests there: {', '.join(known) or 'none'}).")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RollbackError(f"The manifest {path} cannot be read: {error}") from error
    migrations = manifest.get("migrations") if isinstance(manifest, dict) else None
    if not isinstance(migrations, dict) or not all(isinstance(v, str) for v in migrations.values()):
        raise RollbackError(f"The manifest {path} has no 'migrations' object (app → last migration).")
    if manifest.get("version") != version:
        raise RollbackError(f"The manifest {path} is for version {manifest.get('version')!r}, not {version}.")
    return manifest


@dataclass
class RollbackPlan:
    """What rolling back does: per app the target (None: unapply all), and the migrations to unapply in order."""

    targets: dict[str, str | None]
    steps: list[tuple[str, str]]


def plan_rollback(manifest: dict, using: str = DEFAULT_DB_ALIAS) -> RollbackPlan:
    """Compare the database with the manifest; refuse anything but a pure step back."""
    executor = MigrationExecutor(connections[using])
    graph, applied = executor.loader.graph, executor.loader.applied_migrations
    version = manifest["version"]
    targets: dict[str, str | None] = {}
    for app, name in manifest["migrations"].items():
        if (app, name) not in graph.nodes:
            raise RollbackError(f"Release {version} ends app '{app}' at migration {name}, which this code does not "
                                "have: roll back with the code of a release that contains it.")
        if (app, name) not in applied:
            raise RollbackError(f"The database is behind release {version}: {app}.{name} is not applied. "
                                "Rollback only goes back; use `migrate` to go forward.")
        targets[app] = name
    # Apps that the release did not have at all go back to zero.
    for app in sorted({app for app, _ in graph.leaf_nodes()} - set(targets)):
        if any(key[0] == app for key in applied):
            targets[app] = None
    plan = executor.migration_plan([(app, name) for app, name in targets.items()])
    steps = [(migration.app_label, migration.name) for migration, backwards in plan if backwards]
    # Unapplying an app can take dependents in other apps with it; a consistent manifest never needs
    # one of those, so a step that a target depends on means the manifest cannot be reached.
    for app, name in targets.items():
        needed = set(graph.forwards_plan((app, name))) if name else set()
        clash = next((step for step in steps if step in needed), None)
        if clash:
            raise RollbackError(f"Release {version}'s manifest is inconsistent: going back to it unapplies "
                                f"{clash[0]}.{clash[1]}, which its {app}.{name} depends on.")
    if not steps:
        raise RollbackError(f"The database is already at release {version}: nothing to roll back.")
    return RollbackPlan(targets=targets, steps=steps)


def rollback(manifest: dict, stdout=None, using: str = DEFAULT_DB_ALIAS) -> RollbackPlan:
    """Migrate every app back to the manifest's last migrations, the apps with dependents first."""
    plan = plan_rollback(manifest, using)
    # `migrate app target` also unapplies other apps' migrations that depend on what it unapplies, so
    # taking the apps in the order of the combined plan keeps every step dependency-safe.
    for app in dict.fromkeys(app for app, _ in plan.steps):
        call_command("migrate", app, plan.targets.get(app) or "zero", database=using, interactive=False,
                     verbosity=1, stdout=stdout)
    return plan
