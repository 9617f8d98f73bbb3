import pytest

from labeling.models import Assignment, Demonstration, LabelerProfile, ModelVersion, PromptAnnotation, Ranking, Task
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
