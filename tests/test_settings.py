"""Production settings: `check --deploy` passes with nothing but the required environment."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(*args, **env):
    # As a deployment would run it: no test-only variables (the browser tests set DJANGO_ALLOW_ASYNC_UNSAFE),
    # a DATABASE_URL of its own (these checks do not connect).
    base = {k: v for k, v in os.environ.items()
            if k not in ("DEBUG", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "EVALCOMPARE_EMBEDDED_DB")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**base, "DATABASE_URL": "postgresql://db.example/evalcompare", **env})


def test_production_settings_pass_check_deploy_with_secure_defaults():
    result = manage("check", "--deploy", "--fail-level", "WARNING",
                    SECRET_KEY="a-long-random-production-secret-for-this-test-0123456789abcdef",
                    ALLOWED_HOSTS="evalcompare.example")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_turning_https_off_is_reported_and_a_bad_hsts_value_is_a_clear_error():
    insecure = manage("check", "--deploy", "--fail-level", "WARNING", SECURE_SSL_REDIRECT="0",
                      SECRET_KEY="a-long-random-production-secret-for-this-test-0123456789abcdef",
                      ALLOWED_HOSTS="evalcompare.example")
    assert insecure.returncode != 0 and "security.W008" in insecure.stderr
    bad = manage("check", SECURE_HSTS_SECONDS="a year", DEBUG="1")
    assert bad.returncode != 0 and "SECURE_HSTS_SECONDS must be a whole number of seconds." in bad.stderr
