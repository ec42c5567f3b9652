from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_reviewers_group(sender, using="default", apps=None, **kwargs):
    """After every `migrate`, the Reviewers group exists with the permission to correct values (the
    permission itself is created by post_migrate too, so this runs after auth's handler)."""
    from comparisons.reviewers import reviewers_group

    try:
        if apps is not None:
            apps.get_model("comparisons", "Feedback")
    except LookupError:  # comparisons is not migrated (yet, or rolled back to zero): nothing to grant
        return

    reviewers_group()


def _ensure_launchers_group(sender, using="default", apps=None, **kwargs):
    """After every `migrate`, the Launchers group exists with the permission to launch, stop and resume runs."""
    from comparisons.launch import launchers_group

    if apps is not None:
        try:
            run = apps.get_model("comparisons", "EvaluationRun")
        except LookupError:  # comparisons is not migrated (yet, or rolled back to zero): nothing to grant
            return
        if "launch_run" not in dict(run._meta.permissions):  # rolled back to before the permission (0013)
            return
    launchers_group()


class ComparisonsConfig(AppConfig):
    name = "comparisons"
    verbose_name = "Evaluations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(_ensure_reviewers_group, sender=self, dispatch_uid="comparisons-reviewers-group")
        post_migrate.connect(_ensure_launchers_group, sender=self, dispatch_uid="comparisons-launchers-group")
