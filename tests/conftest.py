import pytest

from tests.factories import EvaluationFactory, EvaluatorFactory, UserFactory
from tests.worker_process import workers  # noqa: F401 -- the fixture, for every test module


@pytest.fixture
def user(db):
    return UserFactory(username="analyst")


@pytest.fixture
def reviewer(db):
    """A user in the Reviewers group: may correct values."""
    from comparisons.reviewers import reviewers_group

    reviewer = UserFactory(username="reviewer")
    reviewer.groups.add(reviewers_group())
    return reviewer


@pytest.fixture
def client_reviewer(client, reviewer):
    client.force_login(reviewer)
    return client


@pytest.fixture
def staff_user(db):
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def client_logged_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def admin_client_logged_in(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def evaluation(db):
    """Evaluation "qa" with a boolean metric `correct` and a float metric `similarity`."""
    evaluation = EvaluationFactory(name="qa")
    EvaluatorFactory(evaluation=evaluation, name="correct")
    EvaluatorFactory(evaluation=evaluation, name="similarity", value_type="float")
    return evaluation
