"""Each run records its evaluators as they were when it was created (EvaluationRun.evaluator_snapshot);
runs made before stay null ("not recorded"). Going back drops the column."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("comparisons", "0016_error_class"),
    ]

    operations = [
        migrations.AddField(
            model_name="evaluationrun",
            name="evaluator_snapshot",
            field=models.JSONField(
                blank=True, editable=False, null=True,
                help_text="Every evaluator of the evaluation as it was when the run was created "
                          "(`evaluator_snapshot()`); null for runs recorded before snapshots existed."),
        ),
    ]
