"""Names: the validator matches the whole string (\\A...\\Z; "$" let a trailing line break through) and
refuses names that are only dots. Validators live in Python only: no SQL runs, either way."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('comparisons', '0009_exact_kept_tables'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dataset',
            name='name',
            field=models.CharField(max_length=200, unique=True, validators=[django.core.validators.RegexValidator('\\A(?!\\.+\\Z)[A-Za-z0-9_.:-]+\\Z', 'Use letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).')]),
        ),
        migrations.AlterField(
            model_name='evaluation',
            name='name',
            field=models.CharField(max_length=200, unique=True, validators=[django.core.validators.RegexValidator('\\A(?!\\.+\\Z)[A-Za-z0-9_.:-]+\\Z', 'Use letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).')]),
        ),
        migrations.AlterField(
            model_name='evaluator',
            name='name',
            field=models.CharField(max_length=200, validators=[django.core.validators.RegexValidator('\\A(?!\\.+\\Z)[A-Za-z0-9_.:-]+\\Z', 'Use letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).')]),
        ),
        migrations.AlterField(
            model_name='function',
            name='name',
            field=models.CharField(max_length=200, unique=True, validators=[django.core.validators.RegexValidator('\\A(?!\\.+\\Z)[A-Za-z0-9_.:-]+\\Z', 'Use letters, digits and _ . : - only, and not only dots (the name appears in URLs and file names).')]),
        ),
    ]
