"""Settings for evalcompare, read from the environment.

DEBUG=1 turns on development mode (and a development SECRET_KEY). DATABASE_URL selects a
PostgreSQL server; without it an embedded PostgreSQL starts in .pgdata/ (see embedded_db.py).
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from evalcompare.prices import parse_model_prices
from evalcompare.registered_tasks import parse_callable_path, parse_tasks

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = os.environ.get("DEBUG", "0").lower() in {"1", "true", "yes", "on"}

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment, or DEBUG=1 for development."
        )
    SECRET_KEY = "django-insecure-development-key-only-used-when-DEBUG-is-on"

# USD per million input/output tokens per model, for the runner's task and judge costs: the
# defaults in evalcompare/prices.py updated by this JSON. Validated here, before the database
# starts, so a bad value stops every command at once with the offending entry.
MODEL_PRICES = parse_model_prices(os.environ.get("EVALCOMPARE_MODEL_PRICES"))

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None or value == "" else value.lower() in {"1", "true", "yes", "on"}


# HTTPS: on by default in production (DEBUG off), off in development. Behind a proxy that ends TLS,
# set SECURE_PROXY_SSL_HEADER=1 so Django trusts its X-Forwarded-Proto header.
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_flag("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_flag("CSRF_COOKIE_SECURE", not DEBUG)
try:
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS") or (0 if DEBUG else 31_536_000))
except ValueError as error:
    raise ImproperlyConfigured("SECURE_HSTS_SECONDS must be a whole number of seconds.") from error
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_flag("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_flag("SECURE_HSTS_PRELOAD", not DEBUG)
if env_flag("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "procrastinate.contrib.django",
    "comparisons",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before sessions, CSRF and every view: control characters in the URL or a form get a 400.
    "evalcompare.middleware.ControlCharacterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "evalcompare.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials", "comparisons.templatetags.comparisons"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "evalcompare.wsgi.application"

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    from evalcompare.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(Path(os.environ.get("PGDATA_DIR", BASE_DIR / ".pgdata")))
if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:port/name).")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
# A socket directory given as ?host=... (the embedded server's URL) belongs in HOST like any host.
_options = DATABASES["default"].setdefault("OPTIONS", {})  # absent for a plain URL without ?options
if "host" in _options and not DATABASES["default"]["HOST"]:
    DATABASES["default"]["HOST"] = _options.pop("host")
    DATABASES["default"]["PORT"] = _options.pop("port", "")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "evaluation_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# Public base URL used in links printed by commands (e.g. the runner's comparison URL).
PUBLIC_URL = os.environ.get("EVALCOMPARE_URL", "http://127.0.0.1:8000").rstrip("/")

# LLM judge and --openai-model defaults (any OpenAI-compatible chat-completions endpoint).
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")

# Python tasks the portal's "New run" form offers, by name: {"name": "module:function"} (JSON in the
# environment). Validated here; workers import only these. With DEBUG=1 (`make demo`) the default is
# the demo's offline model stand-in.
EVALCOMPARE_TASKS = parse_tasks(os.environ.get("EVALCOMPARE_TASKS"),
                                default={"demo-offline": "comparisons.demo_tasks:offline_model"} if DEBUG else {})
# A "module:function" scorer that stands in for every llm_judge evaluator of portal runs (no API key
# needed); empty: judges call their OpenAI-compatible endpoint. `make demo` sets the demo's stand-in.
EVALCOMPARE_JUDGE_STANDIN = parse_callable_path("EVALCOMPARE_JUDGE_STANDIN",
                                                os.environ.get("EVALCOMPARE_JUDGE_STANDIN", ""))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
