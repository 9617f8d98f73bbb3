"""Labeling work: leases on tasks, and the results labelers submit.

A lease is an Assignment in state `active` whose `lease_expires_at` lies ahead.
A task holds `required_annotations` slots; a slot is taken by a submitted
assignment or by a live lease. Leasing and late submits lock the task's row, so
two labelers never take the last slot together (SQLite, which has no row locks,
serialises write transactions instead: see DATABASES in config/settings.py).
"""

import random
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery, prefetch_related_objects
from django.utils import timezone

from .. import answers, quality, selectors
from ..models import (
    Assignment,
    ChatMessage,
    CompletionRating,
    Demonstration,
    LabelerProfile,
    Prompt,
    PromptAnnotation,
    Ranking,
    Task,
    UseCase,
)
from . import screening
from .prompts import prompts_ingest

# Leases


def task_lease_next(*, labeler):
    """The labeler's live lease, or a new lease on the next task for them; None when nothing waits."""
    now = timezone.now()
    with transaction.atomic():
        # Locking the profile serialises one labeler's requests: a double click gets one lease.
        profile = selectors.work_profile(labeler, live_at=now, lock=True)
        check_may_work(profile)
        if profile.live_lease_id:
            current = Assignment.objects.get(pk=profile.live_lease_id)
            try:
                check_may_work(profile, current.task)
                return current
            except ValidationError:  # a lease from before a change of status goes back to the queue
                current.state = Assignment.State.EXPIRED
                current.save(update_fields=["state"])
        available = selectors.tasks_available_to(labeler=labeler, profile=profile, now=now)
        if profile.status == LabelerProfile.Status.ONBOARDING:
            queues = [available.filter(is_practice=True)]
        else:
            regular, gold = available.filter(is_gold=False), available.filter(is_gold=True, is_practice=False)
            # Gold tasks come at GOLD_TASK_RATE, looking like any other; they are scored on submit.
            queues = [gold, regular] if random.random() < settings.GOLD_TASK_RATE else [regular]
            # Tasks given a priority above 0 (an evaluation's, say) come first whatever their kind; then the kinds
            # in turn by their shares. Lanes with no open task are not walked.
            lanes = selectors.open_lanes()
            kinds = [kind for kind in kinds_in_turn(profile.task_kinds) if kind in lanes]
            first = [selectors.PRIORITY_LANE] if selectors.PRIORITY_LANE in lanes else []
            queues = [queue.filter(priority__gt=0) if lane == selectors.PRIORITY_LANE else queue.filter(kind=lane)
                      for queue in queues for lane in first + kinds]
        task = next((found for queue in queues if (found := _lock_next_task(queue, now))), None)
        if task is None:
            return None
        prefetch_related_objects([task], "completions")  # for the shuffle here and the labeler's view after
        return Assignment.objects.create(
            task=task,
            labeler=labeler,
            leased_at=now,
            lease_expires_at=now + timedelta(minutes=settings.LEASE_MINUTES),
            display_order=_shuffled_completions(task),
        )


def kinds_in_turn(enabled=None, *, shares=None, rng=random):
    """The kinds of task to try, in the order of a draw weighted by QUEUE_SHARES (a kind comes first with the
    chance of its share), the kinds with no share after the others. Only the `enabled` kinds, if any are named."""
    shares = settings.QUEUE_SHARES if shares is None else shares
    kinds = [kind for kind in Task.Kind.values if not enabled or kind in enabled]
    # Efraimidis and Spirakis (2006): sorting by u ** (1 / weight) is a weighted draw without replacement.
    keys = {kind: rng.random() ** (1 / shares[kind]) if shares.get(kind) else -rng.random() for kind in kinds}
    return sorted(kinds, key=keys.get, reverse=True)


def check_may_work(profile, task=None):
    """Production tasks are for active labelers who have read the newest guidelines; practice tasks are for
    labelers in onboarding. Everyone else is told why not."""
    Status = LabelerProfile.Status
    status = profile.status if profile else None
    allowed = (status == Status.ONBOARDING and (task is None or task.is_practice)) or (
        status == Status.ACTIVE and (task is None or not task.is_practice))
    if allowed:
        pending = selectors.guidelines_pending(profile)
        if pending:
            raise ValidationError(f"Read and acknowledge the guidelines (version {pending.version}) on your home "
                                  "page before more work.")
        return
    reasons = {
        Status.SCREENING: "Take the screening test first; tasks come after an admin approves it.",
        Status.SCREENED: "Your screening test is waiting for review; tasks come after an admin approves it.",
        Status.ONBOARDING: "Finish onboarding first: the guidelines and the practice tasks.",
        Status.PAUSED: "Your work is paused by an admin, so no tasks come to you for now.",
        Status.OFFBOARDED: "You are no longer labeling for this project.",
        Status.REJECTED: "Your application was not accepted, so no tasks come to you.",
    }
    raise ValidationError(reasons.get(status, "Only active labelers receive tasks; an admin activates you after "
                                              "onboarding."))


def _lock_next_task(candidates, now):
    """Lock the first candidate that still has a free slot once locked.

    The candidates query counts slots in a snapshot taken before it waited for
    its row: another labeler may have taken the last slot and committed in the
    meantime. So the slots are counted again, in a fresh snapshot, under the lock.
    """
    candidates = candidates.select_related("prompt").select_for_update(skip_locked=True, of=("self",))
    passed = []
    while True:
        task = (candidates.exclude(pk__in=passed) if passed else candidates).first()
        if task is None or _slots_taken(task, now) < task.required_annotations:
            return task
        passed.append(task.pk)


def _slots_taken(task, now, *, besides=None):
    return selectors.task_slots_taken(task.pk, now=now, besides=besides)


def _shuffled_completions(task):
    if task.kind != Task.Kind.RANK_COMPLETIONS:
        return []
    ids = [completion.pk for completion in task.completions.all()]
    random.shuffle(ids)
    return ids


def assignment_skip(*, assignment, labeler, reason):
    if reason not in Assignment.SkipReason.values:
        raise ValidationError(f"Choose why you skip: {', '.join(Assignment.SkipReason.labels)}.")
    with transaction.atomic():
        assignment = _locked(assignment, labeler)
        if assignment.state == Assignment.State.SUBMITTED:
            raise ValidationError("You already submitted this task; it can't be skipped now.")
        if assignment.state != Assignment.State.SKIPPED:
            assignment.state, assignment.skip_reason = Assignment.State.SKIPPED, reason
            assignment.save(update_fields=["state", "skip_reason"])
    return assignment


def assignments_expire(*, now=None):
    """Mark active assignments whose lease has run out as expired, returning their tasks to the queue."""
    now = now or timezone.now()
    return Assignment.objects.filter(state=Assignment.State.ACTIVE, lease_expires_at__lt=now).update(
        state=Assignment.State.EXPIRED
    )


def _locked(assignment, labeler):
    """The assignment, locked, if it is the labeler's; anyone else's is as good as missing."""
    try:
        return (
            # Locking the task too serialises submits on it, so the last one sees every other and closes it.
            Assignment.objects.select_for_update(of=("self", "task")).select_related("task__prompt")
            .prefetch_related("task__completions").get(pk=assignment.pk, labeler=labeler)
        )
    except Assignment.DoesNotExist:
        raise Assignment.DoesNotExist(f"Assignment #{assignment.pk} is not yours.") from None


def _submit(assignment, labeler, time_spent_seconds, kind, save):
    """Run `save(assignment)` once, under the lease rules, and mark the assignment submitted.

    A second submit (refresh, double click, retry) stores nothing and returns the
    first result. A late submit keeps the slot if nobody else has taken it.
    """
    now = timezone.now()
    with transaction.atomic():
        assignment = _locked(assignment, labeler)
        if assignment.task.kind != kind:
            raise ValidationError(f"This task is to {assignment.task.get_kind_display().lower()}.")
        if assignment.state == Assignment.State.SUBMITTED:
            return assignment
        if assignment.state == Assignment.State.SKIPPED:
            raise ValidationError("You skipped this task, so it can't be submitted.")
        check_may_work(selectors.work_profile(labeler), assignment.task)
        if assignment.state == Assignment.State.EXPIRED or assignment.lease_expires_at <= now:
            _reclaim_slot(assignment, now)
        save(assignment)
        assignment.state = Assignment.State.SUBMITTED
        assignment.submitted_at = now
        lease_length = (now - assignment.leased_at).total_seconds()
        assignment.time_spent_seconds = max(0, min(int(time_spent_seconds or 0), int(lease_length) + 1))
        assignment.gold_score = gold_score(assignment) if assignment.task.is_gold else None
        assignment.save(update_fields=["state", "submitted_at", "time_spent_seconds", "gold_score"])
        _close_if_done(assignment.task)
    if assignment.task.is_practice:
        screening.onboarding_advance(user=labeler)
    return assignment


def gold_score(assignment):
    """Agreement of a submitted result with the task's gold answer, 0 to 1; None where it can't be scored."""
    task, gold = assignment.task, assignment.task.gold_answer or {}
    if task.kind == Task.Kind.RANK_COMPLETIONS and gold.get("groups"):
        return quality.pairwise_agreement(assignment.ranking.groups, gold["groups"])
    if task.kind == Task.Kind.ANNOTATE_PROMPT and ("flags" in gold or "use_case" in gold):
        annotation = assignment.annotation
        checks = [getattr(annotation, name) == (name in gold.get("flags", [])) for name in PromptAnnotation.FLAGS]
        if gold.get("use_case"):
            checks.append(annotation.use_case == gold["use_case"])
        return sum(checks) / len(checks)
    return None


def _reclaim_slot(assignment, now):
    task = Task.objects.select_for_update().get(pk=assignment.task_id)
    if _slots_taken(task, now, besides=assignment.pk) >= task.required_annotations:
        raise ValidationError(
            "Your lease on this task ran out and another labeler has taken it, so this answer was not saved. "
            "Copy anything you want to keep before moving on."
        )


def _close_if_done(task):
    """Called under the task's lock, after a submit: a task that needs one result is done without a count."""
    closed = Task.objects.filter(pk=task.pk)
    if task.required_annotations > 1:
        submitted = (
            Assignment.objects.filter(task=OuterRef("pk"), state=Assignment.State.SUBMITTED)
            .order_by().values("task").annotate(n=Count("pk")).values("n")
        )
        closed = closed.filter(required_annotations__lte=Subquery(submitted))
    closed = closed.update(state=Task.State.COMPLETED)
    if closed and task.kind == Task.Kind.RANK_COMPLETIONS and task.required_annotations > 1:
        orders = list(Ranking.objects.filter(task=task).values_list("groups", flat=True))
        Task.objects.filter(pk=task.pk).update(consensus=quality.ranked_pairs_consensus(orders))


# Results


def prompt_write(*, assignment, labeler, style, text, use_case="", language="en", time_spent_seconds=0):
    """A labeler-written prompt, through the same intake rules as imported ones."""
    if style not in (Prompt.Source.PLAIN, Prompt.Source.FEW_SHOT, Prompt.Source.USER_BASED):
        raise ValidationError("Choose how the prompt is written: plain, few-shot or user-based.")
    if style == Prompt.Source.USER_BASED and not use_case:
        raise ValidationError("A user-based prompt needs the use case it is based on.")

    def save(assignment):
        row = {"prompt": text, "source": style, "use_case": use_case, "language": language,
               "source_user_id": f"labeler-{labeler.pk}"}
        report = prompts_ingest(rows=[(1, row, 0)], created_by=labeler, keep_ids=True)
        if not report.accepted:
            raise ValidationError({"text": f"This prompt can't be used: {report.row_errors[0]['reason']}."})
        Prompt.objects.filter(pk=report.prompt_ids[0]).update(assignment=assignment)

    return _submit(assignment, labeler, time_spent_seconds, Task.Kind.WRITE_PROMPT, save)


def demonstration_write(*, assignment, labeler, turns, used_model_suggestion=False, suggestions_used=(),
                        time_spent_seconds=0):
    """The ideal reply to the prompt; `turns` continue the prompt's conversation and end with the assistant.

    The whole conversation, the prompt's turns and these, must keep the rules of `answers`; each problem
    names its turn, numbered through the whole conversation. `used_model_suggestion` says the first
    reply started from the prompt's sampled suggestion; `suggestions_used` lists the suggestions asked
    for turn by turn (services.suggestion_request) that the labeler took.
    """
    if not isinstance(turns, list):
        raise ValidationError(f"The turns must be a list of role and content objects, not {answers.describe(turns)}.")
    if not turns:
        raise ValidationError("Write the assistant's reply.")

    def save(assignment):
        task, prompt = assignment.task, assignment.task.prompt
        opening = prompt.turns or [{"role": "user", "content": prompt.text}]
        _check_conversation(opening, turns, task.params)
        suggestion = selectors.model_suggestion(prompt) if used_model_suggestion else None
        per_turn, used_version = _turn_suggestions(assignment=assignment, turns=turns, used=list(suggestions_used))
        if suggestion and not any(entry["turn"] == 1 and entry["used"] for entry in per_turn):
            per_turn = [{"turn": 1, "model_version": suggestion.model_version.name, "used": True},
                        *[entry for entry in per_turn if entry["turn"] != 1]]
        Demonstration.objects.create(
            assignment=assignment, prompt=prompt, author=labeler, messages=[*opening, *turns],
            used_model_suggestion=suggestion is not None or used_version is not None, turn_suggestions=per_turn,
            suggestion_model_version=suggestion.model_version if suggestion else used_version,
        )

    return _submit(assignment, labeler, time_spent_seconds, Task.Kind.WRITE_DEMONSTRATION, save)


def _turn_suggestions(*, assignment: Assignment, turns: list, used: list) -> list:
    """What a demonstration records of the model's suggestions: per turn it suggested a reply for, the model and
    whether the labeler used it; and the model of the first one used. `used` holds the ids of the suggestions
    the labeler took; `turns` their turns."""
    suggestions = {s.pk: s for s in assignment.suggestions.filter(state=ChatMessage.State.DONE).select_related(
        "model_version")}
    if not isinstance(used, list) or not all(type(pk) is int for pk in used):
        raise ValidationError("The suggestions used must be a list of suggestion ids.")
    unknown = [pk for pk in used if pk not in suggestions]
    if unknown:
        raise ValidationError(f"Suggestion #{unknown[0]} is no finished suggestion of this task.")
    taken = {suggestions[pk].turn: suggestions[pk] for pk in used}
    for turn in taken:
        if turn > len(turns) or turns[turn - 1].get("role") != "assistant":
            raise ValidationError(f"A suggestion was used for turn {turn}, which is not an assistant turn of "
                                  "this answer.")
    shown = {}
    for suggestion in suggestions.values():  # the latest shown per turn, unless the labeler used another
        if suggestion.turn <= len(turns):
            shown[suggestion.turn] = suggestion
    shown.update(taken)
    entries = [{"turn": turn, "model_version": s.model_version.name, "used": turn in taken}
               for turn, s in sorted(shown.items())]
    return entries, next((taken[turn].model_version for turn in sorted(taken)), None)


def _check_conversation(opening, turns, params):
    broken = "This task's prompt can't be answered as it stands: {}. Skip the task as broken."
    if not isinstance(opening, list):
        raise ValidationError(broken.format("its turns are not a list"))
    problems = answers.demonstration_problems([*opening, *turns], limits=answers.Limits.from_settings(),
                                              params=params)
    # A problem in the prompt's own turns is not the labeler's to fix.
    in_prompt = [problem.message for problem in problems if problem.turn and problem.turn <= len(opening)]
    if in_prompt:
        raise ValidationError(broken.format(" ".join(in_prompt).rstrip(".")))
    if problems:
        raise answers.as_validation_error(problems, offset=len(opening))


def ranking_submit(*, assignment, labeler, groups, ratings, none_acceptable=False, time_spent_seconds=0):
    def save(assignment):
        ranking_save(task=assignment.task, labeler=labeler, groups=groups, ratings=ratings,
                     none_acceptable=none_acceptable, assignment=assignment)

    return _submit(assignment, labeler, time_spent_seconds, Task.Kind.RANK_COMPLETIONS, save)


def annotation_submit(*, assignment, labeler, flags, use_case, language, contains_personal_data=False,
                      time_spent_seconds=0):
    unknown = set(flags) - set(PromptAnnotation.FLAGS)
    if unknown:
        raise ValidationError(f"Unknown prompt flags: {sorted(unknown)}.")
    if use_case not in UseCase.values:
        raise ValidationError("Choose the prompt's use case.")
    if language not in settings.PROMPT_LANGUAGES:
        raise ValidationError(f"Choose the prompt's language from: {', '.join(settings.PROMPT_LANGUAGES)}.")

    def save(assignment):
        PromptAnnotation.objects.create(
            assignment=assignment, prompt=assignment.task.prompt, labeler=labeler, use_case=use_case,
            language=language, contains_personal_data=bool(contains_personal_data),
            **{name: bool(flags.get(name)) for name in PromptAnnotation.FLAGS},
        )

    return _submit(assignment, labeler, time_spent_seconds, Task.Kind.ANNOTATE_PROMPT, save)


def ranking_save(*, task, labeler, groups, ratings, none_acceptable=False, assignment=None):
    """Store a ranking of the task's completions with one rating per completion.

    `groups` are lists of completion ids, best first, ties sharing a group;
    `ratings` maps a completion id to {"rating": 1-7, flag: bool, ..., "notes": str}.
    The ranking must place every completion of the task exactly once.
    """
    expected = {completion.pk for completion in task.completions.all()}
    if problems := answers.ranking_problems(groups, expected, task_id=task.pk):
        raise ValidationError(problems[0].message)
    try:
        ratings = {int(cid): value for cid, value in ratings.items()}
    except (TypeError, ValueError, AttributeError):
        raise ValidationError("Ratings must map each completion id to its rating.") from None
    if set(ratings) != expected:
        raise ValidationError(f"Rate every completion; missing ratings for: {sorted(expected - set(ratings))}.")
    if Ranking.objects.filter(task=task, labeler=labeler).exists():
        raise ValidationError(f"You have already ranked task #{task.pk}.")
    limits = answers.Limits.from_settings()
    rows = [_rating(cid, value, limits) for cid, value in sorted(ratings.items())]

    with transaction.atomic(savepoint=False):
        ranking = Ranking.objects.create(
            task=task, labeler=labeler, groups=groups, none_acceptable=none_acceptable, assignment=assignment
        )
        for row in rows:
            row.ranking = ranking
        CompletionRating.objects.bulk_create(rows)
    return ranking


def _rating(completion_id, value, limits):
    if not isinstance(value, dict):
        raise ValidationError(f"The rating of completion {completion_id} must be an object with a 'rating'.")
    rating = value.get("rating")
    if type(rating) is not int or not 1 <= rating <= 7:
        raise ValidationError(f"The rating of completion {completion_id} must be a whole number from 1 to 7.")
    unknown = set(value) - {"rating", "notes", *CompletionRating.FLAGS}
    if unknown:
        raise ValidationError(f"Unknown fields in the rating of completion {completion_id}: {sorted(unknown)}.")
    flags = {name: value.get(name, False) for name in CompletionRating.FLAGS}
    not_yes_no = sorted(name for name, flag in flags.items() if not isinstance(flag, bool))
    if not_yes_no:
        raise ValidationError(f"Flags of completion {completion_id} must be true or false: {not_yes_no}.")
    notes = value.get("notes", "")
    if problems := answers.notes_problems(notes, what=f"The notes on completion {completion_id}", limits=limits):
        # The params tell the ranking page which notes field to show it beside.
        raise ValidationError(problems[0].message, code=problems[0].rule,
                              params={"completion": completion_id, "field": "notes"})
    return CompletionRating(completion_id=completion_id, rating=rating, notes=notes, **flags)
