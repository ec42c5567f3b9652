"""`make release`: version rules, the changelog, and the whole flow without the image in a temporary git clone."""

import datetime
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evalcompare.release import (
    ReleaseError,
    check_newer,
    parse_version,
    project_version,
    release_changelog,
    set_project_version,
)

ROOT = Path(__file__).resolve().parent.parent

CHANGELOG = """# Changelog

## [Unreleased]

### Added
- A container image.

### Fixed
- Plain database URLs.

## [0.1.0] - 2026-11-01

### Added
- The comparison page.

[Unreleased]: https://example.com/compare/v0.1.0...HEAD
"""


@pytest.mark.parametrize("new, current", [("0.1.1", "0.1.0"), ("0.2.0", "0.1.9"), ("1.0.0", "0.99.99"),
                                          ("0.10.0", "0.9.0"), ("1.0.0", "1.0.0-rc.1"), ("1.0.0-rc.2", "1.0.0-rc.1"),
                                          ("1.0.0-rc.10", "1.0.0-rc.9"), ("1.0.0-beta", "1.0.0-alpha"),
                                          ("1.0.0-alpha.beta", "1.0.0-alpha.1"), ("1.0.0-rc.1", "0.9.0")])
def test_a_greater_version_is_accepted(new, current):
    check_newer(new, current)


@pytest.mark.parametrize("new, current", [("0.1.0", "0.1.0"), ("0.0.9", "0.1.0"), ("0.9.0", "0.10.0"),
                                          ("1.0.0-rc.1", "1.0.0"), ("1.0.0-rc.9", "1.0.0-rc.10")])
def test_a_version_not_greater_is_refused(new, current):
    with pytest.raises(ReleaseError, match=f"Version {new} is not greater than the current version {current}"):
        check_newer(new, current)


@pytest.mark.parametrize("text", ["1.2", "v1.2.3", "1.2.3.4", "01.2.3", "1.2.3+build.5", "1.2.3-", "1.2.x", " 1.2.3",
                                  "1.2.3\n", "１.2.3", "1.2.3-rc..1", "1.2.3-01"])
def test_what_is_not_semver_is_refused(text):
    with pytest.raises(ReleaseError, match="is not a semantic version MAJOR.MINOR.PATCH"):
        parse_version(text)


def test_the_project_version_is_read_and_set_in_the_project_table_only():
    pyproject = '[build-system]\nrequires = []\n\n[project]\nname = "x"\nversion = "0.1.0"\n\n[tool.x]\nversion = "9"\n'
    assert project_version(pyproject) == "0.1.0"
    updated = set_project_version(pyproject, "0.2.0")
    assert updated == pyproject.replace('version = "0.1.0"', 'version = "0.2.0"')
    assert project_version((ROOT / "pyproject.toml").read_text()) == __import__("evalcompare").__version__


def test_the_unreleased_entries_move_under_the_new_version():
    text, entries = release_changelog(CHANGELOG, "0.2.0", datetime.date(2026, 11, 23))
    assert entries == "### Added\n- A container image.\n\n### Fixed\n- Plain database URLs."
    assert text.startswith("# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-11-23\n\n### Added\n- A container "
                           "image.\n\n### Fixed\n- Plain database URLs.\n\n## [0.1.0] - 2026-11-01\n")
    assert text.endswith("[Unreleased]: https://example.com/compare/v0.1.0...HEAD\n")


def test_a_changelog_without_unreleased_entries_is_refused():
    empty = CHANGELOG.replace("### Added\n- A container image.\n\n### Fixed\n- Plain database URLs.\n", "### Added\n")
    with pytest.raises(ReleaseError, match=r"nothing under \[Unreleased\]"):
        release_changelog(empty, "0.2.0", datetime.date(2026, 11, 23))
    with pytest.raises(ReleaseError, match=r"no '## \[Unreleased\]' section"):
        release_changelog("# Changelog\n", "0.2.0", datetime.date(2026, 11, 23))
    with pytest.raises(ReleaseError, match="already has a section for 0.1.0"):
        release_changelog(CHANGELOG, "0.1.0", datetime.date(2026, 11, 23))


@pytest.fixture
def clone(tmp_path):
    """A clone of this repository's HEAD with an [Unreleased] entry committed, and a git identity."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    for key, value in (("user.name", "Release Test"), ("user.email", "release@example.com"),
                       ("commit.gpgsign", "false"), ("tag.gpgsign", "false")):
        subprocess.run(["git", "config", key, value], cwd=repo, check=True)
    (repo / "CHANGELOG.md").write_text(CHANGELOG)
    subprocess.run(["git", "add", "CHANGELOG.md"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "--quiet", "-m", "Changelog for the test"], cwd=repo, check=True)
    return repo


def release(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalcompare.release", *args, "--repo", str(repo)], cwd=repo,
                          capture_output=True, text=True, timeout=900)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_a_dirty_tree_is_refused_before_anything_changes(clone):
    head = git(clone, "rev-parse", "HEAD")
    (clone / "notes.txt").write_text("untracked")
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nedited\n")

    result = release(clone, "9.0.0", "--test-command", "true", "--no-image")

    assert result.returncode == 1
    assert "The working tree is not clean" in result.stderr
    assert " M README.md" in result.stderr and "?? notes.txt" in result.stderr
    assert git(clone, "rev-parse", "HEAD") == head and git(clone, "tag", "--list") == ""


def test_failing_tests_stop_the_release(clone):
    head = git(clone, "rev-parse", "HEAD")

    result = release(clone, "9.0.0", "--test-command", "false", "--no-image")

    assert result.returncode == 1
    assert "The tests failed (false)" in result.stderr
    assert git(clone, "rev-parse", "HEAD") == head and git(clone, "tag", "--list") == ""
    assert git(clone, "status", "--porcelain") == ""


def test_an_older_version_is_refused(clone):
    result = release(clone, "0.0.1", "--test-command", "true", "--no-image")
    assert result.returncode == 1
    assert "Version 0.0.1 is not greater than the current version" in result.stderr


def test_a_release_commits_tags_builds_and_writes_its_manifest(clone):
    result = release(clone, "9.0.0", "--test-command", "true", "--no-image")

    assert result.returncode == 0, result.stdout + result.stderr
    tagged = git(clone, "rev-list", "-n", "1", "v9.0.0")
    assert git(clone, "log", "-1", "--format=%s", tagged) == "Release 9.0.0"
    assert 'version = "9.0.0"' in git(clone, "show", f"{tagged}:pyproject.toml")
    changelog = git(clone, "show", f"{tagged}:CHANGELOG.md")
    assert f"## [Unreleased]\n\n## [9.0.0] - {datetime.date.today().isoformat()}\n\n### Added\n- A container image." \
        in changelog
    assert "- A container image." in git(clone, "tag", "-l", "--format=%(contents)", "v9.0.0")
    # The manifest is committed after the tag, names the tagged commit and what was built.
    assert git(clone, "log", "-1", "--format=%s") == "Release 9.0.0: manifest"
    assert git(clone, "status", "--porcelain") == ""
    manifest = json.loads((clone / "releases" / "9.0.0.json").read_text())
    assert manifest["version"] == "9.0.0" and manifest["git_commit"] == tagged
    assert manifest["image"] == "evalcompare:9.0.0" and manifest["image_id"] == ""
    wheel = clone / "dist" / "evalcompare-9.0.0-py3-none-any.whl"
    assert manifest["wheel"] == wheel.name
    assert manifest["wheel_sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert manifest["sdist"] == "evalcompare-9.0.0.tar.gz"
    newest = sorted(p.stem for p in (clone / "comparisons" / "migrations").glob("0*.py"))[-1]
    assert manifest["migrations"]["comparisons"] == newest
    with zipfile.ZipFile(wheel) as archive:
        assert "Version: 9.0.0" in archive.read("evalcompare-9.0.0.dist-info/METADATA").decode()

    again = release(clone, "9.0.0", "--test-command", "true", "--no-image")
    assert again.returncode == 1 and "Version 9.0.0 is not greater than the current version 9.0.0" in again.stderr
