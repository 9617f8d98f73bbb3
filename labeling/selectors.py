"""Reads, scoped to the user who asks."""

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations, groupby
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import BooleanField, Case, Count, Exists, Expression, OuterRef, Q, When
from django.db.models.functions import TruncDate
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from . import quality, samplers
from .models import (
    Assignment,
    ChatMessage,
    Completion,
    CompletionRating,
    Conversation,
    Demonstration,
    Evaluation,
    Export,
    Guidelines,
    ImportJob,
    Invitation,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    Role,
    ScreeningAttempt,
    Task,
    TrainingRun,
    TurnSuggestion,
    UseCase,
)
from .permissions import roles_of


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


def training_runs():
    """The team's training runs with what the pages show of them."""
    return TrainingRun.objects.select_related("export", "valid_export", "base_model", "reward_model", "reference_model",
                                              "ptx_export", "created_by", "model_version")


@dataclass
class TrainingRule:
    """One of beat's rules for starting a run, and where it stands: `done` of `needed` new results since the
    active model's training data, or for a policy the pair of models it waits for."""

    kind: str
    progress: str
    trigger: str
    due: bool
    done: int = 0
    needed: int = 0
    live: TrainingRun | None = None

    @property
    def label(self):
        return TrainingRun.Kind(self.kind).label


def training_rules():
    """Beat's rules, in the order it applies them: a reward model after TRAIN_RM_AFTER_COMPARISONS new rankings,
    an SFT model after TRAIN_SFT_AFTER_DEMONSTRATIONS new demonstrations (judgments of human evaluations are
    rankings but no training data), and a policy for each pair of active reward and SFT models."""
    active = {v.kind: v for v in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)
              .select_related("training_run__export")}
    live = {run.kind: run for run in TrainingRun.objects.filter(state__in=TrainingRun.LIVE)}
    rules = []
    for kind, results, needed, what in [
        (TrainingRun.Kind.REWARD, Ranking.objects.filter(task__evaluation__isnull=True),
         settings.TRAIN_RM_AFTER_COMPARISONS, "rankings"),
        (TrainingRun.Kind.SFT, Demonstration.objects.all(), settings.TRAIN_SFT_AFTER_DEMONSTRATIONS, "demonstrations"),
    ]:
        version = active.get(TRAINING_OUTPUTS[kind])
        run = version and version.training_run
        if run and run.export:
            done, since = results.filter(created_at__gt=run.export.created_at).count(), f" since {version.name}"
        else:
            done, since = results.count(), " so far"
        rules.append(TrainingRule(kind=kind, progress=f"{min(done, needed):,} of {needed:,} new {what}{since}",
                                  trigger=f"{needed}+ new {what}", due=done >= needed and kind not in live,
                                  done=done, needed=needed, live=live.get(kind)))
    reward, sft = active.get(ModelVersion.Kind.REWARD), active.get(ModelVersion.Kind.SFT)
    pair = f"reward model {reward.name} and SFT model {sft.name if sft else 'base'}" if reward else ""
    trained = reward and TrainingRun.objects.filter(kind=TrainingRun.Kind.PPO, reward_model=reward,
                                                    reference_model=sft).order_by("-pk").first()
    if not reward:
        progress = "Waits for a first reward model."
    elif trained:
        progress = f"Run #{trained.pk} trained a policy on {pair} ({trained.state}); the next waits for a new one."
    else:
        progress = f"Due: no policy has been trained on {pair} yet."
    rules.append(TrainingRule(kind=TrainingRun.Kind.PPO, progress=progress, trigger=f"{pair} are active",
                              due=bool(reward and not trained and TrainingRun.Kind.PPO not in live),
                              live=live.get(TrainingRun.Kind.PPO)))
    return rules


TRAINING_OUTPUTS = {TrainingRun.Kind.REWARD: ModelVersion.Kind.REWARD, TrainingRun.Kind.SFT: ModelVersion.Kind.SFT}


def queued_because(runs):
    """{run id: why it still waits}, for the queued runs among `runs`: the gpu worker trains one run at a time."""
    running = TrainingRun.objects.filter(state=TrainingRun.State.RUNNING).order_by("started_at").first()
    queued = list(TrainingRun.objects.filter(state=TrainingRun.State.QUEUED).order_by("created_at", "pk"))
    now, reasons = timezone.now(), {}
    for n, run in enumerate(queued):
        if running:
            reason = (f"Waits for run #{running.pk} ({running.get_kind_display().lower()}), which the gpu worker is "
                      "training: it trains one run at a time.")
        elif n:
            reason = f"Waits behind run #{queued[0].pk}, queued before it, for the gpu worker."
        elif now - run.created_at > timedelta(minutes=2):
            minutes = int((now - run.created_at).total_seconds() // 60)
            reason = (f"No gpu worker has taken it for {minutes} minutes: check that a worker consumes the gpu queue "
                      "(celery -A config worker -Q gpu).")
        else:
            reason = "Waits for the gpu worker to take it."
        reasons[run.pk] = reason
    return {pk: reason for pk, reason in reasons.items() if pk in {run.pk for run in runs}}


def sampler_overview():
    """The sampler's last known state, what it should serve now, and how many prompts wait for completions."""
    state = dict(samplers.sampler_state())
    if settings.SAMPLER_URL:  # never show credentials written into the URL
        url = urlsplit(settings.SAMPLER_URL)
        state["backend"] = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
    active = ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, status=ModelVersion.Status.ACTIVE).first()
    state["serving"] = active.served_name if active else None
    state["waiting"] = Prompt.objects.filter(needs_completions=True).count()
    state["ranking_tasks"], state["buffer"] = ranking_tasks_waiting(), settings.RANKING_BUFFER
    state["server"] = settings.SAMPLER_SERVER if settings.SAMPLER_URL else None
    return state


def ranking_tasks_waiting():
    """Open ranking tasks of training data (an evaluation's are sampled apart)."""
    return Task.objects.filter(kind=Task.Kind.RANK_COMPLETIONS, state=Task.State.OPEN, evaluation__isnull=True).count()


def model_versions_by_kind():
    """[(kind label, versions newest first)], with each version's lineage."""
    versions = ModelVersion.objects.select_related(
        "parent", "training_run__export", "training_run__reference_model", "training_run__reward_model",
        "training_run__ptx_export",
    ).order_by("-created_at")
    return [(label, [v for v in versions if v.kind == kind]) for kind, label in ModelVersion.Kind.choices]


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


class _TaskCondition(Expression):
    """A condition on tasks written in SQL, `{task}` standing for the task table as the query names it."""

    def __init__(self, sql, params):
        super().__init__(output_field=BooleanField())
        self.sql, self.params = sql, params

    def as_sql(self, compiler, connection):
        task = compiler.quote_name_unless_alias(compiler.query.base_table)
        return f"({self.sql.format(task=task)})", self.params


# Ends a subquery on the prompt of the task at hand, so that PostgreSQL looks it up task by task as it walks the
# queue (and stops at the first fit) instead of first hashing every prompt that passes: an OFFSET keeps it from
# turning EXISTS into a hashed set.
_PER_TASK = "LIMIT 1 OFFSET 0"

# A task's slot is taken by a submitted assignment or by a live lease.
_SLOTS_TAKEN = ("SELECT COUNT(*) FROM labeling_assignment a WHERE a.task_id = {task_id} "
                "AND (a.state = %s OR (a.state = %s AND a.lease_expires_at > %s))")


def _slots_taken_params(now):
    return [Assignment.State.SUBMITTED, Assignment.State.ACTIVE, connection.ops.adapt_datetimefield_value(now)]


def task_slots_taken(task_id, *, now, besides=None):
    """How many of the task's slots are taken at `now`, leaving out the assignment `besides`."""
    sql, params = _SLOTS_TAKEN.format(task_id="%s"), [task_id, *_slots_taken_params(now)]
    if besides is not None:
        sql, params = f"{sql} AND a.id <> %s", [*params, besides]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def tasks_available_to(*, labeler, profile, now):
    """Open tasks with a free slot that this labeler may take, next first: by priority, then age.

    Never one they already had, never a kind or language they are not enabled for, never a ranking of a
    prompt they wrote; with DEMONSTRATIONS_WAIT_FOR_SUGGESTION, never a demonstration before the model has
    written a reply to suggest; never a task of an evaluation that asks for held-out labelers whose candidate
    was made after the labeler's first training data (it may have learnt from them).

    The rules are one condition in SQL: a lease asks it on every request, and the ORM took several times
    longer to build and compile it than PostgreSQL takes to answer it.
    """
    Kind, mine = Task.Kind, [labeler.pk]
    rules = [
        ("{task}.state = %s", [Task.State.OPEN]),
        ("(" + _SLOTS_TAKEN.format(task_id="{task}.id") + ") < {task}.required_annotations", _slots_taken_params(now)),
        ("NOT EXISTS (SELECT 1 FROM labeling_assignment a WHERE a.task_id = {task}.id AND a.labeler_id = %s)", mine),
        ("NOT ({task}.kind = %s AND EXISTS (SELECT 1 FROM labeling_prompt p WHERE p.id = {task}.prompt_id "
         "AND p.created_by_id = %s))", [Kind.RANK_COMPLETIONS, *mine]),
        # Evaluations that ask for held-out labelers: not for one whose data a candidate may have learnt from,
        # that is one who submitted a ranking outside evaluations or a demonstration before it was made.
        ("{task}.evaluation_id IS NULL OR {task}.evaluation_id NOT IN (SELECT e.id FROM labeling_evaluation e "
         "JOIN labeling_modelversion m ON m.id = e.candidate_id WHERE e.state = %s AND e.held_out_labelers = %s "
         "AND m.training_run_id IS NOT NULL AND (m.created_at >= (SELECT MIN(r.created_at) FROM labeling_ranking r "
         "JOIN labeling_task rt ON rt.id = r.task_id WHERE r.labeler_id = %s AND rt.evaluation_id IS NULL) "
         "OR m.created_at >= (SELECT MIN(d.created_at) FROM labeling_demonstration d WHERE d.author_id = %s)))",
         [Evaluation.State.OPEN, True, *mine, *mine]),
    ]
    if profile.task_kinds:
        rules.append(("{task}.kind IN " + _placeholders(profile.task_kinds), list(profile.task_kinds)))
    if profile.languages:  # a chat's language is its task's (any, if it names none); a prompt to write has none
        languages = _placeholders(profile.languages)
        rules.append(("EXISTS (SELECT 1 FROM labeling_prompt p WHERE p.id = {task}.prompt_id AND p.language IN "
                      + languages + " " + _PER_TASK + ") OR {task}.kind = %s OR ({task}.kind = %s AND "
                      "(({task}.params -> 'language') IS NULL OR ({task}.params ->> 'language') IN " + languages + "))",
                      [*profile.languages, Kind.WRITE_PROMPT, Kind.CHAT, *profile.languages]))
    condition = _TaskCondition(" AND ".join(f"({sql})" for sql, _ in rules),
                               [param for _, params in rules for param in params])
    tasks = Task.objects.filter(condition)
    if settings.DEMONSTRATIONS_WAIT_FOR_SUGGESTION:  # until the model has written a reply to suggest
        suggested = Exists(Completion.objects.filter(SUGGESTERS, prompt=OuterRef("prompt")))
        tasks = tasks.exclude(Q(kind=Task.Kind.WRITE_DEMONSTRATION) & ~suggested)
    return tasks.order_by("-priority", "created_at", "pk")


def _placeholders(values):
    return "(" + ", ".join(["%s"] * len(values)) + ")"


PRIORITY_LANE = "priority"


def open_lanes():
    """The lanes of the queue that hold open tasks: each kind of task, and PRIORITY_LANE for tasks given a
    priority above 0. One query of an index probe per lane, so that a lease walks only lanes with work.

    Each probe asks for the lane's first task in the queue's order, which only the queue's indexes answer: asked
    whether any row exists, PostgreSQL may read the table from its start instead, past every completed task."""
    table = connection.ops.quote_name(Task._meta.db_table)
    probes = [(kind, "kind = %s", [kind]) for kind in Task.Kind.values] + [(PRIORITY_LANE, "priority > %s", [0])]
    sql = " UNION ALL ".join(f"SELECT %s WHERE (SELECT id FROM {table} WHERE state = %s AND {condition} "
                             "ORDER BY priority DESC, created_at, id LIMIT 1) IS NOT NULL"
                             for _, condition, _ in probes)
    params = [value for lane, _, condition_params in probes for value in (lane, Task.State.OPEN, *condition_params)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def assignment_of(labeler, pk):
    """One of the labeler's own assignments; anyone else's is a 404."""
    return get_object_or_404(
        Assignment.objects.select_related("task__prompt"), pk=pk, labeler=labeler
    )


def assignment_to_answer(labeler, pk):
    """One of the labeler's own assignments, as a submit or a skip needs it before its service locks and reads it:
    its id and its task's kind (`task_kind`). Anyone else's is a 404."""
    found = Assignment.objects.raw(
        "SELECT a.id, t.kind AS task_kind FROM labeling_assignment a JOIN labeling_task t ON t.id = a.task_id "
        "WHERE a.id = %s AND a.labeler_id = %s", [pk, labeler.pk])
    assignment = next(iter(found), None)
    if assignment is None:
        raise Http404("No Assignment matches the given query.")
    return assignment


def conversation_of(labeler, pk):
    """One of the labeler's own chats; anyone else's is a 404."""
    return get_object_or_404(Conversation.objects.select_related("assignment__task"), pk=pk, labeler=labeler)


def chat_message_of(labeler, pk):
    """A message of one of the labeler's own chats; anyone else's is a 404."""
    return get_object_or_404(ChatMessage.objects.select_related("conversation", "model_version"), pk=pk,
                             conversation__labeler=labeler)


def suggestion_of(labeler, pk):
    """A suggestion for one of the labeler's own demonstrations; anyone else's is a 404."""
    return get_object_or_404(TurnSuggestion.objects.select_related("model_version"), pk=pk,
                             assignment__labeler=labeler)


def chat_messages(conversation):
    """The conversation's turns as they stand, without the replies regenerated since."""
    return list(conversation.messages.filter(superseded=False).select_related("model_version"))


def work_of(labeler):
    """The labeler's finished work, newest first."""
    return (
        labeler.assignments.filter(state__in=[Assignment.State.SUBMITTED, Assignment.State.SKIPPED])
        .select_related("task__prompt")
        .order_by("-submitted_at", "-leased_at")
    )


WAITING_SHOWN = 100  # past this many, the count of waiting tasks reads "100+"


def _progress(user, profile):
    """Done today and waiting. Waiting is counted up to a cap: it is shown on every task page."""
    waiting = 0
    if profile.is_active_labeler:
        available = tasks_available_to(labeler=user, profile=profile, now=timezone.now())
        waiting = available.values("pk")[: WAITING_SHOWN + 1].count()
    return {
        "done_today": user.assignments.filter(
            state=Assignment.State.SUBMITTED, submitted_at__date=timezone.localdate()
        ).count(),
        "waiting": f"{WAITING_SHOWN}+" if waiting > WAITING_SHOWN else waiting,
    }


def guidelines_pending(profile):
    """The newest guidelines if this labeler has not acknowledged them, else None. A profile read by work_profile
    knows the newest version's id: only a labeler who has something to read costs a query."""
    if hasattr(profile, "newest_guidelines_id"):
        newest = profile.newest_guidelines_id
        pending = newest is not None and newest != profile.guidelines_acknowledged_id
        return Guidelines.objects.get(pk=newest) if pending else None
    latest = Guidelines.objects.first()
    return latest if latest and profile.guidelines_acknowledged_id != latest.pk else None


def work_profile(labeler, *, live_at=None, lock=False):
    """The labeler's profile as a lease or a submit checks it, in one query: with `newest_guidelines_id` (of the
    newest guidelines, None before any) and, given `live_at`, `live_lease_id` (the labeler's lease still running
    then, None without one); locked with `lock`. None for a user without a profile.

    Written in SQL: it runs on every lease and submit, where the ORM queries it replaces cost several times their
    database time to build."""
    columns, params = ["p.*", "(SELECT g.id FROM labeling_guidelines g ORDER BY g.version DESC LIMIT 1) "
                              "AS newest_guidelines_id"], []
    if live_at is not None:
        columns.append("(SELECT a.id FROM labeling_assignment a WHERE a.labeler_id = p.user_id AND a.state = %s "
                       "AND a.lease_expires_at > %s ORDER BY a.leased_at DESC LIMIT 1) AS live_lease_id")
        params += [Assignment.State.ACTIVE, connection.ops.adapt_datetimefield_value(live_at)]
    sql = f"SELECT {', '.join(columns)} FROM labeling_labelerprofile p WHERE p.user_id = %s"
    if lock and connection.features.has_select_for_update_of:  # SQLite locks the whole database instead
        sql += " FOR UPDATE OF p"
    return next(iter(LabelerProfile.objects.raw(sql, [*params, labeler.pk])), None)


def labeler_overview(user):
    profile, _ = LabelerProfile.objects.get_or_create(user=user)
    practice = user.assignments.filter(task__is_practice=True, state=Assignment.State.SUBMITTED)
    return {
        "profile": profile,
        "pending_guidelines": guidelines_pending(profile),
        "practice_done": practice.count(),
        "practice_needed": settings.ONBOARDING_PRACTICE_TASKS,
        "current": user.assignments.filter(state=Assignment.State.ACTIVE, lease_expires_at__gt=timezone.now()).first(),
        "submitted": user.assignments.filter(state=Assignment.State.SUBMITTED).count(),
        **_progress(user, profile),
    }


def completions_in_order(assignment):
    """The task's completions in the order shown to this labeler."""
    completions = {c.pk: c for c in assignment.task.completions.all()}
    order = [cid for cid in assignment.display_order if cid in completions]
    return [completions[cid] for cid in order + sorted(set(completions) - set(order))]


# The replies a demonstration may start from: a policy's or an SFT model's that is, or was, the active one (never a
# version the gate refused, or one not yet judged).
SUGGESTERS = Q(model_version__kind__in=[ModelVersion.Kind.POLICY, ModelVersion.Kind.SFT],
               model_version__status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.RETIRED])


def model_suggestion(prompt):
    """A reply to the prompt written by the active policy, before there is one by the active SFT model, and failing
    both the newest reply of an earlier active version."""
    return (
        Completion.objects.filter(SUGGESTERS, prompt=prompt)
        .select_related("model_version")
        .order_by(Case(When(model_version__status=ModelVersion.Status.ACTIVE, then=0), default=1),
                  Case(When(model_version__kind=ModelVersion.Kind.POLICY, then=0), default=1), "-created_at", "-pk")
        .first()
    )


def workspace_panel(labeler):
    """What the side panel of every task page shows: guidelines and today's progress."""
    profile = LabelerProfile.objects.get(user=labeler)
    return {"guidelines": Guidelines.objects.first(), **_progress(labeler, profile)}


def practice_feedback(assignment):
    """For a submitted practice task: the labeler's score, the researchers' answer and why."""
    task, gold = assignment.task, assignment.task.gold_answer or {}
    if not task.is_practice or assignment.state != Assignment.State.SUBMITTED:
        return None
    answer = ""
    if task.kind == Task.Kind.RANK_COMPLETIONS and gold.get("groups"):
        letters = {c.pk: chr(ord("A") + i) for i, c in enumerate(completions_in_order(assignment))}
        answer = " > ".join(" = ".join(letters[cid] for cid in group) for group in gold["groups"])
    elif task.kind == Task.Kind.ANNOTATE_PROMPT:
        flags = [PromptAnnotation._meta.get_field(name).verbose_name for name in gold.get("flags", [])]
        answer = f"use case {gold.get('use_case', '—')}; flags: {', '.join(flags) or 'none'}"
    return {"score": assignment.gold_score, "answer": answer, "explanation": gold.get("explanation", "")}


def review_queue():
    """Screening attempts waiting for a decision, oldest first. Reviewers see them by number only."""
    return ScreeningAttempt.objects.filter(decision=ScreeningAttempt.Decision.PENDING,
                                           submitted_at__isnull=False).order_by("submitted_at")


def result_of(assignment):
    """Everything the labeler submitted for an assignment, by kind, for reading back."""
    kind = assignment.task.kind
    if kind == Task.Kind.WRITE_PROMPT:
        return {"written_prompt": getattr(assignment, "written_prompt", None)}
    if kind == Task.Kind.WRITE_DEMONSTRATION:
        return _demonstration_result(getattr(assignment, "demonstration", None))
    if kind == Task.Kind.RANK_COMPLETIONS:
        return _ranking_result(assignment, getattr(assignment, "ranking", None))
    if kind == Task.Kind.CHAT:
        conversation = getattr(assignment, "conversation", None)
        return {"conversation": conversation, "chat_messages": chat_messages(conversation) if conversation else []}
    annotation = getattr(assignment, "annotation", None)
    return {"annotation": annotation, "annotation_flags": _flags_set(annotation, PromptAnnotation)}


def _flags_set(row, model):
    """The names of the yes/no flags set on `row` of `model`, as the task page labels them."""
    if row is None:
        return []
    return [model._meta.get_field(flag).verbose_name.capitalize() for flag in model.FLAGS if getattr(row, flag)]


def _demonstration_result(demonstration):
    """The labeler's turns after the prompt's, each with the model whose suggestion it started from."""
    if demonstration is None:
        return {"demonstration": None, "demonstration_turns": []}
    prompt = demonstration.prompt
    opening = len(prompt.turns) if isinstance(prompt.turns, list) and prompt.turns else 1
    used = {entry.get("turn"): entry.get("model_version") for entry in demonstration.turn_suggestions or []
            if isinstance(entry, dict) and entry.get("used")}
    turns = [{**turn, "suggested_by": used.get(number)}
             for number, turn in enumerate(demonstration.messages[opening:], start=1) if isinstance(turn, dict)]
    return {"demonstration": demonstration, "demonstration_turns": turns}


def _ranking_result(assignment, ranking):
    """Per output in the order the labeler saw them: its rank (tied outputs share one), rating, flags, notes."""
    completions = completions_in_order(assignment)
    letters = {c.pk: chr(ord("A") + i) for i, c in enumerate(completions)}
    groups = [[cid for cid in group if cid in letters] for group in ranking.groups] if ranking else []
    rank_of = {cid: (rank, group) for rank, group in enumerate(groups, start=1) for cid in group}
    ratings = {r.completion_id: r for r in ranking.ratings.all()} if ranking else {}
    outputs = []
    for completion in completions:
        rank, group = rank_of.get(completion.pk, (None, []))
        rating = ratings.get(completion.pk)
        outputs.append({
            "letter": letters[completion.pk],
            "completion": completion,
            "rank": rank,
            "tied_with": [letters[cid] for cid in group if cid != completion.pk],
            "rating": rating,
            "flags": _flags_set(rating, CompletionRating),
        })
    return {
        "ranking": ranking,
        "ranked_groups": [[letters[cid] for cid in group] for group in groups],
        "outputs": outputs,
    }


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
