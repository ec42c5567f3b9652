"""Fast bulk writes with PostgreSQL COPY through psycopg, for the runner, imports and the benchmark.

Django's bulk_create builds a model instance and SQL per row in Python; COPY streams tuples that
psycopg encodes in C. Rows go through the same table constraints and triggers as any insert.
"""

from django.db import connection
from psycopg.types.json import Jsonb


def copy_rows(model, fields: list[str], rows) -> int:
    """COPY `rows` (tuples in `fields` order; dicts/lists for JSON fields) into `model`'s table.

    `fields` are model field names (`run` or `run_id` for a foreign key). Returns the row count.
    Runs in the caller's transaction.
    """
    columns, json_positions = [], []
    for position, name in enumerate(fields):
        field = model._meta.get_field(name.removesuffix("_id") if name.endswith("_id") else name)
        columns.append(field.column)
        if field.get_internal_type() == "JSONField":
            json_positions.append(position)
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(c) for c in columns)
    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
        for row in rows:
            if json_positions:
                row = list(row)
                for position in json_positions:
                    row[position] = Jsonb(row[position])
            copy.write_row(row)
            count += 1
    return count
