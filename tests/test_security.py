"""Content-Security-Policy header and login throttling (django-axes)."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from evalcompare.throttling import client_ip
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LOCKED = "Too many failed logins"


def test_every_page_carries_a_strict_content_security_policy(client_logged_in, evaluation):
    for url in (reverse("login"), reverse("evaluation_list"), reverse("comparison_detail", args=["qa"])):
        policy = client_logged_in.get(url)["Content-Security-Policy"]
        directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
    assert "Content-Security-Policy" in client_logged_in.get("/admin/")


def log_in(client, username, password=PASSWORD, url=None, **extra):
    return client.post(url or reverse("login"), {"username": username, "password": password}, **extra)


def assert_locked_out(response, username="analyst"):
    assert response.status_code == 429
    page = response.content.decode()
    assert LOCKED in page and f"<strong>{username}</strong>" in page
    assert "15 minutes" in page and "evalcompare.css" in page  # the styled page, not a bare text
    assert "Traceback" not in page


def test_thirty_wrong_passwords_lock_the_login_even_for_the_right_password(client, user):
    statuses = [log_in(client, "analyst", "wrong").status_code for _ in range(30)]
    assert statuses == [200] * 4 + [429] * 26
    assert_locked_out(log_in(client, "analyst"))
    assert client.get(reverse("evaluation_list")).status_code == 302  # not logged in
    # The admin's login is the same lock.
    assert_locked_out(log_in(client, "analyst", url="/admin/login/?next=/admin/"))


def test_after_the_cool_off_the_right_password_logs_in(client, user):
    for _ in range(5):
        log_in(client, "analyst", "wrong")
    assert_locked_out(log_in(client, "analyst"))
    # Time travel: the last attempt was longer ago than the cool-off.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = log_in(client, "analyst")
    assert response.status_code == 302 and response.url == reverse("evaluation_list")
    assert client.get(reverse("evaluation_list")).status_code == 200


def test_the_lock_is_for_one_username_from_one_address(client, user):
    UserFactory(username="colleague")
    for _ in range(5):
        log_in(client, "analyst", "wrong")
    assert_locked_out(log_in(client, "analyst"))
    assert log_in(client, "colleague").status_code == 302
    client.logout()
    assert log_in(client, "analyst", REMOTE_ADDR="10.1.2.3").status_code == 302


def test_a_success_before_the_limit_clears_the_count(client, user):
    for _ in range(4):
        log_in(client, "analyst", "wrong")
    assert log_in(client, "analyst").status_code == 302
    client.logout()
    assert [log_in(client, "analyst", "wrong").status_code for _ in range(4)] == [200] * 4


@override_settings(AXES_FAILURE_LIMIT=2, AXES_COOLOFF_TIME=timedelta(minutes=90))
def test_limit_and_cool_off_come_from_the_settings(client, user):
    assert [log_in(client, "analyst", "wrong").status_code for _ in range(2)] == [200, 429]
    assert "1 hour 30 minutes" in log_in(client, "analyst").content.decode()


def test_an_administrator_resets_the_lock(client, user):
    for _ in range(5):
        log_in(client, "analyst", "wrong")
    call_command("axes_reset_username", "analyst")
    assert log_in(client, "analyst").status_code == 302


@pytest.mark.parametrize(
    ("trusted", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.1"),  # no proxy trusted: the header is the client's word, ignored
        (1, "198.51.100.7, 203.0.113.9", "203.0.113.9"),  # the one proxy appended what it saw
        (2, "198.51.100.7, 203.0.113.9", "198.51.100.7"),
        (2, "203.0.113.9", "10.0.0.1"),  # fewer entries than proxies: not through them, the peer
    ],
)
def test_client_ip_behind_trusted_proxies(settings, trusted, forwarded, expected):
    settings.EVALCOMPARE_TRUSTED_PROXIES = trusted
    request = RequestFactory().post("/login/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_behind_a_proxy_clients_are_locked_apart(client, user, settings):
    settings.EVALCOMPARE_TRUSTED_PROXIES = 1
    for _ in range(5):
        log_in(client, "analyst", "wrong", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert_locked_out(log_in(client, "analyst", HTTP_X_FORWARDED_FOR="203.0.113.9"))
    assert log_in(client, "analyst", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 302


def test_an_overlong_username_is_refused_and_throttled_like_any_other(client):
    # Django's login forms do not bound the username; axes keeps 255 characters of it.
    name = "x" * 1000
    statuses = [log_in(client, name, "wrong").status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]
    assert_locked_out(log_in(client, name, url="/admin/login/"), username="x" * 255)


def test_logins_without_a_request_are_not_throttled_nor_refused(client, user):
    # Client.login() and scripts call authenticate() without a request: there is no client to throttle.
    assert client.login(username="analyst", password=PASSWORD)
    assert authenticate(username="analyst", password=PASSWORD) == user
    assert authenticate(username="analyst", password="wrong") is None
    assert not AccessAttempt.objects.exists()
