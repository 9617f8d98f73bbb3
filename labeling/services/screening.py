"""Getting in: invitations, the screening test, the anonymised review, onboarding; and labeler status.

After InstructGPT's labeler selection (Ouyang et al. 2022, appendix B.1): agreement with researchers
on sensitive-content flags and on rankings, demonstrations for sensitive prompts graded 1-7, and a
self-assessment; then guidelines and practice before production work.
"""

import json
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import quality, selectors
from ..answers import Limits, notes_problems
from ..models import (
    Assignment,
    Guidelines,
    Invitation,
    LabelerProfile,
    Role,
    ScreeningAttempt,
    ScreeningItem,
    StatusChange,
)
from .people import user_set_role

Status = LabelerProfile.Status
Part = ScreeningItem.Part

# Who may move a labeler from one status to another by hand, and to what.
MANUAL_MOVES = {
    Status.ACTIVE: {Status.PAUSED, Status.OFFBOARDED},
    Status.PAUSED: {Status.ACTIVE, Status.OFFBOARDED},
    Status.ONBOARDING: {Status.PAUSED, Status.OFFBOARDED},
}


def invitation_token():
    return secrets.token_urlsafe(32)


def invitation_create(*, role=Role.LABELER, created_by=None, note="", days=None):
    return Invitation.objects.create(
        token=invitation_token(), role=role, note=note, created_by=created_by,
        expires_at=timezone.now() + timedelta(days=days or settings.INVITATION_DAYS),
    )


def invitation_check(token, *, lock=False):
    """The invitation behind a link, or a ValidationError saying why it can't be used."""
    invitations = Invitation.objects.select_for_update() if lock else Invitation.objects
    invitation = invitations.filter(token=token).first()
    if invitation is None:
        raise ValidationError("This invitation link is not valid; check that you copied all of it.")
    if invitation.used_at:
        raise ValidationError("This invitation has been used already; each link makes one account.")
    if invitation.expires_at <= timezone.now():
        raise ValidationError(f"This invitation expired on {invitation.expires_at:%d %B %Y}; ask for a new one.")
    return invitation


def account_create(*, username, password, email="", token=None):
    """An account from an invitation (with its role), or, when applications are open, a labeler's application."""
    with transaction.atomic():
        invitation = None
        if token:
            invitation = invitation_check(token, lock=True)  # locked: two sign-ups can't share one link
        elif not settings.OPEN_APPLICATIONS:
            raise ValidationError("Applications are by invitation only.")
        User = get_user_model()
        user, problems = User(username=username, email=email), {}
        if User.objects.filter(username__iexact=username).exists():
            problems["username"] = "That username is taken; choose another."
        try:
            validate_password(password, user)
        except ValidationError as exc:
            problems["password"] = exc.messages
        if problems:
            raise ValidationError(problems)
        user.set_password(password)
        user.save()
        role = invitation.role if invitation else Role.LABELER
        user_set_role(user=user, role=role)
        if role == Role.LABELER:
            _move(LabelerProfile.objects.get(user=user), Status.SCREENING, "accepted an invitation" if invitation
                  else "applied")
        if invitation:
            invitation.used_by, invitation.used_at = user, timezone.now()
            invitation.save(update_fields=["used_by", "used_at"])
    return user


def screening_items():
    """The active items of each part, in order."""
    items = ScreeningItem.objects.filter(is_active=True).order_by("part", "id")
    return {part: [item for item in items if item.part == part] for part in Part.values}


@transaction.atomic
def screening_submit(*, user, answers):
    """Score the test and put the applicant in the review queue.

    `answers`: {"flags": {item id: [flag, ...]}, "rankings": {item id: [[completion index, ...], ...]},
    "demonstrations": {item id: text}, "self_assessment": {"topics": [...], "groups": [...], "notes": ""}}.
    """
    profile = LabelerProfile.objects.select_for_update().filter(user=user).first()
    if profile is None or profile.status != Status.SCREENING:
        raise ValidationError("There is no screening test waiting for you.")
    items = screening_items()
    flags, rankings = answers.get("flags", {}), answers.get("rankings", {})
    demonstrations = answers.get("demonstrations", {})
    for item in items[Part.RANKING]:
        groups = rankings.get(str(item.pk))
        placed = sorted(i for group in groups or [] for i in group)
        if placed != list(range(len(item.completions))):
            raise ValidationError(f"Rank every response of ranking question {item.pk}, each once.")
    limits = Limits.from_settings()
    for item in items[Part.DEMONSTRATION]:
        reply = demonstrations.get(str(item.pk), "")
        if not isinstance(reply, str) or not reply.strip():
            raise ValidationError(f"Write a reply for writing question {item.pk}.")
        if len(reply) > limits.turn_chars:
            raise ValidationError(f"Your reply to writing question {item.pk} must be at most {limits.turn_chars:,} "
                                  f"characters long, not {len(reply):,}.")
    notes = answers.get("self_assessment", {}).get("notes", "")
    _check_free_text(notes, "Your notes in the self-assessment", limits)
    flag_scores = [
        sum((name in flags.get(str(item.pk), [])) == (name in item.gold.get("flags", []))
            for name in ScreeningItem.SENSITIVE_FLAGS) / len(ScreeningItem.SENSITIVE_FLAGS)
        for item in items[Part.SENSITIVE_FLAGS]
    ]
    ranking_scores = [
        score for item in items[Part.RANKING]
        if (score := quality.pairwise_agreement(rankings[str(item.pk)], item.gold.get("groups", []))) is not None
    ]
    attempt = ScreeningAttempt.objects.create(
        profile=profile, answers=answers, submitted_at=timezone.now(),
        flag_agreement=_mean(flag_scores), ranking_agreement=_mean(ranking_scores),
    )
    profile.self_assessment = answers.get("self_assessment", {})
    profile.flag_agreement, profile.ranking_agreement = attempt.flag_agreement, attempt.ranking_agreement
    profile.save(update_fields=["self_assessment", "flag_agreement", "ranking_agreement"])
    _move(profile, Status.SCREENED, "submitted the screening test")
    return attempt


def screening_grade(*, attempt, grades, graded_by):
    """An admin's 1-7 grade for each written demonstration; their mean is the demonstration score."""
    expected = {str(item.pk) for item in screening_items()[Part.DEMONSTRATION]} & set(
        attempt.answers.get("demonstrations", {}))
    try:
        grades = {str(k): int(v) for k, v in grades.items() if str(v).strip()}
    except (TypeError, ValueError):
        raise ValidationError("Grades are whole numbers from 1 to 7.") from None
    if any(not 1 <= grade <= 7 for grade in grades.values()):
        raise ValidationError("Grades are whole numbers from 1 to 7.")
    if set(grades) != expected:
        raise ValidationError(f"Grade every written reply: {len(expected)} to grade, {len(grades)} graded.")
    attempt.answers = {**attempt.answers, "grades": grades}
    attempt.demonstration_score = _mean(list(grades.values()))
    attempt.graded_by = graded_by
    attempt.save(update_fields=["answers", "demonstration_score", "graded_by"])
    LabelerProfile.objects.filter(pk=attempt.profile_id).update(demonstration_score=attempt.demonstration_score)
    return attempt


def screening_decide(*, attempt, approve, reason="", decided_by):
    """Approve (on to onboarding) or reject an applicant; the decision is kept with who and when."""
    if attempt.decision != ScreeningAttempt.Decision.PENDING:
        raise ValidationError(f"This applicant was already {attempt.decision}.")
    if not approve and not reason.strip():
        raise ValidationError("Say why the applicant is rejected; the reason is kept with the decision.")
    _check_free_text(reason, "The reason", Limits.from_settings())
    if approve and attempt.demonstration_score is None and attempt.answers.get("demonstrations"):
        raise ValidationError("Grade the written replies before approving.")
    with transaction.atomic():
        attempt.decision = ScreeningAttempt.Decision.APPROVED if approve else ScreeningAttempt.Decision.REJECTED
        attempt.decision_reason, attempt.decided_by, attempt.decided_at = reason, decided_by, timezone.now()
        attempt.save(update_fields=["decision", "decision_reason", "decided_by", "decided_at"])
        profile = LabelerProfile.objects.select_for_update().get(pk=attempt.profile_id)
        if approve:
            profile.approved_by, profile.approved_at = decided_by, attempt.decided_at
            profile.save(update_fields=["approved_by", "approved_at"])
        _move(profile, Status.ONBOARDING if approve else Status.REJECTED, reason or "approved", decided_by)
    return attempt


def cutoffs(attempt):
    """Each score against its soft cutoff: (name, score, cutoff, passed or None while ungraded)."""
    rows = [
        ("Flag agreement", attempt.flag_agreement, settings.SCREENING_FLAG_CUTOFF),
        ("Ranking agreement", attempt.ranking_agreement, settings.SCREENING_RANKING_CUTOFF),
        ("Demonstration score", attempt.demonstration_score, settings.SCREENING_DEMONSTRATION_CUTOFF),
    ]
    return [(name, score, cutoff, None if score is None else score >= cutoff) for name, score, cutoff in rows]


def guidelines_publish(*, title, body, published_by=None):
    """A new version of the guidelines, numbered after the newest. Every labeler acknowledges it before more work."""
    if not title.strip() or not body.strip():
        raise ValidationError("Guidelines need a title and a body.")
    with transaction.atomic():
        newest = Guidelines.objects.select_for_update().first()
        return Guidelines.objects.create(version=newest.version + 1 if newest else 1, title=title, body=body,
                                         published_by=published_by)


def guidelines_acknowledge(*, user, version):
    guidelines = Guidelines.objects.filter(version=version).first()
    if guidelines is None or guidelines != Guidelines.objects.first():
        raise ValidationError("Acknowledge the newest guidelines; the page shows them.")
    LabelerProfile.objects.filter(user=user).update(guidelines_acknowledged=guidelines)
    onboarding_advance(user=user)


def onboarding_advance(*, user):
    """An onboarding labeler who has read the guidelines and done the practice becomes active."""
    with transaction.atomic():
        profile = LabelerProfile.objects.select_for_update().filter(user=user, status=Status.ONBOARDING).first()
        if profile is None or selectors.guidelines_pending(profile):
            return False
        done = Assignment.objects.filter(labeler=user, task__is_practice=True,
                                         state=Assignment.State.SUBMITTED).count()
        if done < settings.ONBOARDING_PRACTICE_TASKS:
            return False
        _move(profile, Status.ACTIVE, f"finished onboarding: guidelines acknowledged, {done} practice tasks")
    return True


def labeler_set_status(*, profile, status, reason, changed_by):
    """Pause, resume or offboard a labeler, with a reason that is kept."""
    if status not in MANUAL_MOVES.get(profile.status, set()):
        raise ValidationError(f"A labeler who is {profile.status} can't be moved to {status} by hand.")
    if not reason.strip():
        raise ValidationError("Give a reason; it is kept with the change.")
    _check_free_text(reason, "The reason", Limits.from_settings())
    with transaction.atomic():
        profile = LabelerProfile.objects.select_for_update().get(pk=profile.pk)
        _move(profile, status, reason, changed_by)
        if status != Status.ACTIVE:  # their live leases go back to the queue
            Assignment.objects.filter(labeler=profile.user, state=Assignment.State.ACTIVE).update(
                state=Assignment.State.EXPIRED)
    return profile


def _check_free_text(text, what, limits):
    if problems := notes_problems(text, what=what, limits=limits):
        raise ValidationError(problems[0].message)


def _move(profile, status, reason, changed_by=None):
    StatusChange.objects.create(profile=profile, old_status=profile.status, new_status=status, reason=reason,
                                changed_by=changed_by)
    profile.status, profile.status_reason = status, reason
    profile.save(update_fields=["status", "status_reason"])


def _mean(values):
    return sum(values) / len(values) if values else None


def screening_items_import(*, lines, created_by=None):
    """Screening items from JSONL, all or none: a file with a bad row is refused with every bad line named.

    A row: {"part": "sensitive_flags" | "ranking" | "demonstration", "prompt": "...", "completions": [...],
    "gold": {"flags": [...]} or {"groups": [[0], [1, 2]]}, "explanation": "..."}.
    """
    items, problems = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(_screening_item(json.loads(line), created_by))
        except (json.JSONDecodeError, TypeError, AttributeError):
            problems.append(f"line {number}: not a JSON object")
        except ValidationError as exc:
            problems.append(f"line {number}: {' '.join(exc.messages)}")
    if problems:
        raise ValidationError(f"Nothing was imported; fix these rows: {'; '.join(problems[:20])}.")
    if not items:
        raise ValidationError("The file holds no screening items.")
    return ScreeningItem.objects.bulk_create(items)


def _screening_item(row, created_by):
    part, prompt = row.get("part"), row.get("prompt")
    completions, gold = row.get("completions", []), row.get("gold", {})
    if part not in Part.values:
        raise ValidationError(f"`part` must be one of {', '.join(Part.values)}.")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("`prompt` must be non-empty text.")
    if not isinstance(completions, list) or not all(isinstance(c, str) and c.strip() for c in completions):
        raise ValidationError("`completions` must be a list of non-empty texts.")
    if part == Part.SENSITIVE_FLAGS:
        unknown = set(gold.get("flags", [])) - set(ScreeningItem.SENSITIVE_FLAGS)
        if not completions or unknown:
            raise ValidationError(
                f"a flag item needs a response and flags from {', '.join(ScreeningItem.SENSITIVE_FLAGS)}.")
    if part == Part.RANKING:
        placed = sorted(i for group in gold.get("groups", []) for i in group)
        if len(completions) < 2 or placed != list(range(len(completions))):
            raise ValidationError("a ranking item needs two or more responses and `gold.groups` placing each once.")
    return ScreeningItem(part=part, prompt_text=prompt, completions=completions, gold=gold,
                         explanation=row.get("explanation", ""), created_by=created_by)
