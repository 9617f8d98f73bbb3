"""Reads of labeling work, scoped to the labeler who asks: the queue, leases, suggestions and what they submitted."""


from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Case, Exists, Expression, OuterRef, Q, When
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from ..models import (
    Assignment,
    ChatMessage,
    Completion,
    CompletionRating,
    Conversation,
    Evaluation,
    Guidelines,
    LabelerProfile,
    ModelVersion,
    PromptAnnotation,
    ScreeningAttempt,
    Task,
    TurnSuggestion,
)


class _TaskCondition(Expression):
    """A condition on tasks written in SQL, `{task}` standing for the task table as the query names it and
    `{language}` for the language its params name (NULL where they name none), in the database's JSON dialect."""

    def __init__(self, sql, params):
        super().__init__(output_field=BooleanField())
        self.sql, self.params = sql, params

    def as_sql(self, compiler, connection):
        task = compiler.quote_name_unless_alias(compiler.query.base_table)
        language = (f"({task}.params ->> 'language')" if connection.vendor == "postgresql"
                    else f"json_extract({task}.params, '$.language')")
        return f"({self.sql.format(task=task, language=language)})", self.params


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
                      "({language} IS NULL OR {language} IN " + languages + "))",
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
