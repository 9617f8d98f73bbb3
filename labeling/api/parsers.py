"""How the API reads request input, refusing what no endpoint should ever act on.

PostgreSQL cannot store a NUL character in text; a lone UTF-16 surrogate cannot be written as
UTF-8, so it fails later, on the way to the database or into an export file; and Python's json
module recurses once per level of nesting, so a body of 100,000 `[` ends in a RecursionError.
Each is refused here with a 400 that says where the problem sits, before a view sees the data.
`ApiInputGuard` (labeling/api/middleware.py) applies these checks to every request under /api/,
including those whose view never reads its body; the parsers apply them to any DRF view on their own.
"""

import json
import math
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import QueryDict
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError

# A NUL, or half of a surrogate pair: json decodes a well-formed pair into one character, so any
# surrogate left in a decoded string stands alone.
_UNSAFE_CHAR = re.compile("[\x00\ud800-\udfff]")
# Only a \u escape can put either into decoded JSON: raw NUL bytes are refused before decoding and
# raw surrogates are not valid UTF-8. A body without such an escape needs no walk.
_UNSAFE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# The attribute of the Django request that holds a body the guard has already checked and parsed.
CHECKED_JSON = "checked_json"


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def check_body_size(length: int) -> None:
    """JSON and url-encoded bodies are read whole into memory, so they have a size limit of their own."""
    limit = settings.API_JSON_MAX_BYTES
    if length > limit:
        raise RequestTooLarge(
            f"The request body is {length:,} bytes; the API takes at most {limit:,}. "
            "Send fewer rows per request, or upload them as a file."
        )


def json_parse(raw: bytes):
    """Parse a JSON body, refusing one that is too large, too deep, not UTF-8 or not JSON, or that
    holds a NUL, a lone surrogate or a number too large for a float."""
    check_body_size(len(raw))
    nul = raw.find(b"\x00")
    if nul != -1:
        raise ParseError(f"The JSON body holds a NUL byte at byte {nul}; remove it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"The JSON body is not UTF-8: byte {exc.start} (0x{raw[exc.start]:02x}) cannot be decoded; send UTF-8 text."
        ) from None
    limit = settings.API_JSON_MAX_DEPTH
    if _nests_deeper_than(text, limit):
        raise ParseError(f"The JSON body nests arrays and objects deeper than {limit} levels; flatten it.")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_short_int)
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"The JSON body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except ValueError as exc:
        raise ParseError(f"The JSON body is not usable JSON: {exc}.") from None
    if _UNSAFE_ESCAPE.search(text):
        check_json_text(value)
    return value


def _nests_deeper_than(text: str, limit: int) -> bool:
    """Counts brackets outside strings, without recursion, stopping as soon as the limit is passed."""
    depth = 0
    for bracket in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        if bracket.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name):
    raise ParseError(f"The JSON body holds {name}, which is not a JSON number; send a number or null.")


MAX_INT_DIGITS = 100


def _finite_float(literal):
    number = float(literal)
    if not math.isfinite(number):
        raise ParseError(f"The JSON body holds the number {literal[:40]}, too large to store; send a smaller one.")
    return number


def _short_int(literal):
    # Python refuses to convert integers past 4,300 digits with advice meant for programmers, not for clients.
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise ParseError(f"The JSON body holds a whole number of {len(literal):,} digits, too large to store; "
                         f"send at most {MAX_INT_DIGITS}.")
    return int(literal)


def check_json_text(value) -> None:
    """Raise ParseError naming the first string or key, in document order, that holds a NUL or a lone surrogate."""
    stack = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if _UNSAFE_CHAR.search(key):
                    raise ParseError(_unsafe_message(key, f"in a key of {_where(path)}"))
            stack.extend((child, _join(path, key)) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in reversed(list(enumerate(item))))
        elif isinstance(item, str) and _UNSAFE_CHAR.search(item):
            raise ParseError(_unsafe_message(item, f"at {_where(path)}"))


def _unsafe_message(text: str, where: str, subject: str = "The JSON body") -> str:
    char = _UNSAFE_CHAR.search(text).group()
    if char == "\x00":
        return f"{subject} holds a NUL character {where}; remove it."
    return f"{subject} holds a lone surrogate (\\u{ord(char):04x}) {where}; send valid Unicode text."


def _join(path: str, key: str) -> str:
    if _NAME.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _where(path: str) -> str:
    return path or "the top level"


def check_form_fields(data: QueryDict, files=None) -> None:
    """Form values arrive decoded with replacement characters, so a NUL is the one character to refuse."""
    for name, values in data.lists():
        _check_form_text(name, "in a field name")
        for value in values:
            if isinstance(value, str):
                _check_form_text(value, f"in the field {name}")
    for name in files or ():
        _check_form_text(name, "in a file field name")


def _check_form_text(text: str, where: str, subject: str = "The form") -> None:
    if _UNSAFE_CHAR.search(text):
        raise ParseError(_unsafe_message(text, where, subject))


def check_query_string(query: QueryDict) -> None:
    for name, values in query.lists():
        _check_form_text(name, "in a parameter name", subject="The query string")
        for value in values:
            _check_form_text(value, f"in the parameter {name}", subject="The query string")


def form_limits_error(exc: Exception) -> APIException:
    """Django's own limits on request data, raised while a body is read or a form parsed, as the API's answer."""
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge(
            f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes, files aside; send less."
        )
    if isinstance(exc, TooManyFilesSent):
        return ParseError(f"The request holds more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,} files; send fewer.")
    return ParseError(f"The request holds more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,} fields; send fewer.")


FORM_LIMITS = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


class StrictJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        django_request = getattr(request, "_request", None)
        if hasattr(django_request, CHECKED_JSON):
            return getattr(django_request, CHECKED_JSON)
        return json_parse(stream.read(settings.API_JSON_MAX_BYTES + 1))


class StrictFormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(settings.API_JSON_MAX_BYTES + 1)
        check_body_size(len(raw))
        try:
            data = QueryDict(raw, encoding=parsers.get_encoding(parser_context or {}))
        except FORM_LIMITS as exc:
            raise form_limits_error(exc) from None
        check_form_fields(data)
        return data


class StrictMultiPartParser(parsers.MultiPartParser):
    """Files stream to disk under Django's upload handlers; only the other fields are checked here."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except FORM_LIMITS as exc:
            raise form_limits_error(exc) from None
        check_form_fields(parsed.data, parsed.files)
        return parsed
