"""Chats with the model: turns, streamed replies written by the chat worker's service, stop, regenerate,
rewrite, and the comparison an ended chat opens. The model is the tiny one, sampled in process."""

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from django.utils.html import escape

from labeling import samplers, services, streams
from labeling.models import (
    Assignment,
    ChatMessage,
    Completion,
    Demonstration,
    LabelerProfile,
    ModelVersion,
    Prompt,
    Task,
)
from tests.conftest import api_client_for
from tests.factories import PromptFactory, TaskFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(settings, tiny_model):
    settings.POLICY_MODEL = str(tiny_model)
    settings.CHAT_MAX_NEW_TOKENS = 12
    settings.OVERLAP_SHARE = 0
    cache.delete(samplers.STATE)
    return tiny_model


@pytest.fixture
def alice(labeler, other_labeler, model):
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    return api_client_for(labeler)


@pytest.fixture
def bob(other_labeler):
    return api_client_for(other_labeler)


def start(client, system_prompt="You are a terse assistant."):
    services.chat_task_create(system_prompt=system_prompt)
    lease = client.post("/api/work/next/").json()
    assert lease["kind"] == "chat"
    return client.post(f"/api/work/assignments/{lease['id']}/chat/").json()


def send(client, chat, text, after):
    response = client.post(f"/api/work/chats/{chat['id']}/turns/", {"text": text, "after": after}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def events_of(body):
    """(event, data) of each server-sent event in a body."""
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def write(reply):
    """What the chat worker does with a reply: stream it from the active policy and store it."""
    return services.chat_reply_write(message_id=reply["id"])


def test_a_labeler_chats_and_the_model_answers_each_turn(alice):
    chat = start(alice)
    assert chat["state"] == "open" and chat["messages"] == [] and chat["system_prompt"] == "You are a terse assistant."
    reply = send(alice, chat, "Hello there!", after=None)
    assert reply["state"] == "pending" and reply["role"] == "assistant" and reply["position"] == 2
    written = write(reply)
    assert written.state == ChatMessage.State.DONE and written.text
    assert written.model_version == ModelVersion.objects.get(kind="policy", status="active")
    assert written.finish_reason in ("stop", "length") and written.token_count <= 12
    second = write(send(alice, chat, "Tell me more.", after=written.pk))
    chat = alice.get(f"/api/work/chats/{chat['id']}/").json()
    assert [(m["role"], m["text"]) for m in chat["messages"]] == [
        ("user", "Hello there!"), ("assistant", written.text), ("user", "Tell me more."), ("assistant", second.text)]
    # The reply saw the whole conversation: the same context and seed give the same text again.
    sampler = samplers.sampler_for(written.model_version)
    context = [{"role": "system", "content": "You are a terse assistant."}, {"role": "user", "content": "Hello there!"}]
    again = [piece for piece in sampler.stream(context, services.chat._sampling_params(written))][-1]
    assert services.chat._storable(again.text) == written.text  # as stored: a NUL the tiny model wrote is dropped


def test_the_stream_carries_the_reply_in_parts_and_resumes_from_an_offset(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    message = ChatMessage.objects.get(pk=reply["id"])
    stream = streams.ReplyStream(message)
    stream.write("Hel")
    ChatMessage.objects.filter(pk=message.pk).update(state="streaming")
    message.refresh_from_db()
    events = streams.reply_events(stream, streams.snapshot(message), 0, seconds=0.3, poll=0.01)
    assert next(events).startswith("retry:")
    assert next(events) == 'id: 3\nevent: text\ndata: {"offset": 0, "text": "Hel"}\n\n'
    stream.write("Hello, wor")
    assert next(events) == 'id: 10\nevent: text\ndata: {"offset": 3, "text": "lo, wor"}\n\n'
    # A reader that dropped after "Hello" goes on from there.
    resumed = streams.reply_events(stream, streams.snapshot(message), 5, seconds=0.3, poll=0.01)
    next(resumed)
    assert '"text": ", wor"' in next(resumed)
    stream.write("Hello, world.", "done", finish_reason="stop", error="", model_version="base")
    end = next(resumed)
    assert end.startswith("id: 13\nevent: end\n") and '"text": "Hello, world."' in end and '"state": "done"' in end
    assert list(resumed) == []


def test_a_dropped_stream_resumes_from_the_last_event_id(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    message = ChatMessage.objects.get(pk=reply["id"])
    ChatMessage.objects.filter(pk=message.pk).update(state="streaming")
    streams.ReplyStream(message).write("Hello, wor")
    response = alice.get(f"/api/work/chat-messages/{reply['id']}/stream/", HTTP_LAST_EVENT_ID="5")
    events = iter(response.streaming_content)
    next(events)
    assert json.loads(next(events).decode().split("data: ")[1]) == {"offset": 5, "text": ", wor"}
    response.close()


def test_my_work_shows_the_chat_read_only(alice, client, labeler):
    chat = start(alice)
    written = write(send(alice, chat, "Hello there!", after=None))
    alice.post(f"/api/work/chat-messages/{written.pk}/rewrite/", {"text": "Hi! <b>How</b> can I help?"}, format="json")
    alice.post(f"/api/work/chats/{chat['id']}/end/")
    client.force_login(labeler)
    page = client.get(f"/work/mine/{chat['assignment']}/").content.decode()
    assert "Hello there!" in page and "Hi! &lt;b&gt;How&lt;/b&gt; can I help?" in page
    assert f"the model wrote: {escape(written.text)}" in page


def test_the_stream_endpoint_sends_the_stored_reply_once_it_is_written(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    written = write(reply)
    response = alice.get(f"/api/work/chat-messages/{reply['id']}/stream/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = events_of(b"".join(response.streaming_content).decode())
    assert events == [("end", {"text": written.text, "state": "done", "finish_reason": written.finish_reason,
                               "error": "", "model_version": "base"})]
    resumed = alice.get(f"/api/work/chat-messages/{reply['id']}/stream/?offset=abc")
    assert resumed.status_code == 400 and "whole number" in resumed.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_a_streaming_request_holds_no_database_connection(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    response = alice.get(f"/api/work/chat-messages/{reply['id']}/stream/", HTTP_ACCEPT="text/event-stream")
    events = iter(response.streaming_content)
    next(events)  # the stream is open and waiting for a worker
    assert b"waiting" in next(events)
    assert connection.connection is None
    response.close()


def test_the_labeler_stops_a_reply_before_and_while_it_is_written(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    stopped = alice.post(f"/api/work/chat-messages/{reply['id']}/stop/").json()
    assert stopped["state"] == "stopped" and stopped["finish_reason"] == "abort" and stopped["text"] == ""
    assert write(reply) is None  # no worker writes a stopped reply
    # An empty reply can't be answered: the labeler regenerates it, and stops the next one at its first token.
    refused = alice.post(f"/api/work/chats/{chat['id']}/turns/", {"text": "Hi?", "after": reply["id"]}, format="json")
    assert refused.status_code == 400 and "regenerate it or rewrite it" in refused.json()["detail"]
    again = alice.post(f"/api/work/chat-messages/{reply['id']}/regenerate/").json()
    message = ChatMessage.objects.get(pk=again["id"])
    streams.ReplyStream(message).ask_stop()
    written = write(again)
    assert written.state == "stopped" and written.finish_reason == "abort"
    assert ChatMessage.objects.filter(conversation_id=chat["id"], position=2).count() == 2


def test_regenerate_keeps_the_old_reply_aside_and_rewrite_keeps_the_models(alice):
    chat = start(alice)
    first = write(send(alice, chat, "Hello there!", after=None))
    again = alice.post(f"/api/work/chat-messages/{first.pk}/regenerate/").json()
    assert again["position"] == 2 and again["id"] != first.pk
    first.refresh_from_db()
    assert first.superseded
    second = write(again)
    rewritten = alice.post(f"/api/work/chat-messages/{second.pk}/rewrite/", {"text": "Hi! How can I help?"},
                           format="json").json()
    assert rewritten["text"] == "Hi! How can I help?" and rewritten["rewritten"]
    assert rewritten["original_text"] == second.text
    twice = alice.post(f"/api/work/chat-messages/{second.pk}/rewrite/", {"text": "Hello! What do you need?"},
                       format="json").json()
    assert twice["original_text"] == second.text  # the model's words, not the first rewrite
    messages = alice.get(f"/api/work/chats/{chat['id']}/").json()["messages"]
    assert [m["id"] for m in messages] == [messages[0]["id"], second.pk]  # the regenerated reply is not a turn
    # Only the latest reply changes; the labeler's own turns are not the model's to regenerate.
    stale = alice.post(f"/api/work/chat-messages/{messages[0]['id']}/regenerate/")
    assert stale.status_code == 409


def test_two_tabs_cannot_interleave_turns(alice):
    chat = start(alice)
    first = write(send(alice, chat, "Hello there!", after=None))
    send(alice, chat, "From the first tab.", after=first.pk)
    behind = alice.post(f"/api/work/chats/{chat['id']}/turns/", {"text": "From the second tab.", "after": first.pk},
                        format="json")
    assert behind.status_code == 409 and "moved on" in behind.json()["detail"]
    latest = alice.get(f"/api/work/chats/{chat['id']}/").json()["messages"][-1]
    busy = alice.post(f"/api/work/chats/{chat['id']}/turns/", {"text": "Too soon.", "after": latest["id"]},
                      format="json")
    assert busy.status_code == 409 and "still writing" in busy.json()["detail"]
    assert ChatMessage.objects.filter(conversation_id=chat["id"], role="user").count() == 2


@pytest.mark.parametrize(("text", "said"), [
    ("   ", "Your turn: content is empty."),
    ("x" * 21, "Your turn: content is 21 characters; at most 20."),
    ("bad \x00 byte", "NUL character"),
])
def test_a_turn_has_the_limits_of_any_text(alice, settings, text, said):
    settings.ANSWER_MAX_TURN_CHARS = 20
    chat = start(alice, system_prompt="")
    response = alice.post(f"/api/work/chats/{chat['id']}/turns/", {"text": text, "after": None}, format="json")
    assert response.status_code == 400 and said in response.json()["detail"]
    assert not ChatMessage.objects.filter(conversation_id=chat["id"]).exists()


def test_bad_turn_bodies_are_refused_with_a_reason(alice):
    chat = start(alice)
    for body in ({"text": 5, "after": None}, {"after": None}, {"text": "Hi"}, {"text": "Hi", "after": "last"}):
        response = alice.post(f"/api/work/chats/{chat['id']}/turns/", body, format="json")
        assert response.status_code == 400, body
    assert not ChatMessage.objects.exists()


def test_a_chat_stops_at_its_turn_cap(alice, settings):
    settings.CHAT_MAX_TURNS = 1
    chat = start(alice)
    first = write(send(alice, chat, "Hello there!", after=None))
    response = alice.post(f"/api/work/chats/{chat['id']}/turns/", {"text": "More?", "after": first.pk}, format="json")
    assert response.status_code == 400 and "reached its 1 turns: end it" in response.json()["detail"]


def test_a_sampler_that_is_down_fails_the_reply_and_loses_nothing(alice, settings):
    settings.SAMPLER_URL = "http://127.0.0.1:9/v1"  # nothing listens there
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    failed = write(reply)
    assert failed.state == "failed" and "could not answer" in failed.error and "Try again" in failed.error
    body = b"".join(alice.get(f"/api/work/chat-messages/{reply['id']}/stream/").streaming_content).decode()
    [(name, data)] = events_of(body)
    assert name == "end" and data["state"] == "failed" and "could not answer" in data["error"]
    settings.SAMPLER_URL = ""
    again = write(alice.post(f"/api/work/chat-messages/{reply['id']}/regenerate/").json())
    assert again.state == "done"
    assert ChatMessage.objects.get(conversation_id=chat["id"], role="user").text == "Hello there!"


def test_no_one_else_sees_or_changes_a_chat(alice, bob):
    chat = start(alice)
    reply = send(alice, chat, "Something private.", after=None)
    LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
    for response in (
        bob.get(f"/api/work/chats/{chat['id']}/"),
        bob.post(f"/api/work/chats/{chat['id']}/turns/", {"text": "Hi", "after": reply["id"]}, format="json"),
        bob.post(f"/api/work/chats/{chat['id']}/end/"),
        bob.get(f"/api/work/chat-messages/{reply['id']}/"),
        bob.get(f"/api/work/chat-messages/{reply['id']}/stream/"),
        bob.post(f"/api/work/chat-messages/{reply['id']}/stop/"),
        bob.post(f"/api/work/chat-messages/{reply['id']}/regenerate/"),
        bob.post(f"/api/work/chat-messages/{reply['id']}/rewrite/", {"text": "Mine now."}, format="json"),
        bob.post(f"/api/work/assignments/{chat['assignment']}/chat/"),
    ):
        assert response.status_code == 404
    assert ChatMessage.objects.get(pk=reply["id"]).state == "pending"


def test_ending_a_chat_opens_a_ranking_of_one_reply_for_someone_else(alice, bob, settings, labeler):
    settings.CHAT_RANK_K = 5
    chat = start(alice)
    after = None
    for text in ("Hello there!", "What is two and two?", "Thanks."):
        after = write(send(alice, chat, text, after=after)).pk
    ended = alice.post(f"/api/work/chats/{chat['id']}/end/", {"time_spent_seconds": 30}, format="json").json()
    assert ended["state"] == "ended"
    assert Assignment.objects.get(pk=chat["assignment"]).state == "submitted"
    conversation = labeler.conversations.get()
    replies = [m for m in conversation.messages.all() if m.role == "assistant"]
    # The choice is the seeded one, reproducible from the recorded seed.
    assert conversation.chosen_message == services.message_choose(seed=conversation.choice_seed, messages=replies)
    prompt = conversation.ranking_prompt
    chosen = conversation.chosen_message
    assert prompt.source == Prompt.Source.CHAT and prompt.created_by == labeler and prompt.needs_completions
    assert prompt.turns[0] == {"role": "system", "content": "You are a terse assistant."}
    assert prompt.turns[1:] == [{"role": m.role, "content": m.text} for m in conversation.messages.all()
                                if m.position < chosen.position]
    assert [c.text for c in prompt.completions.all()] == [chosen.text]
    # The sampling round adds K - 1 alternatives from the active policy and opens the ranking task.
    assert services.completions_sample(prompt_ids=[prompt.pk]) == 1
    task = Task.objects.get(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt)
    completions = list(task.completions.order_by("id"))
    active = ModelVersion.objects.get(kind="policy", status="active")
    assert len(completions) == 5 and completions[0].text == chosen.text
    assert all(c.model_version == active for c in completions)
    assert all(c.sampling_params["max_new_tokens"] == settings.CHAT_MAX_NEW_TOKENS for c in completions[1:])
    # The chatting labeler never ranks it; another labeler gets it, with the conversation as its prompt.
    assert alice.post("/api/work/next/").status_code == 204
    lease = bob.post("/api/work/next/").json()
    assert lease["kind"] == "rank_completions" and lease["prompt"]["turns"] == prompt.turns
    assert sorted(c["id"] for c in lease["completions"]) == [c.pk for c in completions]
    # Ending twice changes nothing.
    again = alice.post(f"/api/work/chats/{chat['id']}/end/").json()
    assert again["state"] == "ended" and Completion.objects.filter(prompt=prompt).count() == 5


def test_a_chat_cannot_end_while_a_reply_is_written_or_before_any_turn(alice):
    chat = start(alice)
    empty = alice.post(f"/api/work/chats/{chat['id']}/end/")
    assert empty.status_code == 400 and "at least one turn" in empty.json()["detail"]
    send(alice, chat, "Hello there!", after=None)
    busy = alice.post(f"/api/work/chats/{chat['id']}/end/")
    assert busy.status_code == 409 and "still writing" in busy.json()["detail"]
    assert Assignment.objects.get(pk=chat["assignment"]).state == "active"


def test_a_chat_of_failed_replies_ends_without_a_ranking(alice, settings):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    alice.post(f"/api/work/chat-messages/{reply['id']}/stop/")
    ended = alice.post(f"/api/work/chats/{chat['id']}/end/").json()
    assert ended["state"] == "ended"
    assert not Prompt.objects.filter(source=Prompt.Source.CHAT).exists()


def test_the_choice_is_uniform_and_reproducible():
    messages = [ChatMessage(position=n) for n in (2, 4, 6, 8)]
    picks = [services.message_choose(seed=seed, messages=messages).position for seed in range(4000)]
    assert picks == [services.message_choose(seed=seed, messages=messages[::-1]).position for seed in range(4000)]
    assert all(850 < picks.count(position) < 1150 for position in (2, 4, 6, 8))
    assert services.message_choose(seed=1, messages=[]) is None


def test_chat_tasks_are_checked_when_they_are_opened(db):
    with pytest.raises(Exception, match="1 to 1000 conversations"):
        services.chat_task_create(conversations=0)
    with pytest.raises(Exception, match="must be text"):
        services.chat_task_create(system_prompt=["a list"])
    with pytest.raises(Exception, match="language"):
        services.chat_task_create(language="xx")
    task = services.chat_task_create(conversations=3, system_prompt="Be kind.")
    assert task.kind == "chat" and task.required_annotations == 3 and task.params["system_prompt"] == "Be kind."


def test_a_chat_is_submitted_by_ending_it_not_through_submit(alice):
    chat = start(alice)
    response = alice.post(f"/api/work/assignments/{chat['assignment']}/submit/", {}, format="json")
    assert response.status_code == 400 and "ending it" in response.json()["detail"]


# Suggestions for a demonstration's turns, where the labeler plays both sides

@pytest.fixture
def demonstration(alice):
    TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=PromptFactory(text="Plan a picnic for four."))
    return alice.post("/api/work/next/").json()


def test_the_model_suggests_a_reply_for_any_turn_and_the_demonstration_records_which_were_used(alice, demonstration):
    first = alice.post(f"/api/work/assignments/{demonstration['id']}/suggestions/", {"turns": []},
                       format="json").json()
    assert first["turn"] == 1 and first["state"] == "pending"
    services.suggestion_write(suggestion_id=first["id"])
    turns = [{"role": "assistant", "content": "Where will it be?"}, {"role": "user", "content": "In a park."}]
    third = alice.post(f"/api/work/assignments/{demonstration['id']}/suggestions/", {"turns": turns},
                       format="json").json()
    assert third["turn"] == 3
    written = services.suggestion_write(suggestion_id=third["id"])
    assert written.state == "done" and written.text and written.model_version.name == "base"
    # The suggestion saw the prompt and the labeler's turns: the same context and seed give the same text.
    context = [{"role": "user", "content": "Plan a picnic for four."}, *turns]
    again = list(samplers.sampler_for(written.model_version).stream(context, services.chat._sampling_params(written)))
    assert services.chat._storable(again[-1].text) == written.text  # as stored: a NUL the tiny model wrote is dropped
    events = events_of(b"".join(alice.get(f"/api/work/suggestions/{third['id']}/stream/").streaming_content).decode())
    assert events[-1][0] == "end" and events[-1][1]["text"] == written.text
    answer = {"turns": [*turns, {"role": "assistant", "content": written.text}], "suggestions_used": [third["id"]]}
    response = alice.post(f"/api/work/assignments/{demonstration['id']}/submit/", answer, format="json")
    assert response.status_code == 200, response.json()
    recorded = Demonstration.objects.get()
    assert recorded.turn_suggestions == [{"turn": 1, "model_version": "base", "used": False},
                                         {"turn": 3, "model_version": "base", "used": True}]
    assert recorded.used_model_suggestion


def test_a_suggestion_request_is_checked_like_the_answer(alice, demonstration):
    url = f"/api/work/assignments/{demonstration['id']}/suggestions/"
    for turns, said in (
        ([{"role": "assistant", "content": "Hi"}], "must be the user's"),
        ([{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "  "}], "content is empty"),
        ("turns", "must be a list"),
    ):
        response = alice.post(url, {"turns": turns}, format="json")
        assert response.status_code == 400 and said in response.json()["detail"], response.json()
    assert alice.post(url, {"turns": []}, format="json").status_code == 201
    busy = alice.post(url, {"turns": []}, format="json")
    assert busy.status_code == 409 and "still writing" in busy.json()["detail"]
    alice.post(f"/api/work/assignments/{demonstration['id']}/skip/", {"reason": "unclear_intent"}, format="json")
    chat = start(alice)
    wrong = alice.post(f"/api/work/assignments/{chat['assignment']}/suggestions/", {"turns": []}, format="json")
    assert wrong.status_code == 400 and "suggestions are for demonstrations" in wrong.json()["detail"]


def test_a_used_suggestion_must_be_one_of_the_tasks_and_for_an_assistant_turn(alice, bob, demonstration):
    url = f"/api/work/assignments/{demonstration['id']}/suggestions/"
    turns = [{"role": "assistant", "content": "Where?"}, {"role": "user", "content": "A park."}]
    suggestion = alice.post(url, {"turns": turns}, format="json").json()
    assert bob.get(f"/api/work/suggestions/{suggestion['id']}/").status_code == 404
    services.suggestion_write(suggestion_id=suggestion["id"])
    submit = f"/api/work/assignments/{demonstration['id']}/submit/"
    for answer, used, said in (
        (turns[:1], [suggestion["id"] + 1000], "no finished suggestion of this task"),
        (turns[:1], [suggestion["id"]], "turn 3, which is not an assistant turn of this answer"),
    ):
        response = alice.post(submit, {"turns": answer, "suggestions_used": used}, format="json")
        assert response.status_code == 400 and said in response.json()["detail"]
    assert not Demonstration.objects.exists()
    answer = [*turns, {"role": "assistant", "content": "Bring sandwiches."}]
    assert alice.post(submit, {"turns": answer, "suggestions_used": [suggestion["id"]]},
                      format="json").status_code == 200
    assert Demonstration.objects.get().turn_suggestions == [{"turn": 3, "model_version": "base", "used": True}]


def test_a_stop_that_finds_the_worker_gone_ends_the_reply_with_what_it_wrote_and_never_a_finished_one(alice):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    message = ChatMessage.objects.get(pk=reply["id"])
    ChatMessage.objects.filter(pk=message.pk).update(state="streaming")  # taken by a worker that then died
    streams.ReplyStream(message).write("Hello, wor")
    cache.set(streams.ReplyStream(message).key, {**cache.get(streams.ReplyStream(message).key), "at": 0})
    stopped = alice.post(f"/api/work/chat-messages/{reply['id']}/stop/").json()
    assert (stopped["state"], stopped["text"], stopped["finish_reason"]) == ("stopped", "Hello, wor", "abort")
    # A worker that finishes meanwhile keeps its reply: a stale stop only ends a reply still streaming.
    again = alice.post(f"/api/work/chat-messages/{reply['id']}/regenerate/").json()
    written = write(again)
    cache.set(streams.ReplyStream(written).key, {**cache.get(streams.ReplyStream(written).key), "at": 0})
    ChatMessage.objects.filter(pk=written.pk).update(state="done")
    assert alice.post(f"/api/work/chat-messages/{written.pk}/stop/").json()["text"] == written.text


def test_a_worker_that_fails_in_any_way_fails_the_reply(alice, monkeypatch):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)

    def broken(version):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(services.chat, "sampler_for", broken)
    failed = write(reply)
    assert failed.state == "failed" and "RuntimeError: out of memory" in failed.error
    assert streams.ReplyStream(failed).read()["state"] == "failed"


def test_a_chat_goes_only_to_labelers_of_its_language(alice, labeler):
    LabelerProfile.objects.filter(user=labeler).update(languages=["en"])
    services.chat_task_create(language="fr")
    assert alice.post("/api/work/next/").status_code == 204
    LabelerProfile.objects.filter(user=labeler).update(languages=["en", "fr"])
    assert alice.post("/api/work/next/").json()["kind"] == "chat"


def test_the_prompt_to_rank_is_redacted_and_not_counted_against_the_labelers_prompt_cap(alice, labeler, settings):
    settings.PROMPT_CAP_PER_USER = 1
    chat = start(alice)
    write(send(alice, chat, "Mail me at ada@example.org please.", after=None))
    alice.post(f"/api/work/chats/{chat['id']}/end/")
    prompt = Prompt.objects.get(source=Prompt.Source.CHAT)
    assert prompt.turns[1]["content"] == "Mail me at [EMAIL] please." and prompt.redactions == {"email": 1}
    assert "ada@example.org" not in prompt.text
    Task.objects.create(kind=Task.Kind.WRITE_PROMPT)
    lease = alice.post("/api/work/next/").json()
    written = alice.post(f"/api/work/assignments/{lease['id']}/submit/",
                         {"style": "plain", "text": "Write a haiku about rain."}, format="json")
    assert written.status_code == 200, written.json()


@pytest.mark.django_db(transaction=True)
def test_a_person_holds_a_few_streams_at_once(alice, settings):
    settings.CHAT_STREAMS_PER_USER = 2
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)
    url = f"/api/work/chat-messages/{reply['id']}/stream/"
    first, second = alice.get(url), alice.get(url)
    for response in (first, second):
        next(iter(response.streaming_content))  # open: a server starts sending at once
    third = alice.get(url)
    assert third.status_code == 429 and "2 replies streaming already" in third.json()["detail"]
    first.close()  # the client went: its stream is given back
    fourth = alice.get(url)
    assert fourth.status_code == 200
    second.close()
    fourth.close()


def test_replies_whose_worker_is_gone_are_failed_and_can_be_regenerated(alice, labeler):
    chat = start(alice)
    reply = send(alice, chat, "Hello there!", after=None)  # no worker ever takes it
    demonstration = Assignment.objects.create(task=TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION), labeler=labeler,
                                              lease_expires_at=timezone.now() + timedelta(minutes=30))
    suggestion = alice.post(f"/api/work/assignments/{demonstration.pk}/suggestions/", {"turns": []},
                            format="json").json()
    later = timezone.now() + timedelta(minutes=11)
    assert services.chat_replies_reap() == 0  # too soon to tell
    assert services.chat_replies_reap(now=later) == 2
    failed = alice.get(f"/api/work/chat-messages/{reply['id']}/").json()
    assert failed["state"] == "failed" and "No worker took this reply up" in failed["error"]
    assert alice.get(f"/api/work/suggestions/{suggestion['id']}/").json()["state"] == "failed"
    events = events_of(b"".join(alice.get(f"/api/work/chat-messages/{reply['id']}/stream/").streaming_content)
                       .decode())
    assert events[-1][1]["state"] == "failed"
    again = write(alice.post(f"/api/work/chat-messages/{reply['id']}/regenerate/").json())
    assert again.state == "done"
