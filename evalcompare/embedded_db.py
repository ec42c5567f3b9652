"""The embedded PostgreSQL used when DATABASE_URL is not set.

`pgserver` ships PostgreSQL binaries inside a Python wheel, so a fresh machine needs nothing
installed. The server keeps running after the process that started it exits (cleanup_mode=None),
so later commands reuse it instantly; pgserver serialises start-up with an inter-process file
lock, so two processes starting at once (runserver's autoreloader, tests beside a running server)
both end up connected to the same single server.
"""

import logging
import os
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir` and return its connection URL."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset (as under CI); the fallback it picks is fine.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data_dir, cleanup_mode=None)
        return server.get_uri()
