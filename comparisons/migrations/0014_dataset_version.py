"""A version per dataset, bumped by the database in every transaction that writes the dataset's
datapoints, inferences or feedback (comparisons_data_changed): the key of the comparison's cached
rows (comparisons/rows_cache.py). Going back drops the triggers, the function and the table.
"""

from django.db import migrations, models

from comparisons.sqlfunctions import all_sql

# The files this migration applied (tests/test_sql_functions.py): a later change needs a new migration.
SQL_FINGERPRINT = "6f5e086f1984342c"

BACKWARD = "".join(
    f"DROP TRIGGER IF EXISTS comparisons_{table}_changed_{event} ON comparisons_{table};\n"
    for table in ("datapoint", "inference", "feedback") for event in ("insert", "update", "delete")
) + "DROP FUNCTION IF EXISTS comparisons_data_changed();\n"


class Migration(migrations.Migration):

    dependencies = [
        ("comparisons", "0013_run_queue"),
    ]

    operations = [
        migrations.CreateModel(
            name="DatasetVersion",
            fields=[
                ("dataset_id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("version", models.BigIntegerField()),
            ],
            options={"verbose_name": "dataset version"},
        ),
        migrations.RunSQL(all_sql(), BACKWARD),
    ]
