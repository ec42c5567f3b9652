"""Settings for evalcompare, read from the environment.

DEBUG=1 turns on development mode (and a development SECRET_KEY). DATABASE_URL selects a
PostgreSQL server; without it an embedded PostgreSQL starts in .pgdata/ (see embedded_db.py).
"""

import ipaddress
import os
from datetime import timedelta
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


def env_int(name: str, default: int, *, minimum: int) -> int:
    """A whole number ≥ `minimum` from the environment, or a clear ImproperlyConfigured naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) < minimum:
        raise ImproperlyConfigured(f"{name} must be a whole number ≥ {minimum} (got {value!r}).")
    return int(value)


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
    # Security and operations (issue #12): CSP, login throttling.
    "csp",
    "axes",
]

MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer before the host check and the HTTPS redirect, so a
    # container health check or a scraper over plain HTTP on the internal network gets its answer.
    "evalcompare.ops.OpsEndpointsMiddleware",
    "evalcompare.ops.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (hashed, compressed) are answered here, before sessions and the rest.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "evalcompare.cache_headers.PrivateNoStoreMiddleware",
    # Before sessions, CSRF and every view: control characters in the URL or a form get a 400.
    "evalcompare.middleware.ControlCharacterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: turns a locked-out login into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "evalcompare.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent / "templates"],  # inside the package, so the wheel has them
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

# Database: DATABASE_URL, any PostgreSQL URL. The embedded PostgreSQL (embedded_db.py) is for
# development only: it starts when DEBUG=1 or EVALCOMPARE_EMBEDDED_DB=1 and DATABASE_URL is unset.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    if not (DEBUG or env_flag("EVALCOMPARE_EMBEDDED_DB", False)):
        raise ImproperlyConfigured(
            "DATABASE_URL is not set. Set DATABASE_URL to a PostgreSQL URL "
            "(postgresql://user:password@host:5432/name), or EVALCOMPARE_EMBEDDED_DB=1 (or DEBUG=1) "
            "to start the embedded development PostgreSQL."
        )
    from evalcompare.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(Path(os.environ.get("PGDATA_DIR", BASE_DIR / ".pgdata")))
if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    raise ImproperlyConfigured("DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:port/name).")
# Django's psycopg connection pool, per process: at most DATABASE_POOL_SIZE connections, so a server holds
# at most gunicorn workers × pool size. A sync worker serves one request at a time on one connection;
# a CSV export borrows 3 more for its prefetching threads, hence 4. 0 turns the pool off (persistent
# connections instead). With health checks on, the pool checks a connection before lending it, so one
# broken by a database restart is replaced rather than handed to a request.
DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 4, minimum=0)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0 if DATABASE_POOL_SIZE else 60,
                                              conn_health_checks=True)}
# A socket directory given as ?host=... (the embedded server's URL) belongs in HOST like any host.
_options = DATABASES["default"].setdefault("OPTIONS", {})  # absent for a plain URL without ?options
if "host" in _options and not DATABASES["default"]["HOST"]:
    DATABASES["default"]["HOST"] = _options.pop("host")
    DATABASES["default"]["PORT"] = _options.pop("port", "")
if DATABASE_POOL_SIZE:
    # Connections open on demand (min_size 0: a sync worker then holds exactly one; with a connection
    # opened up front, the first request would open a second beside it) and close after 10 idle
    # minutes. A request waits up to 10 s for a free connection, then fails rather than hang its worker.
    _options["pool"] = {"min_size": 0, "max_size": DATABASE_POOL_SIZE, "timeout": 10}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The comparison's rendered rows, cached in each web process's memory under a key that changes with
# every write to the dataset (comparisons/rows_cache.py): 50 people on one comparison cost one render
# per process. COMPARISON_ROWS_CACHE_ENTRIES=0 turns it off; a page of 5 runs is about 150 kB.
COMPARISON_ROWS_CACHE_ENTRIES = env_int("COMPARISON_ROWS_CACHE_ENTRIES", 300, minimum=0)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "comparison_rows": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "comparison-rows",
        "TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": COMPARISON_ROWS_CACHE_ENTRIES, "CULL_FREQUENCY": 4},
    } if COMPARISON_ROWS_CACHE_ENTRIES else {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
}

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

# Static files: `collectstatic` writes them, with content-hashed names and gzip copies, to
# STATIC_ROOT (default: staticfiles/ in the checkout); WhiteNoise serves them from there, hashed names
# cached for a year. With DEBUG=1 they are served unhashed from the apps' static/ folders.
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

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


# --- Security and operations (issue #12) ---------------------------------------------------------

# Content-Security-Policy (django-csp 4): everything from this origin only; no inline script or style,
# no eval (htmx's allowEval is off), no plugins, no framing. The charts are inline SVG with attributes.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}


# Login throttling (django-axes): after EVALCOMPARE_LOGIN_FAILURE_LIMIT failed logins for one username
# from one client IP, that pair is refused (429, the lock-out page) for EVALCOMPARE_LOGIN_COOLOFF_MINUTES,
# right password or not; each attempt during the lock-out starts the cool-off again. A successful login
# clears the count. Reset by hand: `manage.py axes_reset_username NAME` (or axes_reset, axes_reset_ip).
AUTHENTICATION_BACKENDS = [
    "evalcompare.throttling.LoginThrottleBackend",  # axes' AxesStandaloneBackend for requests
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("EVALCOMPARE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("EVALCOMPARE_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The client IP: REMOTE_ADDR, or behind EVALCOMPARE_TRUSTED_PROXIES proxies that each append to
# X-Forwarded-For, the address the outermost of them saw (see evalcompare/throttling.py).
EVALCOMPARE_TRUSTED_PROXIES = env_int("EVALCOMPARE_TRUSTED_PROXIES", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "evalcompare.throttling.client_ip"
AXES_USERNAME_CALLABLE = "evalcompare.throttling.login_username"

# /healthz, /readyz and /metrics are answered before SecurityMiddleware (evalcompare.ops), so the HTTPS
# redirect never reaches them; the exemption keeps it so should the middleware order change.
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)/?$"]

# With several worker processes (gunicorn), PROMETHEUS_MULTIPROC_DIR is where each writes its request
# metrics for any worker's /metrics to sum; it must exist before the first request is measured.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

# /metrics: off (404) unless a bearer token or an IP allowlist (addresses or networks, matched against
# the direct peer, REMOTE_ADDR) is set; with both, a scrape must pass both.
METRICS_TOKEN = os.environ.get("EVALCOMPARE_METRICS_TOKEN", "")
try:
    METRICS_ALLOW = [ipaddress.ip_network(item, strict=False) for item in env_list("EVALCOMPARE_METRICS_ALLOW")]
except ValueError as error:
    raise ImproperlyConfigured(
        f"EVALCOMPARE_METRICS_ALLOW: {error} (give addresses or networks, comma-separated).") from error
