"""Drop three foreign-key indexes that other indexes already cover.

`inference.run_id` is the first column of the unique (run, datapoint) index, `feedback.inference_id`
the first column of feedback_latest_idx, and `inference.datapoint_id` has inference_datapoint_idx:
the copies cost space and every insert, and tempted the planner into bitmap scans of a whole run.
Only the indexes go; the constraints stay as they are (Django's AlterField would drop and
re-validate them over every row).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("comparisons", "0007_run_coverage"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "comparisons_feedback_inference_id_998f3b79";\n'
                    'DROP INDEX IF EXISTS "comparisons_inference_run_id_f07f2b4c";\n'
                    'DROP INDEX IF EXISTS "comparisons_inference_datapoint_id_178505ff";',
                    'CREATE INDEX IF NOT EXISTS "comparisons_feedback_inference_id_998f3b79" '
                    'ON "comparisons_feedback" ("inference_id");\n'
                    'CREATE INDEX IF NOT EXISTS "comparisons_inference_run_id_f07f2b4c" '
                    'ON "comparisons_inference" ("run_id");\n'
                    'CREATE INDEX IF NOT EXISTS "comparisons_inference_datapoint_id_178505ff" '
                    'ON "comparisons_inference" ("datapoint_id");',
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="feedback",
                    name="inference",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="feedback", to="comparisons.inference"),
                ),
                migrations.AlterField(
                    model_name="inference",
                    name="datapoint",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                            related_name="inferences", to="comparisons.datapoint"),
                ),
                migrations.AlterField(
                    model_name="inference",
                    name="run",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="inferences", to="comparisons.evaluationrun"),
                ),
            ],
        ),
    ]
