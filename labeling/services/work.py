"""Labeling work: leases on tasks, and the results labelers submit."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..models import Assignment, CompletionRating, Ranking


def ranking_save(*, task, labeler, groups, ratings, none_acceptable=False, assignment=None):
    """Store a ranking of the task's completions with one rating per completion.

    `groups` are lists of completion ids, best first, ties sharing a group;
    `ratings` maps a completion id to {"rating": 1-7, flag: bool, ..., "notes": str}.
    The ranking must place every completion of the task exactly once.
    """
    well_formed = isinstance(groups, list) and all(
        isinstance(group, list) and all(type(cid) is int for cid in group) for group in groups
    )
    if not well_formed:
        raise ValidationError("The ranking must be a list of groups of completion ids, best first.")
    expected = set(task.completions.values_list("id", flat=True))
    placed = [cid for group in groups for cid in group]
    if not groups or any(not group for group in groups):
        raise ValidationError("Every rank slot must hold at least one completion.")
    repeated = sorted({cid for cid in placed if placed.count(cid) > 1})
    if repeated:
        raise ValidationError(f"Each completion must be ranked once; ranked more than once: {repeated}.")
    missing, unknown = sorted(expected - set(placed)), sorted(set(placed) - expected)
    if missing:
        raise ValidationError(f"Rank every completion before submitting; not ranked yet: {missing}.")
    if unknown:
        raise ValidationError(f"These completions are not part of task #{task.pk}: {unknown}.")
    try:
        ratings = {int(cid): value for cid, value in ratings.items()}
    except (TypeError, ValueError, AttributeError):
        raise ValidationError("Ratings must map each completion id to its rating.") from None
    if set(ratings) != expected:
        raise ValidationError(f"Rate every completion; missing ratings for: {sorted(expected - set(ratings))}.")
    if Ranking.objects.filter(task=task, labeler=labeler).exists():
        raise ValidationError(f"You have already ranked task #{task.pk}.")
    rows = [_rating(cid, value) for cid, value in sorted(ratings.items())]

    with transaction.atomic():
        ranking = Ranking.objects.create(
            task=task, labeler=labeler, groups=groups, none_acceptable=none_acceptable, assignment=assignment
        )
        for row in rows:
            row.ranking = ranking
        CompletionRating.objects.bulk_create(rows)
    return ranking


def _rating(completion_id, value):
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
    if not isinstance(notes, str):
        raise ValidationError(f"The notes on completion {completion_id} must be text.")
    return CompletionRating(completion_id=completion_id, rating=rating, notes=notes, **flags)


# Leases

def assignments_expire(*, now=None):
    """Mark active assignments whose lease has run out as expired, returning their tasks to the queue."""
    now = now or timezone.now()
    return Assignment.objects.filter(state=Assignment.State.ACTIVE, lease_expires_at__lt=now).update(
        state=Assignment.State.EXPIRED
    )
