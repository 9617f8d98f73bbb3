import pytest
from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework.test import APIClient

from labeling import services
from labeling.api.work import AssignmentSerializer
from labeling.models import (
    Assignment,
    Demonstration,
    LabelerProfile,
    ModelVersion,
    PromptAnnotation,
    Ranking,
    Role,
    Task,
)
from tests.conftest import api_client_for
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(labeler, other_labeler):
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    return api_client_for(labeler)


@pytest.fixture
def bob(other_labeler):
    return api_client_for(other_labeler)


def test_a_labeler_ranks_through_the_api(alice):
    task = ranking_task(k=4)
    lease = alice.post("/api/work/next/").json()
    assert lease["kind"] == "rank_completions"
    shown = [c["id"] for c in lease["completions"]]
    assert sorted(shown) == sorted(task.completions.values_list("id", flat=True))
    answer = {"groups": [[shown[0], shown[1]], [shown[2]], [shown[3]]],
              "ratings": {str(cid): {"rating": 5, "harmful_advice": False} for cid in shown},
              "time_spent_seconds": 3}
    response = alice.post(f"/api/work/assignments/{lease['id']}/submit/", answer, format="json")
    assert response.status_code == 200 and response.json()["state"] == "submitted"
    again = alice.post(f"/api/work/assignments/{lease['id']}/submit/", answer, format="json")
    assert again.status_code == 200
    assert Ranking.objects.get().groups == answer["groups"]
    assert alice.post("/api/work/next/").status_code == 204
    assert [a["id"] for a in alice.get("/api/work/mine/").json()["results"]] == [lease["id"]]


def test_an_incomplete_ranking_is_a_400_that_says_what_is_missing(alice):
    ranking_task(k=4)
    lease = alice.post("/api/work/next/").json()
    shown = [c["id"] for c in lease["completions"]]
    response = alice.post(f"/api/work/assignments/{lease['id']}/submit/",
                          {"groups": [shown[:3]], "ratings": {}}, format="json")
    assert response.status_code == 400
    assert "not ranked yet" in response.json()["detail"]
    assert Assignment.objects.get().state == "active"


def test_a_missing_field_for_the_kind_is_a_400_naming_it(alice):
    TaskFactory()
    lease = alice.post("/api/work/next/").json()
    response = alice.post(f"/api/work/assignments/{lease['id']}/submit/", {"language": "en"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"use_case": "This field is required for this kind of task."}


def test_annotating_and_skipping(alice):
    first, second = TaskFactory(), TaskFactory()
    lease = alice.post("/api/work/next/").json()
    skipped = alice.post(f"/api/work/assignments/{lease['id']}/skip/", {"reason": "unclear_intent"}, format="json")
    assert skipped.json()["skip_reason"] == "unclear_intent"
    lease = alice.post("/api/work/next/").json()
    answer = {"use_case": "open_qa", "language": "en", "flags": {"ambiguous": True}}
    assert alice.post(f"/api/work/assignments/{lease['id']}/submit/", answer, format="json").status_code == 200
    assert PromptAnnotation.objects.get().prompt == second.prompt
    assert Task.objects.get(pk=first.pk).state == Task.State.OPEN


def test_a_labeler_cannot_reach_another_labelers_assignment(alice, bob):
    TaskFactory()
    lease = bob.post("/api/work/next/").json()
    assert alice.get(f"/api/work/assignments/{lease['id']}/").status_code == 404
    assert alice.post(f"/api/work/assignments/{lease['id']}/submit/", {}, format="json").status_code == 404
    assert alice.get("/api/work/mine/").json()["count"] == 0


def test_researchers_cannot_use_the_labeler_endpoints(researcher):
    response = api_client_for(researcher).post("/api/work/next/")
    assert response.status_code == 403
    assert response.json()["detail"] == "This endpoint is for labelers."


def test_an_inactive_labeler_is_told_why(labeler):
    TaskFactory()
    response = api_client_for(labeler).post("/api/work/next/")
    assert response.status_code == 400
    assert "Only active labelers" in response.json()["detail"]


def test_a_demonstration_lease_carries_the_policys_suggestion(alice):
    prompt = PromptFactory(text="Name three rivers in France.")
    sft = ModelVersionFactory(kind=ModelVersion.Kind.SFT, status=ModelVersion.Status.ACTIVE, name="sft-3")
    CompletionFactory(prompt=prompt, model_version=sft, text="The Loire, the Seine and the Rhône.")
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)
    lease = alice.post("/api/work/next/").json()
    assert lease["suggestion"] == {"text": "The Loire, the Seine and the Rhône.", "model_version": "sft-3"}
    answer = {"turns": [{"role": "assistant", "content": "The Loire, the Seine and the Garonne."}],
              "used_model_suggestion": True}
    assert alice.post(f"/api/work/assignments/{lease['id']}/submit/", answer, format="json").status_code == 200
    assert Demonstration.objects.get().suggestion_model_version == sft


def ranking_answer(lease):
    shown = [c["id"] for c in lease["completions"]]
    return {"groups": [shown[:2], *[[cid] for cid in shown[2:]]], "ratings": {str(cid): {"rating": 5} for cid in shown}}


def test_a_lease_and_its_submit_stay_within_their_queries(alice, django_assert_max_num_queries, settings):
    # The labeler's whole cycle, savepoints included: a query more here runs for every labeler on every task.
    settings.GOLD_TASK_RATE = 0  # a lease that looks for a gold task first asks once more
    ranking_task(k=4)
    with django_assert_max_num_queries(9):
        lease = alice.post("/api/work/next/").json()
    with django_assert_max_num_queries(12):
        response = alice.post(f"/api/work/assignments/{lease['id']}/submit/", ranking_answer(lease), format="json")
    assert response.status_code == 200 and response.json()["state"] == "submitted"


def test_a_role_taken_away_holds_from_the_next_request(alice, labeler):
    ranking_task(k=4)
    assert alice.post("/api/work/next/").status_code == 200
    services.user_set_role(user=labeler, role=Role.RESEARCHER)
    response = alice.post("/api/work/next/")
    assert response.status_code == 403 and response.json()["detail"] == "This endpoint is for labelers."
    services.user_set_role(user=labeler, role=Role.LABELER)
    assert alice.post("/api/work/next/").status_code == 200


def test_a_token_that_is_wrong_or_whose_user_is_inactive_is_refused(alice, labeler):
    assert APIClient().post("/api/work/next/", HTTP_AUTHORIZATION="Token nosuchtoken").json() == {
        "detail": "Invalid token."}
    get_user_model().objects.filter(pk=labeler.pk).update(is_active=False)
    response = alice.post("/api/work/next/")
    assert response.status_code == 401 and response.json() == {"detail": "User inactive or deleted."}


def test_new_guidelines_hold_from_the_next_lease_and_the_next_submit(alice, labeler):
    ranking_task(k=4), ranking_task(k=4)
    lease = alice.post("/api/work/next/").json()
    guidelines = services.guidelines_publish(title="Ranking", body="Prefer the honest answer.")
    url = f"/api/work/assignments/{lease['id']}/submit/"
    for refused in (alice.post(url, ranking_answer(lease), format="json"), alice.post("/api/work/next/")):
        assert refused.status_code == 400
        assert "acknowledge the guidelines (version 1)" in refused.json()["detail"]
    services.guidelines_acknowledge(user=labeler, version=guidelines.version)
    assert alice.post(url, ranking_answer(lease), format="json").status_code == 200
    assert alice.post("/api/work/next/").status_code == 200


def test_an_assignment_reads_as_drf_renders_its_fields(alice, labeler):
    # The serializer writes its fields out by hand for speed; this holds it to DRF's own rendering of them.
    prompt = PromptFactory()
    sft = ModelVersionFactory(kind=ModelVersion.Kind.SFT, status=ModelVersion.Status.ACTIVE)
    CompletionFactory(prompt=prompt, model_version=sft)
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt, priority=3)
    Task.objects.filter(pk=ranking_task(k=4).pk).update(priority=2)
    services.chat_task_create(priority=1)
    lease = alice.post("/api/work/next/").json()
    alice.post(f"/api/work/assignments/{lease['id']}/skip/", {"reason": "unclear_intent"}, format="json")
    lease = alice.post("/api/work/next/").json()
    alice.post(f"/api/work/assignments/{lease['id']}/submit/", ranking_answer(lease), format="json")
    services.chat_start(assignment=services.task_lease_next(labeler=labeler), labeler=labeler)
    assignments = Assignment.objects.filter(labeler=labeler)
    assert {(a.task.kind, a.state) for a in assignments} == {("write_demonstration", "skipped"),
                                                            ("rank_completions", "submitted"), ("chat", "active")}
    for assignment in assignments:
        serializer = AssignmentSerializer(assignment)
        by_drf = serializers.Serializer.to_representation(serializer, assignment)
        assert serializer.data == by_drf and list(serializer.data) == list(by_drf)
