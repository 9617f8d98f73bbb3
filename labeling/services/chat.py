"""Chats with the model: the labeler plays the user, the active policy answers, and an ended chat gives a
comparison, as ChatGPT's data was collected.

A reply is written by a worker on the `chat` queue (`chat_reply_write`), never by a web process: it
streams from the sampler into the cache (labeling/streams.py) and is stored when it ends. Every
change to a conversation locks its row, and a turn names the last message its sender saw, so two
tabs on one chat never interleave turns.

When the labeler ends the chat, one model-written reply is chosen at random with a recorded seed;
the conversation before it becomes a prompt (source "chat", written by the labeler, so never theirs
to rank) holding that reply as its first completion, and the sampling round adds CHAT_RANK_K - 1
alternatives from the active policy and opens the ranking task.
"""

import logging
import random
import secrets
import time
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import answers, intake, pii, streams
from ..models import (
    Assignment,
    ChatMessage,
    Completion,
    Conversation,
    LabelerProfile,
    ModelVersion,
    Prompt,
    Task,
    TurnSuggestion,
)
from ..samplers import SamplerUnavailable, sampler_for
from .sampling import model_version_active, producer
from .training import sampling_queue
from .work import _locked, _reclaim_slot, _submit, check_may_work

logger = logging.getLogger(__name__)
STALE_SECONDS = 60  # a streaming reply whose worker wrote nothing for this long has lost its worker
REAP_MINUTES = 10  # a reply no worker has finished after this long is failed, unless it is still being written
CONFLICT = "conflict"  # the code of a refusal because another tab moved the conversation on (HTTP 409)


def chat_task_create(*, conversations: int = 1, system_prompt: str = "", language: str = "en", priority: int = 0,
                     ) -> Task:
    """A chat task: `conversations` labelers chat with the model under it, one conversation each, after the
    system prompt (none when empty)."""
    if type(conversations) is not int or not 1 <= conversations <= 1000:
        raise ValidationError(f"A chat task holds 1 to 1000 conversations, not {conversations!r}.")
    if type(priority) is not int or not -1000 <= priority <= 1000:
        raise ValidationError(f"The priority must be a whole number from -1000 to 1000, not {priority!r}.")
    if language not in settings.PROMPT_LANGUAGES:
        raise ValidationError(f"Choose the chat's language from: {', '.join(settings.PROMPT_LANGUAGES)}.")
    if not isinstance(system_prompt, str):
        raise ValidationError(f"The system prompt must be text, not {answers.describe(system_prompt)}.")
    if system_prompt:
        turn = [{"role": "system", "content": system_prompt}, {"role": "user", "content": "-"}]
        if problems := answers.conversation_problems(turn, limits=answers.Limits.from_settings(),
                                                     system_allowed=True, ends_with="user"):
            raise ValidationError(problems[0].message.replace("Turn 1 (system)", "The system prompt"))
    return Task.objects.create(kind=Task.Kind.CHAT, required_annotations=conversations, priority=priority,
                               params={"system_prompt": system_prompt, "language": language})


def chat_start(*, assignment: Assignment, labeler) -> Conversation:
    """The conversation of a chat task's lease: opened on the first call, the same one after."""
    with transaction.atomic():
        assignment = _locked(assignment, labeler)
        if assignment.task.kind != Task.Kind.CHAT:
            raise ValidationError(f"This task is to {assignment.task.get_kind_display().lower()}, not to chat.")
        conversation = Conversation.objects.filter(assignment=assignment).first()
        if conversation is None:
            _renew(assignment, labeler)
            conversation = Conversation.objects.create(
                assignment=assignment, labeler=labeler, system_prompt=assignment.task.params.get("system_prompt", ""))
    return conversation


def chat_send(*, conversation: Conversation, labeler, text: str, after: int | None) -> ChatMessage:
    """The labeler's next turn, and the model's reply to it, which a worker writes; returns the reply.

    `after` is the id of the last message the sender saw (None before the first turn): a turn sent
    from a tab that is behind is refused rather than woven in.
    """
    with transaction.atomic():
        conversation, current = _open(conversation, labeler)
        last = current[-1] if current else None
        _check_after(last, after)
        if last is not None:
            _check_final(last)
            if not last.text.strip():
                raise ValidationError("The model's last reply is empty: regenerate it or rewrite it first.")
        turns = sum(message.role == ChatMessage.Role.USER for message in current)
        if turns >= settings.CHAT_MAX_TURNS:
            raise ValidationError(f"This chat has reached its {settings.CHAT_MAX_TURNS} turns: end it.")
        _check_text(conversation, current, text, ChatMessage.Role.USER)
        position = len(current) + 1
        ChatMessage.objects.create(conversation=conversation, position=position, role=ChatMessage.Role.USER,
                                   text=text)
        return _reply(conversation, position + 1)


def chat_regenerate(*, message: ChatMessage, labeler) -> ChatMessage:
    """Another reply in place of the last one, which is kept as superseded; returns the new reply."""
    with transaction.atomic():
        conversation, current = _open(message.conversation, labeler)
        message = _last_reply(current, message, "regenerated")
        _check_final(message)
        ChatMessage.objects.filter(pk=message.pk).update(superseded=True)
        return _reply(conversation, message.position)


def chat_rewrite(*, message: ChatMessage, labeler, text: str) -> ChatMessage:
    """The labeler's version of the last reply; the model's stays beside it as `original_text`."""
    with transaction.atomic():
        conversation, current = _open(message.conversation, labeler)
        message = _last_reply(current, message, "rewritten")
        _check_final(message)
        _check_text(conversation, current[:-1], text, ChatMessage.Role.ASSISTANT)
        if not message.rewritten:
            message.original_text, message.rewritten = message.text, True
        message.text = text
        message.save(update_fields=["text", "original_text", "rewritten"])
    return message


def chat_stop(*, message: ChatMessage, labeler) -> ChatMessage:
    """Stop a reply where it is: at once if no worker has started it, else at the worker's next token."""
    with transaction.atomic():
        _open(message.conversation, labeler)
        stopped = ChatMessage.objects.filter(pk=message.pk, state=ChatMessage.State.PENDING).update(
            state=ChatMessage.State.STOPPED, finish_reason="abort")
        message.refresh_from_db()
        stream = streams.ReplyStream(message)
        if stopped:
            transaction.on_commit(lambda: stream.write("", "stopped", **streams.outcome(message)))
        elif message.state == ChatMessage.State.STREAMING:
            written = stream.read()
            if written and time.time() - written["at"] < STALE_SECONDS:
                stream.ask_stop()
            else:  # its worker is gone, or has not begun: the reply ends with what it wrote
                stream.ask_stop()
                ChatMessage.objects.filter(pk=message.pk, state=ChatMessage.State.STREAMING).update(
                    state=ChatMessage.State.STOPPED, finish_reason="abort",
                    text=_storable(written["text"]) if written else "")
                message.refresh_from_db()
                transaction.on_commit(lambda: stream.write(message.text, message.state, **streams.outcome(message)))
    return message


def chat_end(*, conversation: Conversation, labeler, time_spent_seconds: int = 0) -> Conversation:
    """End the chat and submit its task; one model-written reply, chosen at random, goes to be ranked."""

    def save(assignment):
        locked, current = _open(conversation, labeler)
        for message in current:
            _check_final(message)
        if not current:
            raise ValidationError("Write at least one turn before you end the chat, or skip the task.")
        seed = secrets.randbits(62)
        chosen = message_choose(seed=seed, messages=[m for m in current if _rankable(m, current)])
        locked.state, locked.ended_at, locked.choice_seed, locked.chosen_message = (
            Conversation.State.ENDED, timezone.now(), seed, chosen)
        if chosen is not None:
            locked.ranking_prompt = _ranking_prompt(locked, chosen, current)
            transaction.on_commit(sampling_queue)
        locked.save(update_fields=["state", "ended_at", "choice_seed", "chosen_message", "ranking_prompt"])

    _submit(conversation.assignment, labeler, time_spent_seconds, Task.Kind.CHAT, save)
    return Conversation.objects.get(pk=conversation.pk)


def message_choose(*, seed: int, messages: list) -> ChatMessage | None:
    """The message whose alternatives are ranked: a uniform choice among `messages`, the same for the same seed."""
    ordered = sorted(messages, key=lambda message: message.position)
    return random.Random(seed).choice(ordered) if ordered else None


# The worker's side

def chat_reply_write(*, message_id: int) -> ChatMessage | None:
    """Write a pending reply: stream it from its model version into the cache, then store it.

    Safe to run twice: only the run that moves the reply from pending to streaming writes it. A
    sampler that fails keeps the conversation as it was and says why on the reply, which the
    labeler can regenerate.
    """
    if not ChatMessage.objects.filter(pk=message_id, state=ChatMessage.State.PENDING).update(
            state=ChatMessage.State.STREAMING):
        return None
    message = ChatMessage.objects.select_related("conversation", "model_version").get(pk=message_id)
    current = list(message.conversation.messages.filter(superseded=False, position__lt=message.position))
    return _write(message, message.conversation.turns(current))


def suggestion_write(*, suggestion_id: int) -> TurnSuggestion | None:
    """Write a pending suggestion for a demonstration's turn, as a chat's reply is written."""
    if not TurnSuggestion.objects.filter(pk=suggestion_id, state=ChatMessage.State.PENDING).update(
            state=ChatMessage.State.STREAMING):
        return None
    suggestion = TurnSuggestion.objects.select_related("assignment__task__prompt", "model_version").get(
        pk=suggestion_id)
    return _write(suggestion, [*_opening(suggestion.assignment.task.prompt), *suggestion.turns])


def _write(reply, turns):
    """Stream the reply to `turns` from its model version into the cache, then store how it ended."""
    stream = streams.ReplyStream(reply)
    stream.write("")
    pieces, sample, error, written = [], None, "", time.monotonic()
    try:
        for item in sampler_for(reply.model_version).stream(turns, _sampling_params(reply), stream.stop_asked):
            if isinstance(item, str):
                pieces.append(item)
                if time.monotonic() - written > 0.05:  # readers poll; a write per token would only cost
                    stream.write("".join(pieces))
                    written = time.monotonic()
            else:
                sample = item
        version = producer(sample.model_version, reply.model_version) if sample else reply.model_version
    except SamplerUnavailable as exc:
        error = f"The model could not answer: {exc} Try again."
        version = reply.model_version
    except Exception as exc:  # whatever else went wrong, the reply must not stay "streaming"
        logger.exception("Writing %s #%s failed", type(reply).__name__, reply.pk)
        error = f"The model could not answer: {type(exc).__name__}: {exc} Try again."
        version = reply.model_version
    text = _storable(sample.text if sample else "".join(pieces))
    if sample and sample.finish_reason == "abort":
        state = ChatMessage.State.STOPPED
    elif error or not text.strip():
        state, error = ChatMessage.State.FAILED, error or "The model's reply was empty; regenerate it."
    else:
        state = ChatMessage.State.DONE
    type(reply).objects.filter(pk=reply.pk, state=ChatMessage.State.STREAMING).update(
        text=text, state=state, error=error, finish_reason=sample.finish_reason if sample else "",
        token_count=sample.token_count if sample else None, model_version=version,
    )
    reply.refresh_from_db()
    stream.write(reply.text, reply.state, **streams.outcome(reply))
    return reply


def chat_replies_reap(*, now=None) -> int:
    """Fail the replies and suggestions whose worker is gone: pending for REAP_MINUTES with no worker taking
    them, or streaming with nothing written for STALE_SECONDS. The labeler regenerates, or asks again."""
    now = now or timezone.now()
    reaped = 0
    for model in (ChatMessage, TurnSuggestion):
        waiting = model.objects.filter(state__in=[ChatMessage.State.PENDING, ChatMessage.State.STREAMING],
                                       created_at__lt=now - timedelta(minutes=REAP_MINUTES))
        for reply in waiting.select_related("model_version"):
            written = streams.ReplyStream(reply).read()
            if reply.state == ChatMessage.State.STREAMING and written and time.time() - written["at"] < STALE_SECONDS:
                continue  # a long reply, still being written
            error = ("No worker took this reply up; the chat worker may be down. Try again."
                     if reply.state == ChatMessage.State.PENDING else
                     "The worker writing this reply was lost. Try again.")
            if model.objects.filter(pk=reply.pk, state=reply.state).update(
                    state=ChatMessage.State.FAILED, error=error, text=_storable(written["text"]) if written else ""):
                reply.refresh_from_db()
                streams.ReplyStream(reply).write(reply.text, reply.state, **streams.outcome(reply))
                reaped += 1
    return reaped


# Suggestions for demonstrations

def suggestion_request(*, assignment: Assignment, labeler, turns: list) -> TurnSuggestion:
    """Ask the model for a reply to a demonstration's conversation so far: the prompt's turns, then `turns`, the
    labeler's turns so far, ending with a user turn (or none, for the first reply). A worker writes it."""
    with transaction.atomic():
        assignment = _locked(assignment, labeler)
        task = assignment.task
        if task.kind != Task.Kind.WRITE_DEMONSTRATION:
            raise ValidationError(f"This task is to {task.get_kind_display().lower()}; suggestions are for "
                                  "demonstrations.")
        if assignment.state != Assignment.State.ACTIVE or assignment.lease_expires_at <= timezone.now():
            raise ValidationError("This task is no longer yours to work on, so the model suggests nothing for it.")
        if not isinstance(turns, list):
            raise ValidationError(f"The turns must be a list of role and content objects, not "
                                  f"{answers.describe(turns)}.")
        opening = _opening(task.prompt)
        limits = answers.Limits.from_settings()
        if problems := answers.conversation_problems([*opening, *turns], limits=limits, ends_with="user",
                                                     system_allowed=answers.allows_system_turn(task.params),
                                                     max_turns=limits.turns - 1):
            raise answers.as_validation_error(problems, offset=len(opening))
        recent = timezone.now() - timedelta(seconds=STALE_SECONDS)  # an older one has lost its worker
        if assignment.suggestions.filter(state__in=[ChatMessage.State.PENDING, ChatMessage.State.STREAMING],
                                         created_at__gt=recent).exists():
            raise ValidationError("The model is still writing a suggestion for this task: wait for it first.",
                                  code=CONFLICT)
        suggestion = TurnSuggestion.objects.create(
            assignment=assignment, turns=turns, **_reply_settings())
    from ..tasks import suggest

    transaction.on_commit(lambda: suggest.apply_async((suggestion.pk,), queue="chat"))
    return suggestion


# Helpers

def _open(conversation, labeler):
    """The conversation, locked, if it is the labeler's and still open, with its current messages; its lease
    is renewed, since the labeler is at work on it. The lease is locked first, as a submit locks it, so that
    ending a chat and a turn from another tab wait for each other rather than deadlock."""
    assignment = _locked(Assignment(pk=conversation.assignment_id), labeler)
    try:
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk, labeler=labeler)
    except Conversation.DoesNotExist:
        raise Conversation.DoesNotExist(f"Conversation #{conversation.pk} is not yours.") from None
    if locked.state == Conversation.State.ENDED:
        raise ValidationError("This chat has ended; its turns can't change now.", code=CONFLICT)
    _renew(assignment, labeler)
    locked.assignment = assignment
    current = list(locked.messages.filter(superseded=False).select_related("model_version"))
    return locked, current


def _renew(assignment, labeler):
    now = timezone.now()
    if assignment.state == Assignment.State.SKIPPED:
        raise ValidationError("You skipped this chat, so it can't go on.")
    if assignment.state == Assignment.State.SUBMITTED:
        raise ValidationError("This chat has ended; its turns can't change now.", code=CONFLICT)
    check_may_work(LabelerProfile.objects.filter(user=labeler).first(), assignment.task)
    if assignment.state == Assignment.State.EXPIRED or assignment.lease_expires_at <= now:
        _reclaim_slot(assignment, now)
    assignment.state = Assignment.State.ACTIVE
    assignment.lease_expires_at = now + timedelta(minutes=settings.LEASE_MINUTES)
    assignment.save(update_fields=["state", "lease_expires_at"])


def _check_after(last, after):
    seen = last.pk if last else None
    if after != seen:
        raise ValidationError(
            "This chat has moved on since this page loaded (in another tab?): reload it to see the latest turns "
            f"(the last message is #{seen}, not #{after}).", code=CONFLICT)


def _check_final(message):
    if message.state not in ChatMessage.FINAL:
        raise ValidationError("The model is still writing its reply: wait for it, or stop it, first.", code=CONFLICT)


def _last_reply(current, message, done):
    last = current[-1] if current else None
    if last is None or last.pk != message.pk:
        raise ValidationError(f"Only the model's latest reply can be {done}; reload the chat to see it.",
                              code=CONFLICT)
    if message.role != ChatMessage.Role.ASSISTANT:
        raise ValidationError(f"Only the model's replies can be {done}.")
    return last


def _check_text(conversation, current, text, role):
    """The same limits and checks as any conversation; a problem is reported as the new turn's."""
    if not isinstance(text, str):
        raise ValidationError(f"The turn must be text, not {answers.describe(text)}.")
    turns = [*conversation.turns(current), {"role": role, "content": text}]
    limits = answers.Limits.from_settings()
    problems = answers.conversation_problems(turns, limits=limits, system_allowed=True, ends_with=role,
                                             max_turns=limits.turns)
    if problems:
        number, first = len(turns), problems[0]
        message = first.message.replace(f"Turn {number} ({role})", "Your turn").replace(f"Turn {number}:", "Your turn:")
        raise ValidationError(message, code=first.rule)


def _reply(conversation, position):
    reply = ChatMessage.objects.create(conversation=conversation, position=position, role=ChatMessage.Role.ASSISTANT,
                                   state=ChatMessage.State.PENDING, **_reply_settings())
    from ..tasks import chat_reply

    transaction.on_commit(lambda: chat_reply.apply_async((reply.pk,), queue="chat"))
    return reply


def _storable(text):
    """Text a database stores: no NUL, no lone surrogate."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _reply_settings():
    """Who writes a reply and how: the active policy, with the chat settings and a seed of its own."""
    return {"model_version": model_version_active(ModelVersion.Kind.POLICY), "seed": secrets.randbits(31),
            "sampling_params": {"temperature": settings.CHAT_TEMPERATURE, "top_p": 1.0,
                                "max_new_tokens": settings.CHAT_MAX_NEW_TOKENS}}


def _opening(prompt):
    return prompt.turns or [{"role": "user", "content": prompt.text}]


def _sampling_params(message):
    from rlhf.sampling import SamplingParams

    return SamplingParams(**message.sampling_params, seed=message.seed)


def _rankable(message, current):
    """A reply the model wrote in full (rewritten or not) whose context makes a prompt within the limits."""
    written = message.role == ChatMessage.Role.ASSISTANT and message.model_version_id
    if not written or message.state != ChatMessage.State.DONE:
        return False
    if not message.model_text.strip():
        return False
    turns = message.conversation.turns(current, before=message.position)
    return not answers.prompt_problems(_as_text(turns), turns, limits=answers.Limits.from_settings())


def _as_text(turns):
    return "\n\n".join(f"{turn['role'].capitalize()}: {turn['content']}" for turn in turns)


def _ranking_prompt(conversation, chosen, current):
    """The conversation before the chosen reply as a prompt for others to rank, with personal data redacted as
    intake redacts it; the reply is its first completion."""
    turns, redactions = conversation.turns(current, before=chosen.position), Counter()
    if settings.PROMPT_REDACT_PII:
        for turn in turns:
            turn["content"], found = pii.redact(turn["content"])
            redactions.update(found)
    source_user = f"labeler-{conversation.labeler_id}"
    prompt = Prompt.objects.create(
        text=_as_text(turns), turns=turns, source=Prompt.Source.CHAT, source_user_id=source_user,
        split=intake.split_for(source_user, tuple(settings.PROMPT_SPLIT_RATIOS)), redactions=dict(redactions),
        language=conversation.assignment.task.params.get("language", "en"), created_by=conversation.labeler,
        needs_completions=True,
    )
    original = Completion.objects.create(
        prompt=prompt, text=chosen.model_text, model_version=chosen.model_version, seed=chosen.seed,
        sampling_params=chosen.sampling_params, token_count=chosen.token_count, finish_reason=chosen.finish_reason,
    )
    prompt.metadata = {"conversation": conversation.pk, "message": chosen.pk, "completion": original.pk}
    prompt.save(update_fields=["metadata"])
    return prompt
