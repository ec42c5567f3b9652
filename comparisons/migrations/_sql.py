"""For migrations that replace SQL functions: going backwards puts the earlier definition back.

Django's migration loader skips modules whose names start with an underscore, so this is no migration.
"""

import importlib


def previous_definition(migration: str, function: str) -> str:
    """The CREATE statement of `function` in `migration`'s FORWARD SQL, as CREATE OR REPLACE."""
    sql = importlib.import_module(f"comparisons.migrations.{migration}").FORWARD
    start = sql.rindex("CREATE", 0, sql.index(f"FUNCTION {function}("))
    end = sql.index("$$;", start) + 3
    return sql[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")
