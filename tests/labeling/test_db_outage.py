"""A database that restarts under the site: the outage is answered with a 503 that says to retry, and the retry works.

The outages are real: connections to a port nothing listens on, and the server ending the request's own
connection in the middle of its transaction, as `pg_ctlcluster restart -m fast` does. So these tests run
outside the usual per-test transaction.
"""

import socket
from contextlib import contextmanager

import pytest
from django.db import connection
from django.test import Client

from labeling.models import Assignment, LabelerProfile, Ranking
from tests.conftest import api_client_for
from tests.factories import ranking_task

pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),  # keeps the role groups for later tests
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL to end its own connections"),
]


@pytest.fixture
def alice(labeler):
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    return api_client_for(labeler)


@contextmanager
def database_refuses_connections():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(closed_port)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


@contextmanager
def database_ends_connection_at(statement):
    """The server ends this connection just before the first query that starts with `statement`."""
    def end_then_execute(execute, sql, params, many, context):
        if sql.startswith(statement):
            admin = connection.get_new_connection(connection.get_connection_params())
            try:
                with admin.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
            finally:
                admin.close()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(end_then_execute):
        yield


def ranking_answer(lease):
    shown = [c["id"] for c in lease["completions"]]
    return {"groups": [[cid] for cid in shown], "ratings": {str(cid): {"rating": 4} for cid in shown}}


def test_a_request_the_database_refuses_is_a_503_that_says_to_send_it_again(alice):
    ranking_task()
    with database_refuses_connections():
        response = alice.post("/api/work/next/")
    assert response.status_code == 503
    assert response["Retry-After"] == "2" and response["Content-Type"] == "application/json"
    assert "Send the same request again in 2 seconds" in response.json()["detail"]
    assert response["Content-Length"] == str(len(response.content))  # the whole sentence reaches the client
    assert alice.post("/api/work/next/").status_code == 200  # the same request, once the database is back


def test_a_submit_cut_off_mid_transaction_stores_nothing_and_its_retry_stores_it_once(alice):
    ranking_task()
    lease = alice.post("/api/work/next/").json()
    url, answer = f"/api/work/assignments/{lease['id']}/submit/", ranking_answer(lease)
    with database_ends_connection_at('INSERT INTO "labeling_completionrating"'):
        cut = alice.post(url, answer, format="json")
    assert cut.status_code == 503 and "stored only once" in cut.json()["detail"]
    assert not Ranking.objects.exists() and Assignment.objects.get().state == "active"
    assert alice.post(url, answer, format="json").status_code == 200
    assert alice.post(url, answer, format="json").status_code == 200  # a second retry finds it stored
    ranking = Ranking.objects.get()
    assert ranking.groups == answer["groups"] and ranking.ratings.count() == 4
    assert Assignment.objects.get().state == "submitted"


def test_a_page_the_database_refuses_is_a_503_page(labeler):
    browser = Client(raise_request_exception=False)
    browser.force_login(labeler)
    with database_refuses_connections():
        response = browser.get("/")
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert b"Reload this page in a few seconds" in response.content
    assert browser.get("/", follow=True).status_code == 200


def test_a_failed_query_on_a_healthy_connection_stays_a_500(alice):
    ranking_task()

    def broken_query(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "labeling_assignment"'):
            return execute("SELECT no_such_column FROM labeling_assignment", None, False, context)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(broken_query):
        response = alice.post("/api/work/next/")
    assert response.status_code == 500 and "Retry-After" not in response
