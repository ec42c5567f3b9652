"""Who may correct metric values: users with `comparisons.add_feedback`, usually through the Reviewers group."""

from django.contrib.auth.models import Group, Permission

CORRECT_PERMISSION = "comparisons.add_feedback"
REVIEWERS_GROUP = "Reviewers"


def can_correct(user) -> bool:
    """Whether `user` may correct a metric value or revert a correction."""
    return user.has_perm(CORRECT_PERMISSION)


def reviewers_group() -> Group:
    """The Reviewers group, holding the permission to correct values (created when missing)."""
    group, _ = Group.objects.get_or_create(name=REVIEWERS_GROUP)
    app_label, codename = CORRECT_PERMISSION.split(".")
    group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group
