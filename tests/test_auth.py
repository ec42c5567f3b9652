import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_portal_pages_require_login(client):
    response = client.get(reverse("evaluation_list"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_login_page_is_styled_and_logs_in(client, user):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert "Log in to evalcompare" in page.content.decode()
    response = client.post(reverse("login"), {"username": "analyst", "password": "correct-horse-battery"})
    assert response.status_code == 302 and response.url == reverse("evaluation_list")
    assert client.get(reverse("evaluation_list")).status_code == 200


def test_wrong_password_shows_an_error(client, user):
    response = client.post(reverse("login"), {"username": "analyst", "password": "nope"})
    assert response.status_code == 200
    assert "Your username and password didn't match" in response.content.decode()
