"""The test database as a DATABASE_URL, for subprocesses (commands, notebook kernels) to reach it."""

from urllib.parse import quote

from django.db import connection


def subprocess_database_url() -> str:
    settings_dict = connection.settings_dict
    return (f"postgresql://{quote(settings_dict['USER'] or 'postgres')}@/{settings_dict['NAME']}"
            f"?host={quote(settings_dict['HOST'] or 'localhost', safe='/')}&port={settings_dict['PORT'] or 5432}")
