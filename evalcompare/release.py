"""`make release VERSION=x.y.z` (python -m evalcompare.release x.y.z): cut a versioned release.

Refuses a dirty tree, a version that is not semver or not greater than the current one, an empty
`[Unreleased]` changelog section and failing tests. Then it sets the version in pyproject.toml,
moves the `[Unreleased]` entries of CHANGELOG.md under `[x.y.z] - date`, commits, tags `vx.y.z`,
builds the wheel and sdist (dist/), builds and smoke-tests the image `evalcompare:x.y.z`
(scripts/release-check), and writes and commits the manifest `releases/x.y.z.json`.
"""

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?")
PROJECT_VERSION = re.compile(r'(?ms)^(\[project\]\n(?:(?!^\[).)*?^version\s*=\s*")([^"]*)(")')
UNRELEASED = re.compile(r"(?m)^## \[Unreleased\][^\n]*\n")


class ReleaseError(Exception):
    """A release that must not go ahead, with the reason in words."""


def parse_version(text: str) -> tuple:
    """A sortable key for a semver version (MAJOR.MINOR.PATCH[-prerelease]; build metadata is refused)."""
    match = SEMVER.fullmatch(text)
    if not match:
        raise ReleaseError(f"'{text}' is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.4.0, or 2.0.0-rc.1).")
    major, minor, patch, pre = match.groups()
    # A pre-release sorts before its release; numeric identifiers sort numerically, before alphanumeric ones.
    pre_key = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")) if pre else None
    return int(major), int(minor), int(patch), (0, pre_key) if pre_key else (1, ())


def check_newer(new: str, current: str) -> None:
    """Refuse `new` unless it is a valid version greater than `current`."""
    if parse_version(new) <= parse_version(current):
        raise ReleaseError(f"Version {new} is not greater than the current version {current}.")


def project_version(pyproject: str) -> str:
    match = PROJECT_VERSION.search(pyproject)
    if not match:
        raise ReleaseError("pyproject.toml has no version in its [project] table.")
    return match.group(2)


def set_project_version(pyproject: str, version: str) -> str:
    project_version(pyproject)
    return PROJECT_VERSION.sub(lambda m: m.group(1) + version + m.group(3), pyproject, count=1)


def release_changelog(changelog: str, version: str, date: datetime.date) -> tuple[str, str]:
    """Move the `[Unreleased]` entries under `## [version] - date`; return the new text and the entries."""
    heading = UNRELEASED.search(changelog)
    if not heading:
        raise ReleaseError("CHANGELOG.md has no '## [Unreleased]' section (Keep a Changelog format).")
    if re.search(rf"(?m)^## \[{re.escape(version)}\]", changelog):
        raise ReleaseError(f"CHANGELOG.md already has a section for {version}.")
    following = re.search(r"(?m)^## |^\[[^\]]+\]: ", changelog[heading.end():])
    end = heading.end() + following.start() if following else len(changelog)
    entries = changelog[heading.end():end].strip("\n")
    if not re.search(r"(?m)^\s*[-*] \S", entries):
        raise ReleaseError("CHANGELOG.md has nothing under [Unreleased]: write this release's changes there first.")
    released = f"{heading.group(0)}\n## [{version}] - {date.isoformat()}\n\n{entries}\n\n"
    return changelog[:heading.start()] + released + changelog[end:].lstrip("\n"), entries


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def check_clean(repo: Path) -> None:
    """Refuse uncommitted changes and untracked files: a release is exactly a commit."""
    status = git(repo, "status", "--porcelain", "--untracked-files=normal")
    if status:
        listed = "\n".join(f"  {line}" for line in status.splitlines()[:20])
        raise ReleaseError(f"The working tree is not clean; commit or stash these first:\n{listed}")


def run(command: list[str], repo: Path, what: str, env: dict | None = None) -> None:
    print(f"$ {shlex.join(command)}", flush=True)
    if subprocess.run(command, cwd=repo, env=env).returncode != 0:
        raise ReleaseError(f"{what} failed ({shlex.join(command)}).")


def release(version: str, repo: Path, test_command: str, build_image: bool, python: str) -> dict:
    """Cut release `version` in `repo`; return what was made (commit, files, image)."""
    pyproject_path, changelog_path = repo / "pyproject.toml", repo / "CHANGELOG.md"
    pyproject = pyproject_path.read_text()
    check_newer(version, project_version(pyproject))
    check_clean(repo)
    if git(repo, "tag", "--list", f"v{version}"):
        raise ReleaseError(f"The tag v{version} exists already.")
    if not changelog_path.is_file():
        raise ReleaseError("There is no CHANGELOG.md.")
    changelog, entries = release_changelog(changelog_path.read_text(), version, datetime.date.today())
    run(shlex.split(test_command), repo, "The tests")
    check_clean(repo)  # the tests must not leave anything behind that the release would miss

    pyproject_path.write_text(set_project_version(pyproject, version))
    changelog_path.write_text(changelog)
    git(repo, "add", "pyproject.toml", "CHANGELOG.md")
    git(repo, "commit", "--quiet", "-m", f"Release {version}")
    git(repo, "tag", "-a", f"v{version}", "-m", f"evalcompare {version}\n\n{entries}")
    commit = git(repo, "rev-parse", "HEAD")
    print(f"Committed and tagged v{version} ({commit[:12]}).")
    try:
        return build_release(version, repo, commit, build_image, python)
    except ReleaseError as error:
        raise ReleaseError(f"{error}\nThe release commit and tag v{version} exist. Fix the cause and finish by hand, "
                           f"or undo them with: git tag -d v{version} && git reset --hard HEAD~1") from error


def build_release(version: str, repo: Path, commit: str, build_image: bool, python: str) -> dict:
    dist = repo / "dist"
    run([python, "-m", "build", "--outdir", str(dist), "."], repo, "Building the wheel and sdist")
    wheel = dist / f"evalcompare-{version}-py3-none-any.whl"
    sdist = dist / f"evalcompare-{version}.tar.gz"
    for built in (wheel, sdist):
        if not built.is_file():
            raise ReleaseError(f"The build made no {built.relative_to(repo)}.")
    image, image_id = f"evalcompare:{version}", ""
    if build_image:
        run(["scripts/release-check"], repo, "Building and smoke-testing the image", env={**os.environ, "IMAGE": image})
        image_id = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                                  text=True, check=True).stdout.strip()
    manifest = repo / "releases" / f"{version}.json"
    # The manifest needs the migration graph only, never a database connection.
    env = {**os.environ, "DATABASE_URL": "postgresql://unused@localhost/unused",
           "SECRET_KEY": os.environ.get("SECRET_KEY") or "release-manifest-only"}
    run([python, "manage.py", "release_manifest", version, "--commit", commit, "--image", image, "--image-id",
         image_id, "--wheel", str(wheel), "--sdist", str(sdist), "--output", str(manifest)],
        repo, "Writing the release manifest", env=env)
    git(repo, "add", str(manifest.relative_to(repo)))
    git(repo, "commit", "--quiet", "-m", f"Release {version}: manifest")
    return {"commit": commit, "wheel": wheel, "sdist": sdist, "image": image if build_image else None,
            "image_id": image_id, "manifest": manifest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make release VERSION=x.y.z", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="The repository (default: here).")
    parser.add_argument("--test-command", default="make test", help="What must pass first (default: make test).")
    parser.add_argument("--no-image", action="store_true",
                        help="Skip the image (for machines without podman); the manifest then has no image id.")
    args = parser.parse_args(argv)
    try:
        made = release(args.version, args.repo.resolve(), args.test_command, not args.no_image, sys.executable)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    print(f"\nReleased evalcompare {args.version}: tag v{args.version} ({made['commit'][:12]}), "
          f"{made['wheel'].name}, {made['sdist'].name}, "
          f"{'image ' + made['image'] if made['image'] else 'no image'}, manifest {made['manifest'].name}.\n"
          f"Publish: git push origin HEAD v{args.version}  (the release workflow builds and publishes it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
