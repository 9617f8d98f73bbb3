"""Every API error is a JSON object with a `detail` sentence, never Django's HTML page."""

import logging

import pytest
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.test import Client
from rest_framework.test import APIRequestFactory

from labeling import selectors
from labeling.api import middleware
from labeling.api.exceptions import exception_handler
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher):
    return api_client_for(researcher)


def test_an_unknown_api_url_is_a_json_404(api):
    response = api.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "There is no API endpoint at /api/no-such-thing/; the list is at /api/docs/."}


def test_an_unknown_page_is_still_an_html_404(as_researcher):
    response = as_researcher.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert b"There is nothing at this address" in response.content


def test_a_method_an_endpoint_does_not_take_is_a_json_405(api):
    response = api.delete("/api/prompts/")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.'}


def test_an_unsupported_media_type_stays_a_json_415(api):
    response = api.post("/api/prompts/", "prompts=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json() == {"detail": 'Unsupported media type "application/x-www-form-urlencoded" in request.'}


def test_an_unexpected_error_in_an_api_view_is_a_json_500_whose_id_is_in_the_log(api, monkeypatch, caplog):
    def broken():
        raise RuntimeError("the statistics query failed")

    monkeypatch.setattr(selectors, "dataset_statistics", broken)
    with caplog.at_level(logging.ERROR, logger="labeling.api.exceptions"):
        response = api.get("/api/stats/")
    assert response.status_code == 500
    body = response.json()
    error_id = body["error_id"]
    assert len(error_id) == 12
    assert body["detail"] == f"Something went wrong on our side; it has been logged as error {error_id}."
    [record] = [r for r in caplog.records if r.name == "labeling.api.exceptions"]
    assert record.error_id == error_id and error_id in record.getMessage()
    assert "the statistics query failed" in str(record.exc_info[1])


def test_an_unexpected_error_outside_a_view_under_api_is_a_json_500_with_an_id(researcher, monkeypatch, caplog):
    def broken(self, request):
        raise RuntimeError("the guard broke")

    monkeypatch.setattr(middleware.ApiInputGuard, "check", broken)
    client = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="labeling.api.exceptions"):
        response = client.get("/api/stats/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    error_id = response.json()["error_id"]
    assert any(getattr(r, "error_id", None) == error_id for r in caplog.records)


def test_a_server_error_on_a_page_is_still_html(as_researcher, monkeypatch):
    def broken():
        raise RuntimeError("the page broke")

    monkeypatch.setattr(selectors, "dataset_overview", broken)
    as_researcher.raise_request_exception = False
    response = as_researcher.get("/research/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"Something went wrong on our side" in response.content


def test_throttled_requests_are_a_json_429(api, settings):
    from rest_framework.throttling import UserRateThrottle

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    original = UserRateThrottle.THROTTLE_RATES
    UserRateThrottle.THROTTLE_RATES = {**original, "user": "2/hour"}
    try:
        statuses = [api.get("/api/stats/").status_code for _ in range(3)]
        response = api.get("/api/stats/")
    finally:
        UserRateThrottle.THROTTLE_RATES = original
    assert statuses == [200, 200, 429]
    assert response.json()["detail"].startswith("Request was throttled.")
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("exc, status, says", [
    (RequestDataTooBig(), 413, "The request body is over 20,971,520 bytes"),
    (TooManyFieldsSent(), 400, "more than 1,000 fields"),
])
def test_djangos_request_limits_met_inside_a_view_become_json(exc, status, says):
    """DRF reads the body lazily inside request.data, where Django raises these."""
    request = APIRequestFactory().post("/api/prompts/")
    response = exception_handler(exc, {"request": request, "view": None})
    assert response.status_code == status
    assert says in response.data["detail"]
