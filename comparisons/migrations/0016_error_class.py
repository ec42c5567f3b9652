"""comparisons_error_class(error): the class of an inference's error (timeout, rate limit, malformed
judge answer, scorer error, the exception's type), for the comparison's failure analysis and its
`filter=error:<class>`. Going back drops the function.
"""

from django.db import migrations

from comparisons.sqlfunctions import all_sql

# The files this migration applied (tests/test_sql_functions.py): a later change needs a new migration.
SQL_FINGERPRINT = "e4daed328c045e9f"


class Migration(migrations.Migration):

    dependencies = [
        ("comparisons", "0015_run_running_since"),
    ]

    operations = [
        migrations.RunSQL(all_sql(), "DROP FUNCTION IF EXISTS comparisons_error_class(text);\n"),
    ]
