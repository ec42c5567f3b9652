# `make demo` and `make test` do everything on a fresh machine; both are quick when already set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MANAGE := $(BIN)/python manage.py

.PHONY: setup demo test lint benchmark clean static release-check release rollback

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

# `make benchmark ARGS="--scale small --json perf.json"`; needs no SECRET_KEY of yours. Without
# DATABASE_URL it runs on the embedded PostgreSQL, as make demo and make test do.
benchmark: setup
	SECRET_KEY=$${SECRET_KEY:-benchmark-only-not-a-secret} EVALCOMPARE_EMBEDDED_DB=1 $(MANAGE) benchmark $(ARGS)

# The production build step: static files with hashed names and compressed copies into STATIC_ROOT
# (default staticfiles/), which WhiteNoise serves. Needs no database and no SECRET_KEY of yours.
static: setup
	SECRET_KEY=$${SECRET_KEY:-collectstatic-needs-no-secret} DATABASE_URL=$${DATABASE_URL:-postgresql://unused/unused} \
		$(BIN)/evalcompare collectstatic --noinput

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pgdata staticfiles

# --- Releases (README "Deploy"): image smoke test, versioned release, rollback -------------------
# `make release-check`: build the wheel and the image, smoke-test the image's filesystem in a chroot
# (root, podman and debootstrap needed). IMAGE=evalcompare:x.y.z to tag it otherwise.
release-check: setup
	scripts/release-check

# `make release VERSION=x.y.z`: refuses a dirty tree or failing tests; commits, tags, builds, writes releases/x.y.z.json.
release: setup
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z" >&2; exit 2; }
	$(BIN)/python -m evalcompare.release $(VERSION) $(RELEASE_ARGS)

# `make rollback TO=x.y.z`: migrates the database back to that release and prints the image to redeploy.
rollback: setup
	@test -n "$(TO)" || { echo "usage: make rollback TO=x.y.z (a release with a manifest in releases/)" >&2; exit 2; }
	$(MANAGE) rollback $(TO)
