import pytest
from django.urls import reverse

from labeling import selectors, services
from labeling.models import (
    Assignment,
    Completion,
    Demonstration,
    LabelerProfile,
    ModelVersion,
    PromptAnnotation,
    Ranking,
    Task,
)
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, ranking_task

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


def rank_answer(completions, ranks, **extra):
    """The ranking form's fields: each completion rated 5 and placed at its rank in `ranks`."""
    data = {"time_spent": "40"}
    for completion, rank in zip(completions, ranks, strict=True):
        data |= {f"rating_{completion.pk}": "5", f"rank_{completion.pk}": str(rank)}
    return data | extra


def leased_ranking(labeler, k=4):
    task = ranking_task(k=k)
    assignment = services.task_lease_next(labeler=labeler)
    assert assignment.task == task
    return assignment, selectors.completions_in_order(assignment)


def messages_on(response):
    return [str(message) for message in response.context["messages"]]


def test_a_submit_with_nothing_waiting_says_saved_and_nothing_waits_in_one_message(client, alice):
    TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    response = client.post(reverse("assignment", args=[assignment.pk]), answer(), follow=True)
    assert messages_on(response) == ["Saved. Nothing is waiting for you right now. Check back soon."]
    assert "Here is your next task" not in response.content.decode()


def test_a_submit_with_a_next_task_says_saved_and_opens_it(client, alice):
    TaskFactory(), TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    response = client.post(reverse("assignment", args=[assignment.pk]), answer(), follow=True)
    assert messages_on(response) == ["Saved. Here is your next task."]
    assert response.resolver_match.url_name == "assignment"


def test_a_skip_with_nothing_waiting_says_so_in_one_message(client, alice):
    TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    response = client.post(reverse("assignment-skip", args=[assignment.pk]), {"reason": "unclear_intent"},
                           follow=True)
    assert messages_on(response) == [
        "Skipped; the task goes back to others. Nothing is waiting for you right now. Check back soon."]


def test_the_ranking_page_renders_replies_as_markdown_with_markup_as_text_and_marks_a_cut_off_one(client, alice):
    assignment, completions = leased_ranking(alice)
    Completion.objects.filter(pk=completions[0].pk).update(text="- one\n- two\n\n`code`", finish_reason="length")
    Completion.objects.filter(pk=completions[1].pk).update(text="<script>alert(1)</script>", finish_reason="stop")
    page = client.get(reverse("assignment", args=[assignment.pk])).content.decode()
    assert "<li>one</li>" in page and "<code>code</code>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert page.count("Cut off at the length limit") == 1
    assert page.index("Cut off at the length limit") > page.index('id="output-A"')
    assert page.index("Cut off at the length limit") < page.index('id="output-B"')


def test_a_ranking_without_ranks_is_summed_up_above_the_form_and_on_the_board(client, alice):
    assignment, completions = leased_ranking(alice)
    data = {key: value for key, value in rank_answer(completions, [1, 2, 3, 4]).items() if not key.startswith("rank")}
    response = client.post(reverse("assignment", args=[assignment.pk]), data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "4 answers need fixing: each is marked below." in page
    assert "Give A, B, C, D a rank: every output needs one." in page
    assert page.count("Place this output on the ranking board.") == 4


def test_my_work_shows_everything_a_ranking_submitted(client, alice):
    assignment, completions = leased_ranking(alice)
    Completion.objects.filter(pk=completions[2].pk).update(finish_reason="length")
    a, b, c, d = (completion.pk for completion in completions)
    client.post(reverse("assignment", args=[assignment.pk]), rank_answer(
        completions, [2, 1, 2, 3], none_acceptable="on", **{f"hallucination_{b}": "on", f"harmful_advice_{b}": "on",
                                                            f"rating_{d}": "2", f"notes_{d}": "Repeats itself."}))
    assert Ranking.objects.get().groups == [[b], [a, c], [d]]
    response = client.get(reverse("my-work-detail", args=[assignment.pk]))
    page = response.content.decode()
    assert "Ranking, best first: <strong>B &gt; A = C &gt; D</strong>" in page
    assert "You marked none of these outputs acceptable." in page
    outputs = {output["letter"]: output for output in response.context["outputs"]}
    assert (outputs["B"]["rank"], outputs["B"]["flags"]) == (1, ["Hallucination", "Harmful advice"])
    assert (outputs["A"]["rank"], outputs["A"]["tied_with"], outputs["C"]["tied_with"]) == (2, ["C"], ["A"])
    assert (outputs["D"]["rating"].rating, outputs["D"]["rating"].notes, outputs["D"]["flags"]) == (
        2, "Repeats itself.", [])
    section = lambda letter: page[page.index(f'id="result-{letter}"'):].split("</section>")[0]  # noqa: E731
    assert "<dd>Hallucination, Harmful advice</dd>" in section("B") and "<dd>5/7</dd>" in section("B")
    assert "<dd>2, tied with C</dd>" in section("A") and "<dd>none</dd>" in section("A")
    assert "<dd>2/7</dd>" in section("D") and "Repeats itself." in section("D")
    assert "Cut off at the length limit" in section("C") and page.count("Cut off at the length limit") == 1


def test_my_work_shows_an_annotations_flags_and_choices(client, alice):
    TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    client.post(reverse("assignment", args=[assignment.pk]),
                answer(ambiguous="on", requests_advice="on", contains_personal_data="on"))
    page = client.get(reverse("my-work-detail", args=[assignment.pk])).content.decode()
    assert "<dd>Ambiguous, Requests advice</dd>" in page
    assert "<dd>Chat</dd>" in page and "<dd>contains personal data</dd>" in page


def test_my_work_shows_each_turn_of_a_demonstration_and_the_suggestion_it_started_from(client, alice):
    prompt = PromptFactory(text="How do I boil an egg?")
    CompletionFactory(prompt=prompt, model_version=ModelVersionFactory(status=ModelVersion.Status.ACTIVE,
                                                                       name="policy-7"), text="Simmer it.")
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=prompt)
    assignment = services.task_lease_next(labeler=alice)
    client.post(reverse("assignment", args=[assignment.pk]), {
        "assistant_1": "Simmer it for seven minutes.", "used_suggestion": "True", "user_2": "And runny?",
        "assistant_2": "Five minutes.", "time_spent": "30"})
    response = client.get(reverse("my-work-detail", args=[assignment.pk]))
    assert [(turn["role"], turn["content"], turn["suggested_by"]) for turn in response.context["demonstration_turns"]] \
        == [("assistant", "Simmer it for seven minutes.", "policy-7"), ("user", "And runny?", None),
            ("assistant", "Five minutes.", None)]
    page = response.content.decode()
    assert "Started from the suggestion of policy-7." in page and "Five minutes." in page
    assert page.count("How do I boil an egg?") == 1  # the prompt, not repeated as a turn of the answer


def test_my_work_shows_why_a_task_was_skipped(client, alice):
    TaskFactory()
    assignment = services.task_lease_next(labeler=alice)
    client.post(reverse("assignment-skip", args=[assignment.pk]), {"reason": "not_my_language"})
    page = client.get(reverse("my-work-detail", args=[assignment.pk])).content.decode()
    assert "You skipped this task: <strong>Not my language</strong>." in page
    assert "Not my language" in client.get(reverse("my-work")).content.decode()


def test_another_labelers_ranking_is_a_404_and_never_in_my_work(client, alice, other_labeler):
    task = ranking_task(k=4)
    theirs = services.task_lease_next(labeler=other_labeler)
    completions = selectors.completions_in_order(theirs)
    services.ranking_submit(assignment=theirs, labeler=other_labeler, groups=[[c.pk for c in completions]],
                            ratings={c.pk: {"rating": 3, "notes": "Bob's private note."} for c in completions})
    assert client.get(reverse("my-work-detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("assignment", args=[theirs.pk])).status_code == 404
    listing = client.get(reverse("my-work")).content.decode()
    assert reverse("my-work-detail", args=[theirs.pk]) not in listing and task.prompt.text not in listing
