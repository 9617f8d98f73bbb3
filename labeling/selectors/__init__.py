"""Reads, scoped to the user who asks: the dashboards, people and quality here; labeling work in `work`, training in
`training`."""

import statistics
from collections import defaultdict
from datetime import timedelta
from itertools import combinations, groupby

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from .. import quality
from ..models import (
    Assignment,
    CompletionRating,
    Export,
    ImportJob,
    Invitation,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    Role,
    Task,
    UseCase,
)
from ..permissions import roles_of
from .training import (  # noqa: F401
    model_versions_by_kind,
    queued_because,
    ranking_tasks_waiting,
    sampler_overview,
    training_rules,
    training_runs,
)
from .work import (  # noqa: F401
    PRIORITY_LANE,
    assignment_of,
    assignment_to_answer,
    chat_message_of,
    chat_messages,
    completions_in_order,
    conversation_of,
    guidelines_pending,
    labeler_overview,
    model_suggestion,
    open_lanes,
    practice_feedback,
    result_of,
    review_queue,
    suggestion_of,
    task_slots_taken,
    tasks_available_to,
    work_of,
    work_profile,
    workspace_panel,
)


def start_url_for(user):
    """Where the site starts for `user`: an admin's is the Team page, which links to the admin and the other pages
    an admin works on."""
    roles = roles_of(user)
    if Role.ADMIN in roles:
        return reverse("team-quality")
    if Role.RESEARCHER in roles:
        return reverse("research-home")
    if Role.LABELER in roles:
        return reverse("labeler-home")
    return reverse("no-role")


def _shares(queryset, field, choices=None):
    """Rows of (label, count, percent) for a grouped count, largest first."""
    labels = dict(choices) if choices else {}
    counts = list(queryset.order_by().values_list(field).annotate(n=Count("id")).order_by("-n"))
    total = sum(n for _, n in counts) or 1
    return [(labels.get(value, value) or "unspecified", n, round(100 * n / total, 1)) for value, n in counts]


def invitations_open():
    """Invitations that can still be used, newest first: the links an admin may still have to send."""
    return Invitation.objects.filter(used_at__isnull=True, expires_at__gt=timezone.now()).select_related("created_by")


def dataset_overview():
    prompts = Prompt.objects.all()
    return {
        "prompt_count": prompts.count(),
        "by_split": _shares(prompts, "split", Prompt.Split.choices),
        "by_source": _shares(prompts, "source", Prompt.Source.choices),
        "by_language": _shares(prompts, "language"),
        "by_use_case": _shares(prompts, "use_case", Prompt._meta.get_field("use_case").choices),
        "open_tasks": _shares(Task.objects.filter(state=Task.State.OPEN), "kind", Task.Kind.choices),
        "needing_completions": prompts.filter(needs_completions=True).count(),
    }


def dataset_dashboard(*, days=30):
    """The charts of the research home: InstructGPT's dataset tables, agreement, throughput, model metrics."""
    by_split_source = Prompt.objects.order_by().values_list("split", "source").annotate(n=Count("id"))
    table = {(split, source): n for split, source, n in by_split_source}
    annotations = PromptAnnotation.objects.all()
    count = annotations.count()
    flagged = annotations.aggregate(**{name: Count("id", filter=Q(**{name: True})) for name in PromptAnnotation.FLAGS})
    return {
        "splits": Prompt.Split.labels,
        "sources": [
            (label, counts) for source, label in Prompt.Source.choices
            if any(counts := [table.get((split, source), 0) for split in Prompt.Split.values])
        ],
        "annotation_count": count,
        "annotation_shares": [
            (PromptAnnotation._meta.get_field(name).verbose_name.capitalize(), n, round(100 * n / (count or 1), 1))
            for name, n in flagged.items()
        ],
        "annotated_use_cases": _shares(annotations, "use_case", UseCase.choices),
        "agreement": agreement_by_week(),
        "throughput": throughput_by_day(days),
        "reward_models": _versions(ModelVersion.Kind.REWARD, ("accuracy",)),
        "policies": _versions(ModelVersion.Kind.POLICY, ("reward", "kl")),
    }


def agreement_by_week():
    """[(week, mean pairwise agreement, overlap tasks)]: each overlap task counts in the week of its last ranking."""
    weeks = {}
    for rows in _overlap_rankings("groups", "created_at"):
        score = quality.mean_agreement([groups for groups, _ in rows])
        if score is not None:
            last = max(at for _, at in rows).date()
            weeks.setdefault(last - timedelta(days=last.weekday()), []).append(score)
    return [(week, sum(scores) / len(scores), len(scores)) for week, scores in sorted(weeks.items())]


def _overlap_tasks(labeler=None):
    """Ids of the tasks ranked by more than one labeler (one of them `labeler`, when given)."""
    tasks = Ranking.objects.values("task_id").annotate(n=Count("id")).filter(n__gt=1).values("task_id")
    return tasks.filter(task_id__in=labeler.rankings.values("task_id")) if labeler else tasks


def _overlap_rankings(*fields, labeler=None):
    """The `fields` of each overlap task's rankings, a task at a time."""
    found = Ranking.objects.filter(task_id__in=_overlap_tasks(labeler)).order_by("task_id").values_list(
        "task_id", *fields)
    for _, rows in groupby(found.iterator(chunk_size=2000), key=lambda row: row[0]):
        yield [row[1:] for row in rows]


def throughput_by_day(days, labeler=None):
    """Results submitted per day and task kind over the last `days` days (by everyone, or one labeler)."""
    today = timezone.now().date()
    dates = [today - timedelta(days=n) for n in range(days - 1, -1, -1)]
    submitted = Assignment.objects.filter(state=Assignment.State.SUBMITTED, submitted_at__date__gte=dates[0])
    if labeler is not None:
        submitted = submitted.filter(labeler=labeler)
    counts = submitted.order_by().values_list(TruncDate("submitted_at"), "task__kind").annotate(n=Count("id"))
    table = {(day, kind): n for day, kind, n in counts}
    series = {label: [table.get((day, kind), 0) for day in dates] for kind, label in Task.Kind.choices}
    series = {label: points for label, points in series.items() if any(points)}
    return {"dates": dates, "series": series, "totals": [(label, sum(points)) for label, points in series.items()]}


def _versions(kind, metrics):
    versions = ModelVersion.objects.filter(kind=kind).order_by("created_at")
    return [(v.name, v.status, *[v.metrics.get(name) for name in metrics]) for v in versions]


def dataset_statistics():
    """The dashboard's numbers, as records for the API."""
    overview = dataset_overview()
    for key, value in overview.items():
        if isinstance(value, list):
            overview[key] = [{"label": label, "count": n, "percent": percent} for label, n, percent in value]
    submitted = Assignment.objects.filter(state=Assignment.State.SUBMITTED)
    overview["results"] = dict(submitted.order_by().values_list("task__kind").annotate(n=Count("id")))
    return overview


def exports_visible_to(user):
    """Researchers and admins share the team's exports, except that only admins see the ones that name labelers."""
    exports = Export.objects.select_related("created_by")
    roles = roles_of(user)
    if Role.ADMIN in roles:
        return exports
    if Role.RESEARCHER in roles:
        return exports.filter(with_identities=False)
    return exports.none()


def import_jobs_visible_to(user):
    """Researchers and admins share the team's imports."""
    return ImportJob.objects.select_related("created_by")



# Quality of labelers in production

def quality_report(labeler=None):
    """Agreement on overlap work, overall and per labeler, with gold accuracy, pace and skips; for one
    labeler, over the work they share with peers only.

    Rankings: InstructGPT's pairwise agreement and Kendall's tau-b between every two labelers of a task;
    their 1-7 ratings: Krippendorff's alpha (ordinal) over each (task, completion); prompt annotations:
    alpha (nominal) over each (prompt, flag).
    """
    peers, taus, weekly = defaultdict(list), [], defaultdict(lambda: defaultdict(list))
    for rows in _overlap_rankings("labeler_id", "groups", "created_at", labeler=labeler):
        for (a, groups_a, at_a), (b, groups_b, at_b) in combinations(rows, 2):
            score = quality.pairwise_agreement(groups_a, groups_b)
            if score is None:
                continue
            taus.append(quality.kendall_tau_b(groups_a, groups_b))
            for person, at in ((a, at_a), (b, at_b)):
                peers[person].append(score)
                weekly[person][_week(at)].append(score)
    rating_units = defaultdict(list)
    for task_id, completion_id, rating in CompletionRating.objects.filter(
            ranking__task_id__in=_overlap_tasks(labeler)).values_list("ranking__task_id", "completion_id", "rating"):
        rating_units[(task_id, completion_id)].append(rating)
    annotated = PromptAnnotation.objects.values("prompt_id").annotate(n=Count("id")).filter(n__gt=1)
    if labeler:
        annotated = annotated.filter(prompt_id__in=labeler.annotations.values("prompt_id"))
    flag_units = defaultdict(list)
    for prompt_id, *flags in PromptAnnotation.objects.filter(prompt_id__in=annotated.values("prompt_id")).values_list(
            "prompt_id", *PromptAnnotation.FLAGS):
        for name, value in zip(PromptAnnotation.FLAGS, flags, strict=True):
            flag_units[(prompt_id, name)].append(value)
    all_scores = [s for scores in peers.values() for s in scores]
    taus = [t for t in taus if t is not None]
    return {
        "overall": {
            "ranking_agreement": _mean(all_scores),
            "kendall_tau_b": _mean(taus),
            "rating_alpha": quality.krippendorff_alpha(rating_units.values(), "ordinal"),
            "flag_alpha": quality.krippendorff_alpha(flag_units.values(), "nominal"),
            "overlap_pairs": len(all_scores) // 2,
        },
        "labelers": _labeler_rows(peers, labeler),
        "weekly": {person: sorted((week, _mean(scores)) for week, scores in weeks.items())
                   for person, weeks in weekly.items()},
    }


def _labeler_rows(peers, labeler=None):
    """One row per labeler: output, pace, skips, gold accuracy, agreement with peers; flagged when below."""
    users = get_user_model().objects.filter(groups__name=Role.LABELER).select_related("labeler_profile")
    if labeler:
        users = users.filter(pk=labeler.pk)
    assignments = Assignment.objects.filter(labeler__in=users)
    counts = defaultdict(dict)
    for labeler_id, state, n in assignments.order_by().values_list("labeler_id", "state").annotate(n=Count("id")):
        counts[labeler_id][state] = n
    gold, gold_weekly = defaultdict(list), defaultdict(lambda: defaultdict(list))
    times = defaultdict(list)
    for labeler_id, seconds, score, is_gold, practice, at in assignments.filter(
            state=Assignment.State.SUBMITTED).values_list(
            "labeler_id", "time_spent_seconds", "gold_score", "task__is_gold", "task__is_practice", "submitted_at"):
        times[labeler_id].append(seconds)
        if is_gold and not practice and score is not None:
            gold[labeler_id].append(score)
            gold_weekly[labeler_id][_week(at)].append(score)
    rows = []
    for user in users.order_by("username"):
        submitted = counts[user.pk].get(Assignment.State.SUBMITTED, 0)
        skipped = counts[user.pk].get(Assignment.State.SKIPPED, 0)
        row = {
            "user": user, "status": user.labeler_profile.status, "submitted": submitted,
            "skip_rate": skipped / (submitted + skipped) if submitted + skipped else None,
            "median_seconds": statistics.median(times[user.pk]) if times[user.pk] else None,
            "gold_accuracy": _mean(gold[user.pk]), "gold_tasks": len(gold[user.pk]),
            "agreement": _mean(peers.get(user.pk, [])), "overlap_pairs": len(peers.get(user.pk, [])),
            "gold_weekly": {week: _mean(scores) for week, scores in gold_weekly[user.pk].items()},
        }
        row["below"] = [name for name, value, floor in (
            ("gold accuracy", row["gold_accuracy"], settings.QUALITY_MIN_GOLD_ACCURACY),
            ("agreement", row["agreement"], settings.QUALITY_MIN_AGREEMENT)) if value is not None and value < floor]
        rows.append(row)
    return rows


def _week(moment):
    day = moment.date()
    return day - timedelta(days=day.weekday())


def _mean(values):
    return sum(values) / len(values) if values else None
