import hashlib

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from labeling import services
from labeling.models import Export, ModelVersion, TrainingRun
from tests.conftest import api_client_for
from tests.factories import ranking_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(researcher):
    return api_client_for(researcher)


@pytest.fixture
def ranked(labeler):
    task = ranking_task(k=4)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[i] for i in ids],
                          ratings={i: {"rating": 5} for i in ids})
    return task


def test_a_researcher_asks_for_an_export_a_worker_builds_it_and_the_file_downloads(
    api, ranked, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        response = api.post("/api/exports/", {"kind": "preference_pairs", "format": "jsonl",
                                              "filters": {"split": ["train"], "margin": True}}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert (body["state"], body["download_url"], body["filters"]) == ("queued", None, {"split": ["train"],
                                                                                       "margin": True})
    assert len(queued) == 1  # the build is handed to a worker once the request commits
    assert api.get(f"/api/exports/{body['id']}/download/").status_code == 404

    services.export_run(export_id=body["id"])
    done = api.get(f"/api/exports/{body['id']}/").json()
    assert done["state"] == "succeeded" and done["row_count"] == 6
    download = api.get(done["download_url"])
    content = b"".join(download.streaming_content)
    assert download.status_code == 200 and content.count(b"\n") == 6
    assert hashlib.sha256(content).hexdigest() == done["sha256"] == download["X-Checksum-SHA256"]
    assert "attachment" in download["Content-Disposition"] and download["Content-Type"] == "application/jsonl"


@pytest.mark.parametrize(
    "body, named",
    [
        ({"kind": "rankings", "filters": {"min_agreement": "high"}}, "Filter `min_agreement`"),
        ({"kind": "rankings", "filters": {"colour": "blue"}}, "Unknown filter `colour`"),
        ({"kind": "sft", "filters": {"margin": True}}, "Filter `margin` does not apply"),
        ({"kind": "rankings", "format": "csv"}, "CSV cannot"),
        ({"kind": "rankings", "with_identities": True}, "Only an admin"),
    ],
)
def test_a_malformed_request_is_a_400_that_names_the_problem(api, body, named):
    response = api.post("/api/exports/", body, format="json")
    assert response.status_code == 400 and named in response.json()["detail"]
    assert not Export.objects.exists()


def test_an_unknown_kind_or_format_is_a_400_naming_the_field(api):
    response = api.post("/api/exports/", {"kind": "everything", "format": "xlsx"}, format="json")
    assert response.status_code == 400 and set(response.json()) == {"kind", "format"}


def test_asking_for_exports_is_throttled_on_its_own_budget(api, monkeypatch):
    cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"exports": "2/hour"})
    codes = [api.post("/api/exports/", {"kind": "ppo_prompts"}, format="json").status_code for _ in range(3)]
    assert codes == [202, 202, 429]
    assert api.get("/api/exports/").status_code == 200
    cache.clear()


def test_lists_are_paginated(api, researcher):
    for _ in range(3):
        services.export_create(kind="ppo_prompts", fmt="jsonl", created_by=researcher, queue=False)
    body = api.get("/api/exports/").json()
    assert (body["count"], len(body["results"]), body["next"], body["previous"]) == (3, 3, None, None)


def test_model_versions_and_training_runs_are_listed_for_researchers(api):
    run = TrainingRun.objects.create(kind="reward", state="succeeded", metrics={"accuracy": 0.71})
    parent = ModelVersion.objects.create(kind="sft", name="sft-1", status="active")
    ModelVersion.objects.create(kind="reward", name="rm-1", status="ready", parent=parent, training_run=run,
                                metrics={"accuracy": 0.71})
    versions = api.get("/api/model-versions/").json()["results"]
    assert [(v["name"], v["parent"]) for v in versions] == [("rm-1", parent.pk), ("sft-1", None)]
    assert versions[1]["served_name"] == "sft-sft-1"
    runs = api.get("/api/training-runs/").json()["results"]
    assert runs[0]["metrics"] == {"accuracy": 0.71} and runs[0]["model_version"] == versions[0]["id"]


def test_statistics_count_prompts_tasks_and_results(api, ranked, labeler):
    body = api.get("/api/stats/").json()
    assert body["prompt_count"] == 1
    assert body["by_split"] == [{"label": "Train", "count": 1, "percent": 100.0}]
    assert body["open_tasks"][0]["label"] == "Rank completions"


@pytest.mark.parametrize("url, shown", [
    ("http://user:secret@gpu-node:8000/v1", "http://gpu-node:8000/v1"),
    ("http://user:secret@[fd00::7]:8000/v1", "http://[fd00::7]:8000/v1"),
    ("http://gpu-node/v1", "http://gpu-node/v1"),
])
def test_the_sampler_endpoint_says_what_serves_and_how_it_went(api, settings, url, shown):
    settings.SAMPLER_URL, settings.SAMPLER_SERVER = url, "rlhf"
    ModelVersion.objects.create(kind="policy", name="ppo-4", status="active")
    body = api.get("/api/sampler/").json()
    assert (body["backend"], body["server"], body["serving"], body["ok"]) == (
        shown, "rlhf", "policy-ppo-4", None)  # the credentials in the URL never shown
    assert body["waiting"] == 0 and body["failures"] == 0


RESEARCHER_ENDPOINTS = [
    ("get", "/api/exports/"), ("post", "/api/exports/"), ("get", "/api/exports/1/"),
    ("get", "/api/exports/1/download/"), ("get", "/api/model-versions/"), ("get", "/api/training-runs/"),
    ("post", "/api/training-runs/"), ("post", "/api/training-runs/1/cancel/"), ("get", "/api/stats/"),
    ("get", "/api/sampler/"),
    ("get", "/api/prompts/"), ("post", "/api/prompts/"), ("get", "/api/imports/"),
]
LABELER_ENDPOINTS = [
    ("post", "/api/work/next/"), ("get", "/api/work/mine/"), ("get", "/api/work/assignments/1/"),
    ("post", "/api/work/assignments/1/submit/"), ("post", "/api/work/assignments/1/skip/"),
]


@pytest.mark.parametrize("method, url", RESEARCHER_ENDPOINTS)
def test_a_labelers_token_cannot_reach_researcher_endpoints(labeler, no_role_user, method, url):
    for user in (labeler, no_role_user):
        response = getattr(api_client_for(user), method)(url, {}, format="json")
        assert response.status_code == 403, (user, response.content)
    assert getattr(APIClient(), method)(url, {}, format="json").status_code == 401


@pytest.mark.parametrize("method, url", LABELER_ENDPOINTS)
def test_a_researchers_token_cannot_reach_labeler_endpoints(researcher, no_role_user, method, url):
    for user in (researcher, no_role_user):
        response = getattr(api_client_for(user), method)(url, {}, format="json")
        assert response.status_code == 403, (user, response.content)
    assert getattr(APIClient(), method)(url, {}, format="json").status_code == 401


@pytest.mark.parametrize("kind, options, detail", [
    ("sft", {"epoch": 2}, "Options: unknown option 'epoch'; did you mean 'epochs'?"),
    ("sft", {"lr": "fast"}, "Options: option 'lr' must be a number, not 'fast'"),
    ("sft", {"model": "/etc"}, "Options: option 'model' is set for each run and cannot be given"),
    ("sft", {"batch_size": 0}, "Options: option 'batch_size' must be at least 1, not 0"),
    ("reward", {"pooling": "max"}, "Options: option 'pooling' must be one of mean, last, not 'max'"),
    ("reward", {"epochs": 0, "fit_head": False},
     "Options: options 'epochs' 0 and 'fit_head' false leave nothing to train"),
])
def test_a_training_run_with_a_bad_option_is_a_400_naming_it(api, kind, options, detail):
    response = api.post("/api/training-runs/", {"kind": kind, "options": options}, format="json")
    assert (response.status_code, response.json()) == (400, {"detail": detail})
    assert not TrainingRun.objects.exists()


def test_options_that_clash_with_the_settings_are_refused_when_the_run_is_asked_for(api, settings):
    settings.TRAINING_OPTIONS = {"reward": {"epochs": 2, "fit_head": False}}
    response = api.post("/api/training-runs/", {"kind": "reward", "options": {"epochs": 0}}, format="json")
    assert response.status_code == 400 and response.json()["detail"] == (
        "Options with TRAINING_OPTIONS['reward']: options 'epochs' 0 and 'fit_head' false leave nothing to train")
    assert not TrainingRun.objects.exists()


def test_a_researcher_starts_and_cancels_a_training_run(api):
    response = api.post("/api/training-runs/", {"kind": "sft", "options": {"epochs": 2}}, format="json")
    assert response.status_code == 202
    run = response.json()
    assert (run["state"], run["config"]) == ("queued", {"epochs": 2})
    second = api.post("/api/training-runs/", {"kind": "sft"}, format="json")
    assert second.status_code == 400 and "already queued or running" in second.json()["detail"]
    cancelled = api.post(f"/api/training-runs/{run['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = api.post(f"/api/training-runs/{run['id']}/cancel/")
    assert again.status_code == 400 and "already finished (cancelled)" in again.json()["detail"]
