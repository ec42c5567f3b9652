"""The embedded PostgreSQL: two processes starting it at once share one server that survives them."""

import subprocess
import sys

from pgserver._commands import pg_ctl

SCRIPT = """
import sys
from pathlib import Path
import psycopg
from evalcompare.embedded_db import embedded_database_url
url = embedded_database_url(Path(sys.argv[1]))
with psycopg.connect(url) as conn:
    print(url, conn.execute("select 41 + 1").fetchone()[0])
"""


def test_two_processes_starting_at_once_share_one_server(tmp_path):
    data_dir = tmp_path / "pgdata"
    starts = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(data_dir)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        results = [p.communicate(timeout=120) for p in starts]
        assert [p.returncode for p in starts] == [0, 0], [err for _, err in results]
        lines = [out.strip() for out, _ in results]
        assert lines[0] == lines[1] and lines[0].endswith(" 42")
        # A later process reuses the running server (nothing new is initialised).
        again = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir)], capture_output=True, text=True,
                               timeout=60)
        assert again.stdout.strip() == lines[0]
    finally:
        pg_ctl(["-w", "stop", "-m", "immediate"], pgdata=data_dir, user="pgserver")
