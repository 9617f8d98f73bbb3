"""The shape of answers: each rule refuses with a sentence naming the turn and the field, through the service,
the API and the page; nothing is stored and the lease stays usable for a fixed answer."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from labeling import answers, services
from labeling.models import Assignment, CompletionRating, Demonstration, LabelerProfile, Prompt, Ranking, Task
from tests.conftest import api_client_for
from tests.factories import PromptFactory, TaskFactory, ranking_task

pytestmark = pytest.mark.django_db

REPLY = {"role": "assistant", "content": "A fine reply."}


@pytest.fixture
def alice(labeler):
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE)
    return labeler


@pytest.fixture
def limits(settings):
    settings.ANSWER_MAX_TURN_CHARS = 20_000
    settings.ANSWER_MAX_CONVERSATION_CHARS = 100_000
    settings.ANSWER_MAX_TURNS = 40
    settings.ANSWER_MAX_NOTES_CHARS = 2_000
    return settings


def demonstration_lease(labeler, **task):
    """A lease on a demonstration task; its prompt is one user turn unless `prompt` says otherwise."""
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, **task)
    return services.task_lease_next(labeler=labeler)


# The labeler's turns after a one-turn prompt (so their first is turn 2), and the sentence each gets.
CASES = [
    ([{"role": "assistant", "content": 5}], "Turn 2 (assistant): content must be text, not a number."),
    ([{"role": "assistant", "content": True}], "Turn 2 (assistant): content must be text, not true or false."),
    ([{"role": "assistant", "content": ["a"]}], "Turn 2 (assistant): content must be text, not a list."),
    ([{"role": "assistant", "content": "  \n"}], "Turn 2 (assistant): content is empty."),
    ([{"role": "user", "content": "Again?"}, REPLY],
     "Turn 2: two user turns in a row; turns alternate between user and assistant."),
    ([REPLY, {"role": "assistant", "content": "And more."}],
     "Turn 3: two assistant turns in a row; turns alternate between user and assistant."),
    ([{"role": "system", "content": "Be brief."}, REPLY], "Turn 2: a system turn can only come first."),
    ([{"role": "bot", "content": "Hi"}], "Turn 2: role must be user or assistant, not 'bot'."),
    ([{"content": "Hi"}], "Turn 2 has no role; a turn holds a role and its content."),
    ([{"role": "assistant"}], "Turn 2 has no content; a turn holds a role and its content."),
    ([{"role": "assistant", "content": "Hi", "extra": 1}],
     "Turn 2 has unknown fields: extra; a turn holds only role and content."),
    ([{"role": "assistant", "content": "Hi", "%(turn)s": 1}],
     "Turn 2 has unknown fields: %(turn)s; a turn holds only role and content."),
    ([{"role": "assistant", "content": "x" * 25_000}],
     "Turn 2 (assistant): content is 25,000 characters; at most 20,000."),
    ([REPLY, {"role": "user", "content": "x" * 25_000}, REPLY],
     "Turn 3 (user): content is 25,000 characters; at most 20,000."),
    ([REPLY, {"role": "user", "content": "More?"}],
     "Write the assistant's reply: the conversation ends with the assistant, and turn 3 is the user's."),
    ([REPLY, {"role": "user", "content": "More?"}] * 20 + [REPLY], "The conversation has 42 turns; at most 40."),
    ([{"role": "assistant", "content": "x" * 19_000}, {"role": "user", "content": "y" * 19_000}] * 3
     + [{"role": "assistant", "content": "z" * 19_000}],
     "The conversation is {:,} characters in all; at most 100,000."),
]
# The API's parser refuses a NUL character in any body before the service sees it; other callers meet this.
NUL = ([{"role": "assistant", "content": "a\x00b"}],
       "Turn 2 (assistant): content holds a NUL character, which can't be stored.")


def expected(message, prompt):
    return message.format(133_000 + len(prompt.text))


@pytest.mark.parametrize("turns, message", [*CASES, NUL])
def test_a_broken_demonstration_is_refused_by_the_service_naming_the_turn(alice, limits, turns, message):
    assignment = demonstration_lease(alice)
    with pytest.raises(ValidationError) as refused:
        services.demonstration_write(assignment=assignment, labeler=alice, turns=turns)
    assert refused.value.messages == [expected(message, assignment.task.prompt)]
    assert not Demonstration.objects.exists()
    assert Assignment.objects.get(pk=assignment.pk).state == Assignment.State.ACTIVE
    services.demonstration_write(assignment=assignment, labeler=alice, turns=[REPLY])
    assert Demonstration.objects.get().messages[1:] == [REPLY]


@pytest.mark.parametrize("turns, message", CASES)
def test_a_broken_demonstration_is_a_400_over_the_api_and_the_lease_still_takes_a_fixed_one(
        alice, limits, turns, message):
    client = api_client_for(alice)
    lease = demonstration_lease(alice)
    url = f"/api/work/assignments/{lease.pk}/submit/"
    response = client.post(url, {"turns": turns}, format="json")
    assert response.status_code == 400
    assert response.json() == {"detail": expected(message, lease.task.prompt)}
    assert not Demonstration.objects.exists()
    fixed = client.post(url, {"turns": [REPLY]}, format="json")
    assert fixed.status_code == 200 and fixed.json()["state"] == "submitted"
    assert Demonstration.objects.get().messages[-1] == REPLY


def test_every_problem_of_an_answer_is_named_at_once(alice, limits):
    assignment = demonstration_lease(alice)
    with pytest.raises(ValidationError) as refused:
        services.demonstration_write(assignment=assignment, labeler=alice, turns=[
            {"role": "assistant", "content": 5}, {"role": "user", "content": "ok", "tone": "warm"}, REPLY])
    assert refused.value.messages == [
        "Turn 2 (assistant): content must be text, not a number.",
        "Turn 3 has unknown fields: tone; a turn holds only role and content.",
    ]


def test_the_api_takes_turns_only_as_a_list_of_objects(alice):
    client = api_client_for(alice)
    lease = demonstration_lease(alice)
    url = f"/api/work/assignments/{lease.pk}/submit/"
    assert client.post(url, {"turns": "A fine reply."}, format="json").status_code == 400
    assert client.post(url, {"turns": ["A fine reply."]}, format="json").status_code == 400
    assert not Demonstration.objects.exists()


def chat_prompt(*turns):
    text = "\n\n".join(f"{role.capitalize()}: {content}" for role, content in turns)
    return PromptFactory(text=text, turns=[{"role": role, "content": content} for role, content in turns])


def test_a_system_turn_opens_a_demonstration_only_where_the_task_allows_one(alice, limits, other_labeler):
    prompt = chat_prompt(("system", "You are a terse assistant."), ("user", "Name a colour."))
    assignment = demonstration_lease(alice, prompt=prompt)
    with pytest.raises(ValidationError) as refused:
        services.demonstration_write(assignment=assignment, labeler=alice, turns=[REPLY])
    assert refused.value.messages == [
        "This task's prompt can't be answered as it stands: Turn 1: a system turn is not allowed in this task. "
        "Skip the task as broken."]

    Task.objects.filter(pk=assignment.task_id).update(params={"system_prompt_allowed": True})
    services.demonstration_write(assignment=assignment, labeler=alice, turns=[REPLY])
    assert [m["role"] for m in Demonstration.objects.get().messages] == ["system", "user", "assistant"]


def test_a_chat_prompt_numbers_the_turns_through_the_whole_conversation(alice, limits):
    prompt = chat_prompt(("user", "Hi"), ("assistant", "Hello!"), ("user", "Name a colour."))
    assignment = demonstration_lease(alice, prompt=prompt)
    with pytest.raises(ValidationError) as refused:
        services.demonstration_write(assignment=assignment, labeler=alice, turns=[
            REPLY, {"role": "user", "content": "x" * 25_000}, REPLY])
    assert refused.value.messages == ["Turn 5 (user): content is 25,000 characters; at most 20,000."]


def test_the_demonstration_page_shows_each_problem_beside_its_turn(client, alice, limits):
    assignment = demonstration_lease(alice)
    client.force_login(alice)
    url = reverse("assignment", args=[assignment.pk])
    response = client.post(url, {"assistant_1": "  ", "user_2": "x" * 25_000, "assistant_2": "Sure.",
                                 "time_spent": "5"})
    assert response.status_code == 400
    page = response.content.decode()
    empty = page.index("Turn 2 (assistant): content is empty.")
    too_long = page.index("Turn 3 (user): content is 25,000 characters; at most 20,000.")
    assert page.index('name="assistant_1"') < empty < page.index('name="user_2"') < too_long < page.index(
        'name="assistant_2"')
    assert not Demonstration.objects.exists()
    client.post(url, {"assistant_1": "A fine reply.", "time_spent": "5"})
    assert Demonstration.objects.get().messages[-1] == {"role": "assistant", "content": "A fine reply."}


def ratings(task, **extra):
    return {c.pk: {"rating": 4, **extra} for c in task.completions.all()}


def test_ranking_notes_longer_than_the_limit_are_refused(labeler, limits):
    task = ranking_task(k=4)
    groups = [[c.pk] for c in task.completions.all()]
    first = groups[0][0]
    notes = {**ratings(task), first: {"rating": 2, "notes": "n" * 3_000}}
    with pytest.raises(ValidationError) as refused:
        services.ranking_save(task=task, labeler=labeler, groups=groups, ratings=notes)
    assert refused.value.messages == [f"The notes on completion {first} must be at most 2,000 characters long, not "
                                      "3,000."]
    assert not Ranking.objects.exists() and not CompletionRating.objects.exists()
    services.ranking_save(task=task, labeler=labeler, groups=groups, ratings={**notes, first: {"rating": 2,
                                                                                               "notes": "n" * 2_000}})
    assert CompletionRating.objects.get(completion_id=first).notes == "n" * 2_000


def test_the_ranking_page_shows_a_notes_problem_beside_those_notes(client, alice, limits):
    task = ranking_task(k=4)
    assignment = services.task_lease_next(labeler=alice)
    client.force_login(alice)
    shown = assignment.display_order
    data = {"time_spent": "5"}
    for rank, cid in enumerate(shown, start=1):
        data |= {f"rating_{cid}": "4", f"rank_{cid}": str(rank), f"notes_{cid}": ""}
    data[f"notes_{shown[1]}"] = "n" * 3_000
    response = client.post(reverse("assignment", args=[assignment.pk]), data)
    assert response.status_code == 400
    page = response.content.decode()
    message = page.index(f"The notes on completion {shown[1]} must be at most 2,000 characters long")
    # After those notes, in the same output's card: before the next output's fields.
    assert page.index(f'name="notes_{shown[1]}"') < message < page.index(f'name="rating_{shown[2]}"')
    assert not Ranking.objects.filter(task=task).exists()


def test_a_written_prompt_longer_than_the_prompt_limit_is_refused_beside_the_text(client, alice, settings):
    settings.PROMPT_MAX_CHARS = 100
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT)
    assignment = services.task_lease_next(labeler=alice)
    with pytest.raises(ValidationError, match="the prompt is 101 characters long; the limit is 100"):
        services.prompt_write(assignment=assignment, labeler=alice, style="plain", text="x" * 101)
    client.force_login(alice)
    response = client.post(reverse("assignment", args=[assignment.pk]),
                           {"style": "plain", "language": "en", "text": "x" * 101, "time_spent": "5"})
    page = response.content.decode()
    assert response.status_code == 400
    assert page.index('name="text"') < page.index("the prompt is 101 characters long")
    assert not Prompt.objects.exists()


def test_free_text_reasons_and_screening_notes_keep_the_notes_limit(labeler, admin_user, limits):
    limits.ANSWER_MAX_NOTES_CHARS = 50
    profile = LabelerProfile.objects.get(user=labeler)
    LabelerProfile.objects.filter(pk=profile.pk).update(status="active")
    profile.refresh_from_db()
    with pytest.raises(ValidationError, match="The reason must be at most 50 characters long, not 51."):
        services.labeler_set_status(profile=profile, status="paused", reason="r" * 51, changed_by=admin_user)
    services.labeler_set_status(profile=profile, status="paused", reason="r" * 50, changed_by=admin_user)
    profile.refresh_from_db()
    assert (profile.status, profile.status_reason) == ("paused", "r" * 50)


def test_a_prompt_may_open_with_a_system_turn_but_must_end_with_the_user(limits):
    rules = answers.Limits.from_settings()
    system, user, reply = ({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello"})
    assert answers.prompt_problems("Hi", [system, user], limits=rules) == []
    assert [p.message for p in answers.prompt_problems("Hi", [user, system, user], limits=rules)] == [
        "Turn 2: a system turn can only come first.",
        "Turn 3: two user turns in a row; turns alternate between user and assistant."]
    assert [p.message for p in answers.prompt_problems("Hi", [user, reply], limits=rules)] == [
        "Turn 2: the last turn must be the user's, since the model replies to it."]
