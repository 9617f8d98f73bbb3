"""Database rows to dataset rows, one class per export kind.

Each source reads with a server-side cursor (`iterator()` on PostgreSQL) and looks up what a batch
of rows refers to in one query per batch, so memory holds a batch, never the whole export. Its
`done` counts the source rows read, against `total()`, for the progress bar; `counts` goes into the
manifest.

A stored row that breaks today's rules for answers (labeling/answers.py: a demonstration that does
not alternate, notes over the limit, a prompt over PROMPT_MAX_CHARS, ...) is left out whole; `counts`
holds how many under `left_out`, {"<row>: <rule>": n}, which the manifest lists on its own.
"""

import json
from collections import defaultdict
from itertools import groupby, islice

import pyarrow as pa
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Length

from .. import answers, quality
from ..evaluations import evaluation_results, leaderboard
from ..models import (
    Completion,
    CompletionRating,
    Demonstration,
    Evaluation,
    Prompt,
    PromptAnnotation,
    Ranking,
    Task,
    UseCase,
)

BATCH = 2000
# The flags that say a completion is at fault: a top-rated completion with one of them is no demonstration.
FAULT_FLAGS = [flag for flag in CompletionRating.FLAGS if flag != "satisfies_constraint"]

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def batched(iterable, size):
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def as_messages(text, turns=None):
    return turns or [{"role": "user", "content": text}]


def prompt_filter(filters, prefix):
    """Q for the prompt-level filters; `prefix` leads from the queried model to its prompt."""
    q = Q()
    for name, field in (("split", "split"), ("language", "language"), ("use_case", "use_case")):
        if name in filters:
            q &= Q(**{f"{prefix}{field}__in": filters[name]})
    return q


def dated(filters, field="created_at"):
    q = Q()
    if "since" in filters:
        q &= Q(**{f"{field}__gte": filters["since"]})
    if "until" in filters:
        q &= Q(**{f"{field}__lte": filters["until"]})
    return q


def labeled(filters, user_field, task_field):
    """Q for labeler status, gold tasks and evaluation judgments on annotations made by `user_field` in
    `task_field`."""
    q = Q()
    if "labeler_status" in filters:
        q &= Q(**{f"{user_field}__labeler_profile__status__in": filters["labeler_status"]})
    if not filters.get("include_gold"):
        q &= Q(**{f"{task_field}__is_gold": False}) | Q(**{f"{task_field}__isnull": True})
    if not filters.get("include_evaluations"):  # human evaluations judge models; they are no training data
        q &= Q(**{f"{task_field}__evaluation__isnull": True})
    return q


def from_model_versions(filters, task_ref):
    """Tasks with at least one completion sampled from the chosen model versions."""
    through = Task.completions.through.objects.filter(
        task_id=OuterRef(task_ref), completion__model_version_id__in=filters["model_version"]
    )
    return Exists(through)


class Source:
    schema: pa.Schema

    def __init__(self, filters, name_of, *, fmt="jsonl", with_identities=False):
        self.filters, self.name_of, self.fmt, self.with_identities = filters, name_of, fmt, with_identities
        self.done, self.counts = 0, {}
        self.limits = answers.Limits.from_settings()
        self.versions = set()  # the names of the model versions whose outputs the rows hold

    def saw(self, version):
        """`version` (a model version's name, or None), noted for the manifest."""
        if version:
            self.versions.add(version)
        return version

    def total(self):
        return self.queryset().count()

    def count(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def leave_out(self, row, problems):
        """Count a `row` (what it is: "demonstration", "ranking", ...) left out for the first of its problems."""
        left_out = self.counts.setdefault("left_out", {})
        key = f"{row}: {problems[0].rule}"
        left_out[key] = left_out.get(key, 0) + 1

    def summary(self):
        """What the manifest says about the rows beyond their counts; nothing by default."""
        return {}

    def bad_rankings(self, rankings):
        """{ranking id: its problems} for those of `rankings`, (ranking id, task id, groups), that break the rules."""
        return rankings_breaking_rules(rankings, self.limits)


def rankings_breaking_rules(rankings, limits):
    """{ranking id: its problems} for a batch of (ranking id, task id, groups): groups that do not place each of
    the task's completions once, or a rating whose notes are over the limit."""
    rankings = list(rankings)
    completions = defaultdict(set)
    for task_id, completion_id in Task.completions.through.objects.filter(
        task_id__in={task_id for _, task_id, _ in rankings}
    ).values_list("task_id", "completion_id"):
        completions[task_id].add(completion_id)
    found = {}
    # Only the length is read: the notes themselves may be large.
    for ranking_id, completion_id, length in CompletionRating.objects.filter(
        ranking_id__in=[ranking_id for ranking_id, _, _ in rankings]
    ).annotate(length=Length("notes")).filter(length__gt=limits.notes_chars).values_list(
        "ranking_id", "completion_id", "length"
    ):
        found.setdefault(ranking_id, [answers.notes_too_long(
            length, what=f"The notes on completion {completion_id}", limits=limits)])
    for ranking_id, task_id, groups in rankings:
        if problems := answers.ranking_problems(groups, completions[task_id], task_id=task_id):
            found[ranking_id] = problems
    return found


class RankedTasks(Source):
    """Rankings grouped by task, with the overlap mode and minimum agreement applied."""

    def queryset(self):
        f = self.filters
        rankings = Ranking.objects.filter(
            prompt_filter(f, "task__prompt__"), dated(f), labeled(f, "labeler", "task")
        )
        if "model_version" in f:
            rankings = rankings.filter(from_model_versions(f, "task_id"))
        return rankings

    def tasks(self, fields):
        """(task id, its ranking rows) in task order; a row holds the ranking, its prompt, then `fields`."""
        f = self.filters
        rows = self.queryset().order_by("task_id", "id").values_list(
            "task_id", "id", "labeler_id", "groups", "task__prompt_id", "task__prompt__text", "task__prompt__turns",
            "task__prompt__split", "task__prompt__language", "task__prompt__use_case", *fields,
        )
        grouped = ((task_id, list(task_rows)) for task_id, task_rows in groupby(
            rows.iterator(chunk_size=BATCH), key=lambda row: row[0]))
        for batch in batched(grouped, BATCH // 4):
            bad = self.bad_rankings((row[1], row[0], row[3]) for _, task_rows in batch for row in task_rows)
            for task_id, task_rows in batch:
                self.done += len(task_rows)
                task_rows = self.kept(task_rows, bad)
                if not task_rows:
                    continue
                self.count("tasks")
                self.count("annotations", len(task_rows))
                if "min_agreement" in f:
                    agreement = quality.mean_agreement([row[3] for row in task_rows])
                    if agreement is None or agreement < f["min_agreement"]:
                        self.count("tasks_below_min_agreement")
                        continue
                yield task_id, task_rows

    def kept(self, task_rows, bad):
        """The task's rankings that keep the rules, on a prompt that keeps them; the others are counted."""
        prompt_problems = answers.prompt_problems(task_rows[0][5], task_rows[0][6], limits=self.limits)
        kept = []
        for row in task_rows:
            if problems := prompt_problems or bad.get(row[1]):
                self.leave_out("ranking", problems)
            else:
                kept.append(row)
        return kept

    def stored_consensus(self, batch):
        """{task id: (groups, labelers)}: the consensus stored when each task was completed."""
        return {pk: (groups, required) for pk, groups, required in Task.objects.filter(
            pk__in=[task_id for task_id, _ in batch], consensus__isnull=False,
        ).values_list("pk", "consensus", "required_annotations")}

    @staticmethod
    def consensus_of(task_id, orders, stored):
        """The stored consensus when every ranking of the task is in the export, else one of those that are."""
        groups, labelers = stored.get(task_id, (None, 0))
        return groups if groups and len(orders) >= labelers else quality.ranked_pairs_consensus(orders)

    def prompt_of(self, row, style):
        text, turns = row[5], row[6]
        return text if style == "standard" else as_messages(text, turns)


class PreferencePairs(RankedTasks):
    """TRL's preference format: prompt, chosen, rejected (and margin), ties left out."""

    def __init__(self, filters, name_of, **context):
        super().__init__(filters, name_of, **context)
        self.style = filters.get("style", "conversational")
        text = pa.string() if self.style == "standard" else MESSAGES
        fields = [("prompt", text), ("chosen", text), ("rejected", text)]
        if filters.get("margin"):
            fields.append(("margin", pa.float64()))
        self.schema = pa.schema(fields)

    def rows(self):
        mode = self.filters.get("overlap", "every")
        for batch in batched(self.tasks(()), BATCH // 4):
            texts = completion_texts((row for _, rows in batch for row in rows), self.versions)
            stored = self.stored_consensus(batch) if mode == "consensus" else {}
            for task_id, rankings in batch:
                prompt = self.prompt_of(rankings[0], self.style)
                orders = [row[3] for row in rankings]
                if mode == "every" or len(orders) == 1:
                    pairs = [p for groups in orders for p in _with_distance([groups], quality.ranked_pairs_of(groups))]
                elif mode == "consensus":
                    consensus = self.consensus_of(task_id, orders, stored)
                    pairs = _with_distance([consensus], quality.ranked_pairs_of(consensus))
                else:
                    pairs = _with_distance(orders, quality.unanimous_pairs(orders))
                for (better, worse), distance in pairs:
                    yield self.pair(prompt, texts[better], texts[worse], distance)
                self.count("pairs", len(pairs))

    def pair(self, prompt, chosen, rejected, distance):
        if self.style == "conversational":
            chosen, rejected = [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if self.filters.get("margin"):
            row["margin"] = float(distance)
        return row


def _with_distance(orders, pairs):
    """Each (better, worse) pair with how many ranks apart the orders put them, on average."""
    ranks = [quality.positions(groups) for groups in orders]
    return [((better, worse), sum(r[worse] - r[better] for r in ranks) / len(ranks)) for better, worse in pairs]


def completion_texts(ranking_rows, versions):
    """{completion id: text} of the rankings' completions; the names of the versions that wrote them join `versions`."""
    ids = {cid for row in ranking_rows for group in row[3] for cid in group}
    found = list(Completion.objects.filter(pk__in=ids).values_list("pk", "text", "model_version__name"))
    versions.update(version for _, _, version in found if version)
    return {pk: text for pk, text, _ in found}


RATING = pa.struct([("rating", pa.int8()), ("flags", pa.list_(pa.string())), ("notes", pa.string())])
COMPLETION = pa.struct([
    ("id", pa.int64()), ("text", pa.string()), ("model_version", pa.string()),
    ("sampling_params", pa.string()), ("seed", pa.int64()),
])


class Rankings(RankedTasks):
    """The native K-way form that `rlhf train-rm` reads: ranks index into completions."""

    def __init__(self, filters, name_of, **context):
        super().__init__(filters, name_of, **context)
        self.style = filters.get("style", "conversational")
        self.schema = pa.schema([
            ("task_id", pa.int64()), ("ranking_id", pa.int64()), ("prompt_id", pa.int64()),
            ("prompt", pa.string() if self.style == "standard" else MESSAGES),
            ("split", pa.string()), ("language", pa.string()), ("use_case", pa.string()),
            ("completions", pa.list_(COMPLETION)), ("ranks", pa.list_(pa.list_(pa.int32()))),
            ("ratings", pa.list_(RATING)), ("none_acceptable", pa.bool_()),
            ("labeler", pa.string()), ("labelers", pa.int32()), ("agreement", pa.float64()),
            ("time_spent_seconds", pa.int64()), ("created_at", pa.string()),
        ])

    def rows(self):
        consensus = self.filters.get("overlap") == "consensus"
        fields = ("none_acceptable", "assignment__time_spent_seconds", "created_at")
        for batch in batched(self.tasks(fields), BATCH // 4):
            rows = [row for _, rankings in batch for row in rankings]
            completions = completion_details(rows)
            self.versions.update(c["model_version"] for c in completions.values() if c["model_version"])
            ratings = {} if consensus else ratings_of([row[1] for row in rows])
            stored = self.stored_consensus(batch) if consensus else {}
            for task_id, rankings in batch:
                agreement = quality.mean_agreement([row[3] for row in rankings])
                if consensus and len(rankings) > 1:
                    groups = self.consensus_of(task_id, [row[3] for row in rankings], stored)
                    yield self.row(rankings[0], groups, completions, {}, agreement, len(rankings), consensus=True)
                else:
                    for row in rankings:
                        yield self.row(row, row[3], completions, ratings.get(row[1], {}), agreement, len(rankings))
                self.count("rankings", 1 if consensus else len(rankings))

    def row(self, ranking, groups, completions, ratings, agreement, labelers, consensus=False):
        task_id, ranking_id, labeler_id, _, prompt_id, _, _, split, language, use_case, none_acceptable, spent, at = (
            ranking
        )
        order = [cid for group in groups for cid in sorted(group)]
        index = {cid: n for n, cid in enumerate(order)}
        return {
            "task_id": task_id,
            "ranking_id": None if consensus else ranking_id,
            "prompt_id": prompt_id,
            "prompt": self.prompt_of(ranking, self.style),
            "split": split,
            "language": language,
            "use_case": use_case,
            "completions": [completions[cid] for cid in order],
            "ranks": [[index[cid] for cid in sorted(group)] for group in groups],
            "ratings": [ratings.get(cid) for cid in order] if ratings else None,
            "none_acceptable": None if consensus else none_acceptable,
            "labeler": None if consensus else self.name_of(labeler_id),
            "labelers": labelers,
            "agreement": agreement,
            "time_spent_seconds": None if consensus else spent,
            "created_at": None if consensus else at.isoformat(),
        }


class HumanEvaluations(Rankings):
    """The judgments of human evaluations in the K-way form, each with its evaluation and candidate; every
    completion names the model version that wrote it."""

    def __init__(self, filters, name_of, **context):
        super().__init__({**filters, "include_evaluations": True}, name_of, **context)
        self.schema = pa.schema([("evaluation_id", pa.int64()), ("candidate", pa.string()), *self.schema])
        self.seen = set()

    def queryset(self):
        return super().queryset().filter(task__evaluation__isnull=False)

    def rows(self):
        self.evaluations = {task: (evaluation, candidate) for task, evaluation, candidate in Task.objects.filter(
            evaluation__isnull=False).values_list("pk", "evaluation_id", "evaluation__candidate__name")}
        yield from super().rows()

    def row(self, ranking, *args, **kwargs):
        evaluation_id, candidate = self.evaluations[ranking[0]]
        self.seen.add(evaluation_id)
        return {"evaluation_id": evaluation_id, "candidate": candidate, **super().row(ranking, *args, **kwargs)}

    seen = set()

    def summary(self):
        """Each evaluation in the file with its numbers as the site shows them (over all of its judgments, at the
        time of the export), and the leaderboard."""
        found = Evaluation.objects.filter(pk__in=self.seen).select_related("candidate").prefetch_related("baselines")
        return {"evaluations": [
            {"id": evaluation.pk, "candidate": evaluation.candidate.name,
             "baselines": [baseline.name for baseline in evaluation.baselines.all()], "state": evaluation.state,
             "sampling_params": evaluation.sampling_params, "results": evaluation_results(evaluation)}
            for evaluation in found.order_by("pk")
        ], "leaderboard": leaderboard()["versions"]}


def completion_details(ranking_rows):
    ids = {cid for row in ranking_rows for group in row[3] for cid in group}
    found = Completion.objects.filter(pk__in=ids).values_list(
        "pk", "text", "model_version__name", "sampling_params", "seed"
    )
    return {
        pk: {"id": pk, "text": text, "model_version": version, "sampling_params": json.dumps(params, sort_keys=True),
             "seed": seed}
        for pk, text, version, params, seed in found
    }


def ratings_of(ranking_ids):
    """{ranking id: {completion id: {"rating", "flags", "notes"}}} for a batch of rankings."""
    found = CompletionRating.objects.filter(ranking_id__in=ranking_ids).values_list(
        "ranking_id", "completion_id", "rating", "notes", *CompletionRating.FLAGS
    )
    ratings = {}
    for ranking_id, completion_id, rating, notes, *flags in found:
        ratings.setdefault(ranking_id, {})[completion_id] = {
            "rating": rating,
            "flags": [name for name, on in zip(CompletionRating.FLAGS, flags) if on],
            "notes": notes,
        }
    return ratings


class Demonstrations(Source):
    """SFT data as `messages`, the conversational form TRL's SFTTrainer and `rlhf train-sft` read.

    With `feedme`, model completions that labelers rated 7 of 7 follow the demonstrations as demonstrations of
    their own (FeedME, OpenAI's supervised fine-tuning on top-rated samples): `source` tells the two apart.
    """

    schema = pa.schema([
        ("messages", MESSAGES), ("source", pa.string()), ("demonstration_id", pa.int64()),
        ("completion_id", pa.int64()), ("prompt_id", pa.int64()), ("split", pa.string()), ("language", pa.string()),
        ("use_case", pa.string()), ("labeler", pa.string()), ("used_model_suggestion", pa.bool_()),
        ("suggestion_model_version", pa.string()), ("completion_model_version", pa.string()),
        ("time_spent_seconds", pa.int64()), ("created_at", pa.string()),
    ])

    def queryset(self):
        f = self.filters
        return Demonstration.objects.filter(
            prompt_filter(f, "prompt__"), dated(f), labeled(f, "author", "assignment__task")
        )

    def total(self):
        return super().total() + (self.top_rated().count() if self.filters.get("feedme") else 0)

    def rows(self):
        yield from self.demonstrations()
        if self.filters.get("feedme"):
            yield from self.top_rated_rows()

    def demonstrations(self):
        found = self.queryset().order_by("id").values_list(
            "messages", "id", "prompt_id", "prompt__split", "prompt__language", "prompt__use_case", "author_id",
            "used_model_suggestion", "suggestion_model_version__name", "assignment__time_spent_seconds", "created_at",
            "assignment__task__params",
        )
        kept = 0
        for messages, pk, prompt_id, split, language, use_case, author, used, version, spent, at, params in (
            found.iterator(chunk_size=BATCH)
        ):
            self.done += 1
            if problems := answers.demonstration_problems(messages, limits=self.limits, params=params):
                self.leave_out("demonstration", problems)
                continue
            kept += 1
            yield {
                "messages": messages, "source": "demonstration", "demonstration_id": pk, "completion_id": None,
                "prompt_id": prompt_id, "split": split, "language": language, "use_case": use_case,
                "labeler": self.name_of(author), "used_model_suggestion": used,
                "suggestion_model_version": self.saw(version), "completion_model_version": None,
                "time_spent_seconds": spent, "created_at": at.isoformat(),
            }
        self.counts["demonstrations"] = kept

    def ratings(self):
        """The ratings the filters keep: by labelers of the chosen status, on tasks of the chosen kind and dates."""
        f = self.filters
        return CompletionRating.objects.filter(dated(f, "ranking__created_at"), labeled(f, "ranking__labeler",
                                                                                        "ranking__task"))

    def top_rated(self):
        """Completions rated 7 by at least one labeler and below 7, or with a fault flagged, by none, in a ranking
        that found some completion acceptable."""
        ratings = self.ratings().filter(completion_id=OuterRef("pk"))
        faults = Q(rating__lt=7) | Q(ranking__none_acceptable=True)
        for flag in FAULT_FLAGS:
            faults |= Q(**{flag: True})
        return Completion.objects.filter(
            prompt_filter(self.filters, "prompt__"), Exists(ratings.filter(rating=7)), ~Exists(ratings.filter(faults))
        )

    def top_rated_rows(self):
        first = self.ratings().filter(completion_id=OuterRef("pk"), rating=7).order_by("ranking_id")
        found = self.top_rated().annotate(
            rater=Subquery(first.values("ranking__labeler_id")[:1]),
            rated_at=Subquery(first.values("ranking__created_at")[:1]),
        ).order_by("id").values_list(
            "text", "id", "prompt_id", "prompt__text", "prompt__turns", "prompt__split", "prompt__language",
            "prompt__use_case", "model_version__name", "rater", "rated_at",
        )
        kept = 0
        for text, pk, prompt_id, prompt, turns, split, language, use_case, version, rater, at in (
            found.iterator(chunk_size=BATCH)
        ):
            self.done += 1
            messages = [*as_messages(prompt, turns), {"role": "assistant", "content": text}]
            problems = answers.prompt_problems(prompt, turns, limits=self.limits) or answers.conversation_problems(
                messages, limits=self.limits, system_allowed=True, max_turns=self.limits.turns)
            if problems:
                self.leave_out("top-rated completion", problems)
                continue
            kept += 1
            yield {
                "messages": messages, "source": "top_rated_completion", "demonstration_id": None,
                "completion_id": pk, "prompt_id": prompt_id, "split": split, "language": language,
                "use_case": use_case, "labeler": self.name_of(rater), "used_model_suggestion": None,
                "suggestion_model_version": None, "completion_model_version": self.saw(version),
                "time_spent_seconds": None,
                "created_at": at.isoformat(),
            }
        self.counts["top_rated_completions"] = kept


class PpoPrompts(Source):
    """Prompts alone, for PPO rollouts."""

    def __init__(self, filters, name_of, **context):
        super().__init__(filters, name_of, **context)
        self.style = filters.get("style", "conversational")
        self.schema = pa.schema([
            ("prompt", pa.string() if self.style == "standard" else MESSAGES), ("prompt_id", pa.int64()),
            ("split", pa.string()), ("language", pa.string()), ("use_case", pa.string()), ("source", pa.string()),
        ])

    def queryset(self):
        return Prompt.objects.filter(prompt_filter(self.filters, ""), dated(self.filters))

    def rows(self):
        found = self.queryset().order_by("id").values_list(
            "text", "turns", "id", "split", "language", "use_case", "source"
        )
        kept = 0
        for text, turns, pk, split, language, use_case, source in found.iterator(chunk_size=BATCH):
            self.done += 1
            if problems := answers.prompt_problems(text, turns, limits=self.limits):
                self.leave_out("prompt", problems)
                continue
            kept += 1
            prompt = text if self.style == "standard" else as_messages(text, turns)
            yield {"prompt": prompt, "prompt_id": pk, "split": split, "language": language, "use_case": use_case,
                   "source": source}
        self.counts["prompts"] = kept


class Annotations(Source):
    """Prompt annotations, one flat row each (InstructGPT's Table 7 metadata)."""

    FIELDS = ["use_case", "language", *PromptAnnotation.FLAGS, "contains_personal_data"]
    schema = pa.schema([
        ("annotation_id", pa.int64()), ("prompt_id", pa.int64()), ("prompt", pa.string()),
        ("prompt_split", pa.string()), ("prompt_language", pa.string()), ("labeler", pa.string()),
        ("use_case", pa.string()), ("language", pa.string()),
        *[(name, pa.bool_()) for name in [*PromptAnnotation.FLAGS, "contains_personal_data"]],
        ("time_spent_seconds", pa.int64()), ("created_at", pa.string()),
    ])

    def queryset(self):
        f = self.filters
        return PromptAnnotation.objects.filter(
            prompt_filter(f, "prompt__"), dated(f), labeled(f, "labeler", "assignment__task")
        )

    def rows(self):
        found = self.queryset().order_by("id").values_list(
            "id", "prompt_id", "prompt__text", "prompt__split", "prompt__language", "labeler_id", *self.FIELDS,
            "assignment__time_spent_seconds", "created_at", "prompt__turns",
        )
        kept = 0
        for pk, prompt_id, text, split, language, labeler_id, *values, spent, at, turns in found.iterator(
            chunk_size=BATCH
        ):
            self.done += 1
            use_case, annotated_language = values[0], values[1]
            problems = answers.prompt_problems(text, turns, limits=self.limits) or answers.annotation_problems(
                use_case, annotated_language, use_cases=UseCase.values, limits=self.limits)
            if problems:
                self.leave_out("annotation", problems)
                continue
            kept += 1
            yield {
                "annotation_id": pk, "prompt_id": prompt_id, "prompt": text, "prompt_split": split,
                "prompt_language": language, "labeler": self.name_of(labeler_id), **dict(zip(self.FIELDS, values)),
                "time_spent_seconds": spent, "created_at": at.isoformat(),
            }
        self.counts["annotations"] = kept
