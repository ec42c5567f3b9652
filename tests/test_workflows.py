"""The CI workflows cannot run here, so actionlint checks them: any finding fails the suite."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).parent / "actionlint"


def test_actionlint_finds_nothing_in_the_workflows():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "release.yml"]
    result = subprocess.run([str(ACTIONLINT), "-no-color", *map(str, files)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_report_a_broken_workflow(tmp_path):
    """The check above can fail: a workflow with an unknown event and an undefined job need is reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: pushh\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: nothing\n    steps:\n"
                      "      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([str(ACTIONLINT), "-no-color", str(broken)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert "unknown Webhook event \"pushh\"" in result.stdout and "nothing" in result.stdout


def test_ci_is_the_merge_gate_and_release_publishes_after_it():
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    triggers = ci[True]  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request", "workflow_call"} <= set(triggers)
    test = ci["jobs"]["test"]
    assert test["services"]["postgres"]["image"].endswith("postgres:16")
    assert test["env"]["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in test["env"]["DATABASE_URL"]
    assert any("chromium" in step.get("run", "") for step in test["steps"])
    assert any(step.get("run") == "make test" for step in test["steps"])

    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    assert release[True]["push"]["tags"] == ["v*"]
    assert release["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    publish = release["jobs"]["publish"]
    assert publish["needs"] == "ci" and publish["permissions"]["packages"] == "write"
    assert any("ghcr.io" in str(step.get("with", {}).get("registry", "")) for step in publish["steps"])
    assert any("dist/*" in step.get("run", "") for step in publish["steps"])


def test_compose_runs_postgres_16_then_a_one_shot_migrate_then_web():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    db, migrate, web = services["db"], services["migrate"], services["web"]
    assert db["image"].endswith("postgres:16-bookworm")
    assert db["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in compose["volumes"]
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert web["command"] == ["serve"]
    assert web["depends_on"] == {"db": {"condition": "service_healthy"},
                                 "migrate": {"condition": "service_completed_successfully"}}
    assert web["image"] == migrate["image"]
    assert web["environment"]["DATABASE_URL"].endswith("@db:5432/evalcompare")
    worker = services["worker"]  # runs launched from the portal, on the same image and settings
    assert worker["command"] == ["worker"] and worker["image"] == web["image"]
    assert worker["environment"] == web["environment"] and worker["depends_on"] == web["depends_on"]
