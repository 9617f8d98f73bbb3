import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.models import ImportJob, Prompt, Task

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=researcher).key}")
    return client


def test_a_researcher_creates_prompts_in_bulk_through_the_intake_rules(api):
    response = api.post(
        "/api/prompts/",
        {"prompts": [
            {"prompt": "Draft a polite reminder about an unpaid invoice.", "source_user_id": "acme",
             "use_case": "generation"},
            {"prompt": "draft a polite reminder about an UNPAID invoice."},
            {"prompt": "Contact me at a@b.co", "language": "klingon"},
            {"messages": [{"role": "user", "content": "Hi! Call 415-555-0132 tomorrow"}], "language": "en"},
        ]},
        format="json",
    )
    assert response.status_code == 201
    report = response.json()
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 1, 1)
    assert report["row_errors"][1]["line"] == 3
    assert report["row_errors"][1]["reason"].startswith("unknown language 'klingon'")
    assert report["redactions"] == {"phone": 1}
    assert sorted(Prompt.objects.values_list("id", flat=True)) == sorted(report["prompt_ids"])
    assert Task.objects.filter(prompt_id__in=report["prompt_ids"], kind="annotate_prompt").count() == 2


def test_a_bulk_request_with_no_usable_prompt_is_a_400_that_says_why(api):
    response = api.post("/api/prompts/", {"prompts": [{"prompt": ""}]}, format="json")
    assert response.status_code == 400
    assert response.json()["row_errors"] == [{"line": 1, "reason": "the prompt is empty"}]


def test_a_malformed_bulk_request_is_a_400(api):
    response = api.post("/api/prompts/", {"prompts": "not a list"}, format="json")
    assert response.status_code == 400
    assert "prompts" in response.json()


def test_uploading_a_file_through_the_api(api):
    response = api.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("p.csv", b"prompt,source_user_id\nWhat is RLHF?,u1\n,u2\n")},
        format="multipart",
    )
    assert response.status_code == 201
    job = response.json()
    assert (job["state"], job["accepted"], job["rejected"]) == ("succeeded", 1, 1)
    assert job["row_errors"] == [{"line": 3, "reason": "the prompt is empty"}]
    assert api.get(f"/api/imports/{job['id']}/").json()["accepted"] == 1


def test_a_large_upload_is_accepted_for_a_worker(api, settings):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 1
    response = api.post("/api/imports/", {"file": SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}\n')},
                        format="multipart")
    assert response.status_code == 202
    assert response.json()["state"] == "queued"
    assert response.json()["progress"] == {"bytes_read": 0, "rows_read": 0}


def test_an_upload_of_the_wrong_type_is_a_400(api):
    response = api.post("/api/imports/", {"file": SimpleUploadedFile("p.txt", b"hello")}, format="multipart")
    assert response.status_code == 400
    assert "neither JSONL" in response.json()["detail"]
    assert not ImportJob.objects.exists()


def test_session_authentication_works_too(client, researcher):
    client.force_login(researcher)
    assert client.get("/api/prompts/").status_code == 200


@pytest.mark.parametrize("path", ["/api/prompts/", "/api/imports/"])
def test_labelers_and_strangers_are_refused(path, labeler):
    client = APIClient()
    assert client.get(path).status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    response = client.get(path)
    assert response.status_code == 403
    assert response.json()["detail"] == "This endpoint is for researchers and admins."


def test_prompts_list_filters_by_split(api):
    Prompt.objects.create(text="a", split="train")
    Prompt.objects.create(text="b", split="test")
    body = api.get("/api/prompts/?split=test").json()
    assert body["count"] == 1 and body["results"][0]["text"] == "b"


def test_the_openapi_schema_and_docs_are_served_to_signed_in_users(client, labeler):
    assert client.get("/api/schema/").status_code == 401
    client.force_login(labeler)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/prompts/" in schema.content and b"/api/imports/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


@pytest.mark.parametrize("query", ["split=holdout", "language=%00", "source=twitter", "use_case=poetry"])
def test_a_bad_filter_is_a_400_that_names_it(api, query):
    response = api.get(f"/api/prompts/?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in json.dumps(response.json())


def test_bulk_creation_takes_json_only(api):
    response = api.post("/api/prompts/", "prompts[0]prompt=hi", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"prompt": "x", "metadata": {"k": "\ud800"}}, "lone surrogate (\\ud800) at prompts[1].metadata.k"),
        ({"messages": [{"role": "user", "content": "\ud800"}]},
         "lone surrogate (\\ud800) at prompts[1].messages[0].content"),
        ({"prompt": "a\u0000b"}, "NUL character at prompts[1].prompt"),
        ({"prompt": "x", "note": "a\u0000"}, "NUL character at prompts[1].note"),
    ],
)
def test_text_a_database_cannot_store_refuses_the_body_and_names_where(api, row, reason):
    # ASCII, with \\u escapes, as a client sends them; the good row before it is not stored either
    body = json.dumps({"prompts": [{"prompt": "A good row"}, row]})
    response = api.post("/api/prompts/", body, content_type="application/json")
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert api.get("/api/prompts/").json()["count"] == 0


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"messages": [{"role": "user", "content": "  "}]}, "message 1 is empty"),
        ({"prompt": 42}, "the prompt must be text"),
        ({"prompt": "x", "language": ["en"]}, "the language must be a code"),
        ({"prompt": "x", "source_user_id": {"id": 1}}, "the source user id must be text or a number"),
    ],
)
def test_rows_the_intake_refuses_are_reported_by_position(api, row, reason):
    response = api.post("/api/prompts/", {"prompts": [row]}, format="json")
    assert response.status_code == 400
    assert reason in response.json()["row_errors"][0]["reason"]
    assert api.get("/api/prompts/").status_code == 200


def test_the_schema_is_valid_openapi_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert "/api/imports/{id}/" in (tmp_path / "schema.yml").read_text()
