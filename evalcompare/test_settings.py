"""Settings for the test suite: the normal settings with a test-only key and fast password hashing."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-never-used-outside-the-test-suite")
# Without DATABASE_URL the suite runs on the embedded PostgreSQL (pytest-django makes its test_ database there).
os.environ.setdefault("EVALCOMPARE_EMBEDDED_DB", "1")

from evalcompare.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The suite runs no collectstatic: plain names, and WhiteNoise looks files up per request instead of
# scanning a STATIC_ROOT that does not exist (tests/test_serving.py covers the hashed production files).
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
WHITENOISE_AUTOREFRESH = True

# The test client and the browser tests' live server speak plain HTTP.
SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_HSTS_SECONDS = 0

# The portal's tests launch runs of the demo's offline stand-ins (the default only with DEBUG=1).
EVALCOMPARE_TASKS = {"demo-offline": "comparisons.demo_tasks:offline_model",
                     "sample-steady": "tests.sample_tasks:steady"}

# Tests run up to a dozen threads on real connections in one process (concurrent writers and readers,
# the browser tests' live server): a pool of 4 makes them queue for connections on a busy machine.
if "pool" in DATABASES["default"].get("OPTIONS", {}):  # noqa: F405
    DATABASES["default"]["OPTIONS"]["pool"] = {**DATABASES["default"]["OPTIONS"]["pool"], "max_size": 16}  # noqa: F405
