"""Answers for requests that failed because the database could not be reached."""

import json
import logging

from django.db import InterfaceError, OperationalError, connection

from .api.middleware import API_PREFIX

logger = logging.getLogger(__name__)

# A PostgreSQL restart takes a few seconds; a client that waits this long and repeats usually gets through.
RETRY_AFTER_SECONDS = 2

API_MESSAGE = (
    "The site lost its connection to the database for a moment, so this request was not completed. "
    f"Send the same request again in {RETRY_AFTER_SECONDS} seconds; a repeated submit is stored only once."
)
PAGE_HTML = (
    "<!doctype html><title>Try again in a moment</title>"
    "<h1>Try again in a moment</h1>"
    "<p>The site lost its connection to the database. Reload this page in a few seconds; "
    "an answer you submit again is stored only once.</p>"
)


class DatabaseUnavailableMiddleware:
    """A 503 with Retry-After, instead of a 500, for a request the database dropped.

    While PostgreSQL restarts, connections break mid-query and new ones are refused.
    Nothing is wrong with such a request, so the client is told to send it again;
    Django replaces the broken connection at the next request (CONN_HEALTH_CHECKS).

    The error handlers (the API's and Django's) have turned the exception into a 500
    by the time the response gets here, so the failure is noted as it happens: a
    query that raised OperationalError or InterfaceError, or a connection that could
    not be opened. A query that failed for another reason (a bug) stays a 500.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        failures = []

        def note_failure(execute, sql, params, many, context):
            try:
                return execute(sql, params, many, context)
            except (OperationalError, InterfaceError) as exc:
                failures.append(exc)
                raise

        with connection.execute_wrapper(note_failure):
            response = self.get_response(request)
        if response.status_code == 500 and not response.streaming and (failures or _connection_refused()):
            logger.warning("Database unavailable for %s %s; answered 503", request.method, request.path)
            # Changed in place, so the security headers already on the response stay.
            response.status_code = 503
            if request.path_info.startswith(API_PREFIX):
                response["Content-Type"] = "application/json"
                response.content = json.dumps({"detail": API_MESSAGE})
            else:
                response["Content-Type"] = "text/html; charset=utf-8"
                response.content = PAGE_HTML
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            if response.has_header("Content-Length"):  # set by CommonMiddleware for the 500's body
                response["Content-Length"] = str(len(response.content))
        return response


def _connection_refused():
    # Opening a connection happens outside the query wrapper; a failed attempt leaves no connection and the error
    # flag set (which a later successful connection would clear).
    return connection.errors_occurred and connection.connection is None
