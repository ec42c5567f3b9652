"""EvaluationRun.heartbeat_at: refreshed while a run runs, so that a run left `running` by a killed
process shows as interrupted. A nullable column: no rewrite of the table, no SQL of ours."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('comparisons', '0010_name_validator_whole_string'),
    ]

    operations = [
        migrations.AddField(
            model_name='evaluationrun',
            name='heartbeat_at',
            field=models.DateTimeField(blank=True, help_text='Refreshed while the run runs; a stale one means its process was killed.', null=True),
        ),
    ]
