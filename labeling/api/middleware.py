from django.http import JsonResponse
from django.http.multipartparser import MultiPartParserError
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.utils.mediatypes import media_type_matches

from . import parsers

API_PREFIX = "/api/"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class ApiInputGuard:
    """Checks the path, the query string and the body of every API request before any view runs.

    A view that never reads its body (starting work, cancelling a run) is covered as well as one
    that does. A JSON body is parsed once here; the API's JSON parser hands the checked value on."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith(API_PREFIX):
            refusal = self.refusal(request)
            if refusal is not None:
                return JsonResponse({"detail": str(refusal.detail)}, status=refusal.status_code)
        return self.get_response(request)

    def refusal(self, request) -> APIException | None:
        try:
            self.check(request)
        except parsers.FORM_LIMITS as exc:  # Django's own limits, met while reading the body
            return parsers.form_limits_error(exc)
        except APIException as exc:
            return exc
        return None

    def check(self, request):
        if "\x00" in request.path_info:
            raise ParseError("The URL path holds a NUL character; remove it.")
        parsers.check_query_string(request.GET)
        length = _content_length(request)
        if not length:
            return
        content_type = request.META.get("CONTENT_TYPE", "")
        if media_type_matches(parsers.StrictJSONParser.media_type, content_type):
            parsers.check_body_size(length)
            setattr(request, parsers.CHECKED_JSON, parsers.json_parse(request.body))
        elif any(media_type_matches(form_type, content_type) for form_type in FORM_TYPES):
            self.check_form(request, content_type, length)
        else:
            sent = content_type or "a body without a Content-Type"
            raise UnsupportedMediaType(
                content_type, detail=f"The API reads JSON (application/json) or form bodies, not {sent}."
            )

    def check_form(self, request, content_type, length):
        if media_type_matches(FORM_TYPES[0], content_type):
            parsers.check_body_size(length)
        if request.method != "POST":
            return  # Django parses forms of POST requests only; the API's parsers check the others
        try:
            # DRF reuses what Django parsed here, so a multipart body is read only once.
            parsers.check_form_fields(request.POST, request.FILES)
        except MultiPartParserError as exc:
            raise ParseError(f"The multipart body cannot be read: {exc}.") from None


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
