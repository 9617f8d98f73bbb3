"""Hostile input never reaches an API view: every operation answers it with a JSON 400, 413 or 415
naming the problem, and stores or changes nothing.

The operations come from the OpenAPI schema, so a new endpoint is covered as soon as it exists."""

import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.apps import apps
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import resolve
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from labeling import services
from labeling.api.parsers import StrictFormParser, StrictJSONParser, StrictMultiPartParser
from labeling.models import Assignment, Demonstration, LabelerProfile, Prompt, Task, TrainingRun
from labeling.permissions import IsLabeler, IsResearcher
from tests.conftest import api_client_for
from tests.factories import ModelVersionFactory, TaskFactory

pytestmark = pytest.mark.django_db

MAX_BYTES = 2 * 1024 * 1024  # the default of API_JSON_MAX_BYTES, set again below so the test does not drift
PATHS = SchemaGenerator().get_schema(request=None, public=True)["paths"]
OPERATIONS = [(method.upper(), path) for path, item in PATHS.items() for method in item]
BODY_OPERATIONS = [(method, path) for method, path in OPERATIONS if method in {"POST", "PUT", "PATCH"}]


@dataclass
class Hostile:
    body: bytes
    content_type: str
    status: int
    says: str


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HOSTILE = {
    "raw NUL": Hostile(b'{"text": "a\x00b"}', JSON, 400, "NUL byte at byte 11"),
    "escaped NUL": Hostile(b'{"text": "a\\u0000b"}', JSON, 400, "NUL character at text"),
    "escaped NUL deep inside": Hostile(b'{"a": [{"b c": ["x", "\\u0000"]}]}', JSON, 400, 'NUL character at a[0]["b c"][1]'),
    "lone surrogate in a value": Hostile(b'{"text": "\\ud800"}', JSON, 400, "lone surrogate (\\ud800) at text"),
    "lone surrogate in a key": Hostile(b'{"options": {"\\udc00": 1}}', JSON, 400, "lone surrogate (\\udc00) in a key of options"),
    "NUL in a key": Hostile(b'{"\\u0000": 1}', JSON, 400, "NUL character in a key of the top level"),
    "5,000 levels deep": Hostile(b"[" * 5000 + b"]" * 5000, JSON, 400, "deeper than 32 levels"),
    "100,000 levels deep": Hostile(b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, JSON, 400, "deeper than 32 levels"),
    "over the size": Hostile(b'{"text": "' + b"a" * MAX_BYTES + b'"}', JSON, 413, "the API takes at most 2,097,152"),
    "invalid JSON": Hostile(b'{"text": ', JSON, 400, "not valid JSON: Expecting value at line 1, column 10"),
    "not UTF-8": Hostile(b'{"text": "caf\xe9"}', JSON, 400, "not UTF-8: byte 13 (0xe9)"),
    "NaN": Hostile(b'{"lr": NaN}', JSON, 400, "NaN, which is not a JSON number"),
    "a number too large for a float": Hostile(b'{"lr": 1e999}', JSON, 400, "1e999, too large to store"),
    "an integer of 5,000 digits": Hostile(b'{"n": ' + b"9" * 5000 + b"}", JSON, 400, "5,000 digits, too large to store"),
    "NUL in a url-encoded field": Hostile(b"text=a%00b", FORM, 400, "The form holds a NUL character in the field text"),
    "url-encoded over the size": Hostile(b"text=" + b"a" * MAX_BYTES, FORM, 413, "the API takes at most"),
    "too many form fields": Hostile("&".join(f"f{i}=1" for i in range(1001)).encode(), FORM, 400, "more than 1,000 fields"),
    "NUL in a multipart field": Hostile(
        encode_multipart(BOUNDARY, {"format": "csv\x00"}), MULTIPART_CONTENT, 400, "NUL character in the field format"
    ),
    "NUL in a multipart field name": Hostile(
        encode_multipart(BOUNDARY, {"for\x00mat": "csv"}), MULTIPART_CONTENT, 400, "NUL character in a field name"
    ),
    "a media type the API does not read": Hostile(b"<prompts/>", "application/xml", 415, "not application/xml"),
    "a body without a media type": Hostile(b'{"kind": "sft"}', "", 415, "a body without a Content-Type"),
}


class World:
    """One object behind each path parameter, and a client of the role each operation is for."""

    def __init__(self, users):
        LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
        TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION)
        self.assignment = services.task_lease_next(labeler=users["labeler"])
        self.run = TrainingRun.objects.create(kind=TrainingRun.Kind.REWARD)
        chat = Assignment.objects.create(task=services.chat_task_create(), labeler=users["labeler"],
                                         lease_expires_at=timezone.now() + timedelta(minutes=30))
        self.conversation = services.chat_start(assignment=chat, labeler=users["labeler"])
        message = self.conversation.messages.create(position=1, role="user", text="Hello.")
        self.ids = {
            "work/assignments": self.assignment.pk,
            "training-runs": self.run.pk,
            "model-versions": ModelVersionFactory().pk,
            "exports": services.export_create(kind="sft", fmt="jsonl", filters={}, created_by=users["researcher"]).pk,
            "imports": 1,
            "evaluations": 1,
            "work/chats": self.conversation.pk,
            "work/chat-messages": message.pk,
            "work/suggestions": services.suggestion_request(assignment=self.assignment, labeler=users["labeler"],
                                                            turns=[]).pk,
        }
        self.clients = {IsLabeler: api_client_for(users["labeler"]), IsResearcher: api_client_for(users["researcher"])}

    def url(self, path):
        if "{" not in path:
            return path
        resource = path.removeprefix("/api/").split("/{")[0]
        assert resource in self.ids, f"Give the hostile-input tests an object for {path}."
        return path.replace("{id}", str(self.ids[resource]))

    def client_for(self, url):
        """A client of a role the operation's permission admits, so that only the input can stand in the way."""
        permissions = resolve(url).func.cls.permission_classes
        role = next(permission for permission in permissions if permission in self.clients)
        return self.clients[role]


@pytest.fixture
def world(users, settings):
    settings.API_JSON_MAX_BYTES = MAX_BYTES
    settings.API_JSON_MAX_DEPTH = 32
    return World(users)


def stored_rows():
    return {
        model._meta.label: list(model.objects.order_by("pk").values())
        for model in apps.get_app_config("labeling").get_models()
    }


def test_the_schema_lists_the_operations_that_take_a_body():
    assert ("POST", "/api/prompts/") in BODY_OPERATIONS and ("POST", "/api/work/next/") in BODY_OPERATIONS
    assert len(BODY_OPERATIONS) >= 8


@pytest.mark.parametrize("hostile", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("method, path", BODY_OPERATIONS, ids=[f"{m} {p}" for m, p in BODY_OPERATIONS])
def test_every_operation_refuses_hostile_bodies_and_stores_nothing(world, method, path, hostile):
    url = world.url(path)
    client = world.client_for(url)
    before = stored_rows()
    response = client.generic(method, url, hostile.body, content_type=hostile.content_type)
    assert response.status_code == hostile.status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert hostile.says in response.json()["detail"]
    assert stored_rows() == before


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_refuses_a_nul_in_the_query_string(world, method, path):
    url = world.url(path)
    before = stored_rows()
    response = world.client_for(url).generic(method, f"{url}?language=en&split=%00")
    assert response.status_code == 400
    assert response.json() == {"detail": "The query string holds a NUL character in the parameter split; remove it."}
    assert stored_rows() == before


def test_a_nul_in_a_query_parameter_name_or_the_path_is_refused(world):
    api = world.clients[IsResearcher]
    assert "in a parameter name" in api.get("/api/prompts/?sp%00lit=train").json()["detail"]
    response = api.get("/api/exports/1%00/")
    assert response.status_code == 400
    assert response.json()["detail"] == "The URL path holds a NUL character; remove it."


def test_every_api_view_parses_with_the_strict_parsers(world):
    strict = (StrictJSONParser, StrictFormParser, StrictMultiPartParser)
    for _, path in OPERATIONS:
        view = resolve(world.url(path)).func
        parser_classes = view.initkwargs.get("parser_classes") or view.cls.parser_classes
        assert all(issubclass(parser, strict) for parser in parser_classes), path


# Hostile input aimed at real operations: each would have reached a service, and the database.

def test_a_nul_in_a_bulk_prompt_is_refused_naming_the_row(researcher):
    body = json.dumps({"prompts": [{"prompt": "Fine."}, {"prompt": "Say a\u0000b"}]})
    response = api_client_for(researcher).post("/api/prompts/", body, content_type=JSON)
    assert response.status_code == 400
    assert response.json() == {"detail": "The JSON body holds a NUL character at prompts[1].prompt; remove it."}
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("value, says", [("a\u0000", "NUL character at options.note"),
                                         ("\udfff", "lone surrogate (\\udfff) at options.note")])
def test_training_options_holding_a_nul_or_a_lone_surrogate_are_refused(researcher, value, says):
    body = json.dumps({"kind": "reward", "options": {"epochs": 1, "note": value}})
    response = api_client_for(researcher).post("/api/training-runs/", body, content_type=JSON)
    assert response.status_code == 400
    assert says in response.json()["detail"]
    assert not TrainingRun.objects.exists()


def test_a_demonstration_with_a_lone_surrogate_is_refused_and_the_lease_stays_open(world, users):
    body = json.dumps({"turns": [{"role": "assistant", "content": "Here you go \ud83d"}]})
    response = world.clients[IsLabeler].post(f"/api/work/assignments/{world.assignment.pk}/submit/", body,
                                             content_type=JSON)
    assert response.status_code == 400
    assert "lone surrogate (\\ud83d) at turns[0].content" in response.json()["detail"]
    assert Assignment.objects.get(pk=world.assignment.pk).state == Assignment.State.ACTIVE
    assert not Demonstration.objects.exists()


def test_a_well_formed_surrogate_pair_is_text_like_any_other(researcher):
    body = json.dumps({"prompts": [{"prompt": "What does \U0001f600 mean in a message?"}]})  # sent as \\ud83d\\ude00
    assert "\\ud83d\\ude00" in body
    response = api_client_for(researcher).post("/api/prompts/", body, content_type=JSON)
    assert response.status_code == 201
    assert Prompt.objects.get().text == "What does \U0001f600 mean in a message?"


def test_nesting_up_to_the_limit_is_read(researcher, settings):
    settings.API_JSON_MAX_DEPTH = 3
    api = api_client_for(researcher)
    at_limit = {"kind": "reward", "options": {"betas": [0.8, 0.9]}}  # three levels
    assert api.post("/api/training-runs/", at_limit, format="json").status_code == 202
    over = {"kind": "sft", "options": {"betas": [[0.8], 0.9]}}
    response = api.post("/api/training-runs/", over, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": "The JSON body nests arrays and objects deeper than 3 levels; flatten it."}
    assert TrainingRun.objects.get().config == at_limit["options"]


def test_brackets_inside_strings_do_not_count_as_nesting(researcher, settings):
    settings.API_JSON_MAX_DEPTH = 3
    body = {"prompts": [{"prompt": "Balance these: " + "[{" * 50 + ' \\" ' + "}]" * 50}]}
    response = api_client_for(researcher).post("/api/prompts/", body, format="json")
    assert response.status_code == 201
    assert Prompt.objects.get().text.startswith("Balance these: [{[{")


def test_a_form_field_over_djangos_memory_limit_is_a_413(researcher, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = encode_multipart(BOUNDARY, {"format": "csv" * 500})
    response = api_client_for(researcher).generic("POST", "/api/imports/", body, content_type=MULTIPART_CONTENT)
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is over 1,000 bytes, files aside; send less."}


def test_an_upload_still_imports_after_the_checks(researcher):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("prompts.csv", b"prompt,source_user_id\nWhat is a reward model?,u1\n")
    response = api_client_for(researcher).post("/api/imports/", {"file": upload, "format": "csv"}, format="multipart")
    assert response.status_code == 201
    assert Prompt.objects.get().text == "What is a reward model?"



def test_the_parsers_refuse_hostile_bodies_without_the_middleware(researcher):
    """A DRF view reached some other way than through /api/ reads its body with the same checks."""
    from rest_framework.test import APIRequestFactory, force_authenticate

    from labeling.api.views import PromptListCreate

    request = APIRequestFactory().post("/elsewhere/", b'{"prompts": [' * 1000, content_type=JSON)
    force_authenticate(request, user=researcher)
    response = PromptListCreate.as_view()(request)
    assert response.status_code == 400
    assert response.data == {"detail": "The JSON body nests arrays and objects deeper than 32 levels; flatten it."}
    assert not Prompt.objects.exists()


@pytest.mark.parametrize("key", ["abc\x00def", "a" * 5_000, "é" * 40, "two words"])
def test_a_malformed_token_is_refused_as_invalid(key, labeler):
    from rest_framework.test import APIClient

    response = APIClient().post("/api/work/next/", {}, format="json", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 401 and "token" in response.json()["detail"].lower()
