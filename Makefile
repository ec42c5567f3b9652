# `make demo` and `make test` do everything on a fresh machine; both are quick when already set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MANAGE := $(BIN)/python manage.py

.PHONY: setup demo test lint benchmark clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "evalcompare needs Python 3.11 or newer (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# The worker runs beside the web server (portal-launched runs); Ctrl-C or the end of runserver stops it.
# The demo's LLM judges are scored by an offline stand-in unless EVALCOMPARE_JUDGE_STANDIN says otherwise
# (set it empty to call the real judge at OPENAI_BASE_URL).
demo: setup
	DEBUG=1 $(MANAGE) migrate --noinput
	DEBUG=1 $(MANAGE) load_demo
	@export DEBUG=1 EVALCOMPARE_JUDGE_STANDIN="$${EVALCOMPARE_JUDGE_STANDIN-comparisons.demo_tasks:offline_judge}"; \
	$(MANAGE) procrastinate worker --queues runs --shutdown-graceful-timeout 2 & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(MANAGE) runserver 127.0.0.1:8000

test: setup
	scripts/ensure-chromium
	$(BIN)/ruff check .
	$(BIN)/pytest

# `make benchmark ARGS="--scale small --json perf.json"`; needs no SECRET_KEY of yours.
benchmark: setup
	SECRET_KEY=$${SECRET_KEY:-benchmark-only-not-a-secret} $(MANAGE) benchmark $(ARGS)

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pgdata
