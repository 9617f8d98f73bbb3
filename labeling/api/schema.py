"""The OpenAPI schema documents the errors every operation can answer, in one place.

Any operation may answer 400 (a malformed request; see labeling/api/middleware.py), 401, 403, 404
and 429; one that takes a body also 413 and 415; one that declares a 409 (`CONFLICT`) that too. Each
is an `Error` object. Where a serializer
validates the input, a 400 may instead name each wrong field: `<Serializer>Errors`.
"""

from drf_spectacular import openapi
from drf_spectacular.plumbing import ResolvedComponent, build_array_type, build_basic_type, force_instance
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERROR = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What was wrong, as a sentence."},
        "error_id": {"type": "string", "description": "On a 500: the id under which the failure was logged."},
    },
    "required": ["detail"],
}

ERRORS = {
    "400": "The request cannot be used: malformed JSON or form data, a NUL character or lone surrogate, "
           "too deep a nesting, or values that fail validation.",
    "401": "No valid token or session was sent.",
    "403": "The caller's role may not use this operation.",
    "404": "No such object for this caller, or no such page.",
    "429": "Too many requests; the Retry-After header says how many seconds to wait.",
}
BODY_ERRORS = {
    "413": "The body is larger than API_JSON_MAX_BYTES (JSON and url-encoded forms) or, for the fields of a "
           "multipart form, than DATA_UPLOAD_MAX_MEMORY_SIZE.",
    "415": "The body is of a media type this operation does not read.",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}
# For operations on what another tab or client may change at the same time (a chat): extend_schema(responses=...).
CONFLICT = {409: OpenApiResponse(description="The object has moved on since the caller last read it (another tab "
                                             "sent a turn, a reply is still being written): read it again.")}

# Field errors of these are nested by position or key (or are a list of messages for the whole value).
NESTED = (serializers.BaseSerializer, serializers.ListField, serializers.DictField, serializers.HStoreField)


class AutoSchema(openapi.AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        codes = {**ERRORS, **(BODY_ERRORS if self.method in BODY_METHODS else {})}
        if "409" in responses:
            codes["409"] = responses["409"]["description"]
        for code, description in codes.items():
            alternatives = self._error_schemas(code)
            if code in responses:
                content = responses[code].setdefault("content", {}).setdefault("application/json", {})
                if "schema" in content:
                    alternatives.insert(0, content["schema"])
                content["schema"] = _any_of(alternatives)
                responses[code]["description"] = responses[code].get("description") or description
            else:
                responses[code] = {"content": {"application/json": {"schema": _any_of(alternatives)}},
                                   "description": description}
        return dict(sorted(responses.items()))

    def _error_schemas(self, code):
        error = self._component("Error", ERROR)
        if code != "400":
            return [error]
        return [error, *(self._field_errors(serializer) for serializer in self._validating_serializers())]

    def _validating_serializers(self):
        """The serializers whose errors can make up a 400: the request body's and those of query parameters."""
        found = []
        if self.method in BODY_METHODS:
            found.append(self.get_request_serializer())
        found.extend(self.get_override_parameters())
        found = [force_instance(item) for item in found if _is_serializer(item)]
        return [item for item in found if isinstance(item, serializers.Serializer)]

    def _field_errors(self, serializer):
        # Serializers list a field's messages; a view that names a missing field itself may send one string.
        flat = {"anyOf": [build_array_type(build_basic_type(OpenApiTypes.STR)), build_basic_type(OpenApiTypes.STR)]}
        properties = {
            name: {"description": "Errors by position or key, or messages about the whole value."}
            if isinstance(field, NESTED) else flat
            for name, field in serializer.fields.items() if not field.read_only
        }
        properties["non_field_errors"] = flat
        name = f"{self._get_serializer_name(serializer, 'request')}Errors"
        return self._component(name, {"type": "object", "properties": properties, "additionalProperties": False})

    def _component(self, name, schema):
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        self.registry.register_on_missing(component)
        return component.ref


def _any_of(schemas):
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _is_serializer(item) -> bool:
    return isinstance(item, serializers.BaseSerializer) or (
        isinstance(item, type) and issubclass(item, serializers.BaseSerializer)
    )
