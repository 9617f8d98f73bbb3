"""Every API error is a JSON object with a `detail` sentence, whatever raised it.

The DRF exception handler covers exceptions inside API views; the Django handlers below cover what
happens outside them (an unknown URL under /api/, a failure in middleware) and keep Django's HTML
pages for the rest of the site.
"""

import logging
import sys
import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from .middleware import API_PREFIX
from .parsers import FORM_LIMITS, form_limits_error

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    """Services raise Django's ValidationError; the API answers it with a 400 and its message.
    Django's form limits, raised while DRF parses a body, become a 400 or 413; anything unexpected
    is logged under an error id that the 500 answer returns."""
    if isinstance(exc, DjangoValidationError):
        # A refusal because the thing moved on (another tab sent a turn first) is a conflict, not a bad request.
        errors = getattr(exc, "error_list", None) or []
        conflict = bool(errors) and all(error.code == "conflict" for error in errors)
        return Response({"detail": " ".join(exc.messages)},
                        status=status.HTTP_409_CONFLICT if conflict else status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, FORM_LIMITS):
        exc = form_limits_error(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        set_rollback()
        request = context["request"]
        body = unexpected_error(exc, request.method, request.path)
        return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    return response


def unexpected_error(exc, method, path) -> dict:
    error_id = uuid.uuid4().hex[:12]
    logger.error("Unexpected error %s on %s %s", error_id, method, path, exc_info=exc, extra={"error_id": error_id})
    return {"detail": f"Something went wrong on our side; it has been logged as error {error_id}.",
            "error_id": error_id}


def _is_api(request) -> bool:
    return request.path_info.startswith(API_PREFIX)


def bad_request(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": "The request cannot be read; check its headers and body."}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": str(exception) or "You may not do this."}, status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if _is_api(request):
        return JsonResponse(
            {"detail": f"There is no API endpoint at {request.path}; the list is at /api/docs/."}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    """Django logs the failure too; this record ties its traceback to the id that the answer names."""
    if _is_api(request):
        return JsonResponse(unexpected_error(sys.exc_info()[1], request.method, request.path), status=500)
    return defaults.server_error(request)
