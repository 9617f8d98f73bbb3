import pytest
from django.urls import reverse

from labeling import services
from labeling.models import Assignment, Demonstration, LabelerProfile, ModelVersion, PromptAnnotation, Task
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(client, labeler, other_labeler):
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    client.force_login(labeler)
    return labeler


def answer(**extra):
    return {"use_case": "chat", "language": "en", "time_spent": "12", **extra}


def test_start_labeling_leases_a_task_and_opens_its_page(client, alice):
    task = TaskFactory()
    response = client.post(reverse("work-next"))
    assignment = Assignment.objects.get()
    assert (assignment.task, assignment.labeler) == (task, alice)
    assert response["Location"] == reverse("assignment", args=[assignment.pk])
    assert task.prompt.text in client.get(response["Location"]).content.decode()


def test_another_labelers_assignment_is_a_404(client, alice, other_labeler):
    TaskFactory()
    theirs = services.task_lease_next(labeler=other_labeler)
    assert client.get(reverse("assignment", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("assignment", args=[theirs.pk]), answer()).status_code == 404
    assert client.post(reverse("assignment-skip", args=[theirs.pk]), {"reason": "unclear_intent"}).status_code == 404
    assert client.get(reverse("my-work-detail", args=[theirs.pk])).status_code == 404
    assert not PromptAnnotation.objects.exists()


def test_a_double_submit_stores_one_result_and_moves_on(client, alice):
    TaskFactory(), TaskFactory()
    first = services.task_lease_next(labeler=alice)
    url = reverse("assignment", args=[first.pk])
    client.post(url, answer(ambiguous="on"))
    again = client.post(url, answer())
    assert PromptAnnotation.objects.filter(labeler=alice).count() == 1
    assert PromptAnnotation.objects.get().ambiguous is True
    assert Assignment.objects.get(pk=first.pk).time_spent_seconds <= 12
    assert again.status_code == 302


def test_a_missing_answer_is_a_400_next_to_the_field_with_the_rest_kept(client, alice):
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT)
    assignment = services.task_lease_next(labeler=alice)
    response = client.post(reverse("assignment", args=[assignment.pk]),
                           {"style": "user_based", "text": "My carefully written prompt", "language": "en"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "needs the use case it is based on" in page
    assert "My carefully written prompt</textarea>" in page


def test_skipping_records_the_reason_and_offers_the_next_task(client, alice):
    TaskFactory(), TaskFactory()
    first = services.task_lease_next(labeler=alice)
    response = client.post(reverse("assignment-skip", args=[first.pk]), {"reason": "beyond_comfort"})
    skipped = Assignment.objects.get(pk=first.pk)
    assert (skipped.state, skipped.skip_reason) == ("skipped", "beyond_comfort")
    second = Assignment.objects.exclude(pk=first.pk).get()
    assert response["Location"] == reverse("assignment", args=[second.pk])


def test_a_submitted_task_opens_read_only(client, alice):
    TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    client.post(reverse("assignment", args=[assignment.pk]), answer())
    response = client.get(reverse("assignment", args=[assignment.pk]))
    assert response["Location"] == reverse("my-work-detail", args=[assignment.pk])
    page = client.get(response["Location"]).content.decode()
    assert "can be read but not changed" in page and 'id="task-form"' not in page


def test_an_inactive_labeler_is_told_why_there_is_no_task(client, labeler):
    TaskFactory()
    client.force_login(labeler)
    response = client.post(reverse("work-next"), follow=True)
    assert "Only active labelers receive tasks" in response.content.decode()


def test_a_demonstration_page_offers_the_active_policys_reply_and_records_its_use(client, alice):
    prompt = PromptFactory(text="How do I boil an egg?")
    old = ModelVersionFactory(status=ModelVersion.Status.RETIRED)
    active = ModelVersionFactory(status=ModelVersion.Status.ACTIVE)
    CompletionFactory(prompt=prompt, model_version=old, text="An older draft.")
    CompletionFactory(prompt=prompt, model_version=active, text="Simmer it for seven minutes.")
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)
    assignment = services.task_lease_next(labeler=alice)
    url = reverse("assignment", args=[assignment.pk])
    page = client.get(url).content.decode()
    assert "Simmer it for seven minutes." in page and "An older draft." not in page
    client.post(url, {"assistant_1": "Simmer it for seven minutes, then cool it.", "used_suggestion": "True",
                      "time_spent": "30"})
    demonstration = Demonstration.objects.get()
    assert (demonstration.used_model_suggestion, demonstration.suggestion_model_version) == (True, active)


def test_without_an_active_model_there_is_no_suggestion(client, alice):
    prompt = PromptFactory()
    CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(status=ModelVersion.Status.READY))
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)
    assignment = services.task_lease_next(labeler=alice)
    url = reverse("assignment", args=[assignment.pk])
    assert "Model suggestion" not in client.get(url).content.decode()
    client.post(url, {"assistant_1": "My own reply.", "used_suggestion": "True", "time_spent": "30"})
    demonstration = Demonstration.objects.get()
    assert (demonstration.used_model_suggestion, demonstration.suggestion_model_version) == (False, None)
