# evalcompare's container image: the wheel built from this tree, installed in a virtualenv on a slim
# Python 3.11 base, run as a non-root user. `docker-entrypoint` takes serve (default), migrate, worker,
# healthcheck, or any manage.py command; see the README's "Deploy" section.
#
#   docker build -t evalcompare:dev .
#   docker build --build-arg BASE_IMAGE=localhost/evalcompare-base:bookworm -t evalcompare:dev .   # no registry
#
# Any Debian-based image with python3 (3.11 or newer) and its venv module works as BASE_IMAGE;
# scripts/build-base-image makes one from Debian's packages alone.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --quiet --upgrade pip
# Dependencies first, from pyproject.toml alone, so a code change reuses this layer.
COPY pyproject.toml /src/pyproject.toml
RUN /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt
COPY . /src
RUN /opt/venv/bin/pip wheel --quiet --no-deps --wheel-dir /dist /src \
 && /opt/venv/bin/pip install --quiet --no-deps /dist/evalcompare-*.whl \
 && /opt/venv/bin/pip check

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="evalcompare" \
      org.opencontainers.image.description="A team portal to run LLM evaluations and compare runs side by side."
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    STATIC_ROOT=/app/static \
    EVALCOMPARE_RELEASES_DIR=/app/releases \
    HOME=/home/evalcompare
# The code and static files are read-only to the user; its home is writable (gunicorn's control socket).
RUN groupadd --system --gid 10001 evalcompare \
 && useradd --system --uid 10001 --gid evalcompare --create-home --home-dir /home/evalcompare \
      --shell /usr/sbin/nologin evalcompare
COPY --from=build /opt/venv /opt/venv
COPY scripts/docker-entrypoint /usr/local/bin/docker-entrypoint
# The manifests of earlier releases, for `docker-entrypoint rollback X.Y.Z`.
COPY releases /app/releases
WORKDIR /app
# Static files are collected (hashed and compressed) at build time; settings need a key and a
# database URL to load, but collectstatic touches no database.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=postgresql://collectstatic@localhost/unused \
      evalcompare collectstatic --noinput --verbosity 0 \
 && chown -R root:root /app && chmod -R a+rX /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["docker-entrypoint", "healthcheck"]
ENTRYPOINT ["docker-entrypoint"]
CMD ["serve"]
