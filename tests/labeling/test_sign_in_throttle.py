"""Wrong passwords lock an account from the address they came from, for a while, and the page says until when."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse
from django.utils import timezone

from labeling.views.people import client_address

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)


def sign_in(client, username, password, address="10.0.0.1", url=LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(client, username, times, address="10.0.0.1"):
    return [sign_in(client, username, "wrong", address) for _ in range(times)][-1]


def is_signed_in(client):
    return "_auth_user_id" in client.session


def test_wrong_passwords_below_the_limit_show_the_usual_error(client, labeler):
    response = fail(client, "alice", 2)
    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode()


def test_the_limit_of_wrong_passwords_locks_the_account_and_says_until_when(client, labeler):
    response = fail(client, "alice", 3)
    assert response.status_code == 429
    page = response.content.decode()
    until = AccessAttempt.objects.get(username="alice").attempt_time + timedelta(minutes=15)
    assert "Too many failed sign-ins to alice" in page
    assert f"until {timezone.localtime(until):%H:%M} UTC" in page
    assert "in 14\xa0minutes" in page or "in 15\xa0minutes" in page
    assert 'name="username"' in page and 'value="alice"' in page  # still the sign-in page, to try again later


def test_the_right_password_during_the_lockout_is_refused_and_does_not_extend_it(client, labeler):
    fail(client, "alice", 3)
    first = AccessAttempt.objects.get(username="alice").attempt_time
    response = sign_in(client, "alice", "password")
    assert response.status_code == 429 and not is_signed_in(client)
    assert AccessAttempt.objects.get(username="alice").attempt_time == first


def test_another_account_from_the_same_address_is_not_locked(client, labeler, other_labeler):
    fail(client, "alice", 3)
    response = sign_in(client, "bob", "password")
    assert response.status_code == 302 and is_signed_in(client)


def test_the_same_account_from_another_address_is_not_locked(client, labeler):
    fail(client, "alice", 3, address="10.0.0.1")
    response = sign_in(client, "alice", "password", address="10.0.0.2")
    assert response.status_code == 302 and is_signed_in(client)


def test_the_lock_lifts_after_the_cool_off(client, labeler):
    fail(client, "alice", 3)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=15, seconds=1))
    response = sign_in(client, "alice", "password")
    assert response.status_code == 302 and is_signed_in(client)


def test_a_successful_sign_in_clears_earlier_failures(client, labeler):
    fail(client, "alice", 2)
    assert sign_in(client, "alice", "password").status_code == 302
    client.logout()
    assert fail(client, "alice", 2).status_code == 200  # counting starts again


def test_the_admin_sign_in_is_throttled_too(client, admin_user):
    for _ in range(3):
        response = sign_in(client, "ada", "wrong", url=reverse("admin:login"))
    assert response.status_code == 429
    assert sign_in(client, "ada", "password", url=reverse("admin:login")).status_code == 429
    assert not is_signed_in(client)


def test_behind_the_https_proxy_failures_count_against_the_address_it_forwarded(settings, rf):
    request = rf.post(LOGIN, REMOTE_ADDR="172.17.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7")
    assert client_address(request) == "172.17.0.1"  # a header anyone can send is not trusted by default
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert client_address(request) == "203.0.113.7"  # the proxy appends the address it saw; the rest is hearsay


def test_the_api_token_page_takes_no_password_so_it_needs_no_throttle(client, labeler):
    client.force_login(labeler)
    page = client.get(reverse("api-token")).content.decode()
    assert 'type="password"' not in page
