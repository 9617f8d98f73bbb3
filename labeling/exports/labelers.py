"""Per-labeler statistics: output, pace, skips, gold accuracy and agreement with peers, under pseudonyms."""

import statistics
from collections import defaultdict
from itertools import groupby

import pyarrow as pa
from django.contrib.auth import get_user_model
from django.db.models import Avg, Count, Q

from .. import quality
from ..models import Assignment, LabelerProfile, Ranking, Role, Task
from .sources import BATCH, Source, dated

KINDS = Task.Kind.values


class LabelerStats(Source):
    def __init__(self, filters, name_of, **context):
        super().__init__(filters, name_of, **context)
        identity = [("email", pa.string())] if self.with_identities else []
        self.schema = pa.schema([
            ("labeler", pa.string()), *identity, ("status", pa.string()),
            *[(f"{kind}_submitted", pa.int64()) for kind in KINDS],
            ("submitted", pa.int64()), ("skipped", pa.int64()), ("expired", pa.int64()), ("skip_rate", pa.float64()),
            ("median_seconds_per_task", pa.float64()), ("overlap_rankings", pa.int64()),
            ("agreement_with_peers", pa.float64()), ("gold_tasks", pa.int64()), ("gold_accuracy", pa.float64()),
            ("first_submission", pa.string()), ("last_submission", pa.string()),
        ])

    def queryset(self):
        users = get_user_model().objects.filter(Q(groups__name=Role.LABELER) | Q(assignments__isnull=False))
        if "labeler_status" in self.filters:
            users = users.filter(labeler_profile__status__in=self.filters["labeler_status"])
        return users.distinct()

    def assignments(self):
        return Assignment.objects.filter(dated(self.filters, "leased_at"), labeler__in=self.queryset())

    def rows(self):
        agreement = self.agreement()
        times = self.times()
        counts = defaultdict(dict)
        for labeler_id, state, kind, n in self.assignments().order_by().values_list(
            "labeler_id", "state", "task__kind"
        ).annotate(n=Count("id")):
            key = f"{kind}_submitted" if state == Assignment.State.SUBMITTED else state
            counts[labeler_id][key] = counts[labeler_id].get(key, 0) + n
        statuses = dict(LabelerProfile.objects.values_list("user_id", "status"))
        gold = {labeler_id: (n, mean) for labeler_id, n, mean in self.assignments().filter(
            state=Assignment.State.SUBMITTED, task__is_gold=True, task__is_practice=False, gold_score__isnull=False,
        ).order_by().values("labeler_id").annotate(n=Count("id"), mean=Avg("gold_score")).values_list(
            "labeler_id", "n", "mean")}
        for pk, email in self.queryset().order_by("id").values_list("id", "email").iterator(chunk_size=BATCH):
            self.done += 1
            mine = counts[pk]
            submitted = sum(mine.get(f"{kind}_submitted", 0) for kind in KINDS)
            skipped = mine.get(Assignment.State.SKIPPED, 0)
            spent, first, last = times.get(pk, ([], None, None))
            scores = agreement.get(pk, [])
            row = {"labeler": self.name_of(pk)}
            if self.with_identities:
                row["email"] = email
            yield {
                **row, "status": statuses.get(pk),
                **{f"{kind}_submitted": mine.get(f"{kind}_submitted", 0) for kind in KINDS},
                "submitted": submitted, "skipped": skipped, "expired": mine.get(Assignment.State.EXPIRED, 0),
                "skip_rate": skipped / (submitted + skipped) if submitted + skipped else None,
                "median_seconds_per_task": statistics.median(spent) if spent else None,
                "overlap_rankings": len(scores),
                "agreement_with_peers": sum(scores) / len(scores) if scores else None,
                "gold_tasks": gold.get(pk, (0, None))[0], "gold_accuracy": gold.get(pk, (0, None))[1],
                "first_submission": first and first.isoformat(), "last_submission": last and last.isoformat(),
            }
        self.counts["labelers"] = self.done

    def times(self):
        """{labeler id: (seconds per submitted task, first, last submission)}, one labeler in memory at a time."""
        found = self.assignments().filter(state=Assignment.State.SUBMITTED).order_by("labeler_id").values_list(
            "labeler_id", "time_spent_seconds", "submitted_at"
        )
        times = {}
        for labeler_id, rows in groupby(found.iterator(chunk_size=BATCH), key=lambda row: row[0]):
            spent, moments = [], []
            for _, seconds, at in rows:
                spent.append(seconds)
                moments.append(at)
            moments = [m for m in moments if m]
            times[labeler_id] = (spent, min(moments, default=None), max(moments, default=None))
        return times

    def agreement(self):
        """{labeler id: [their agreement with each peer on each overlap task]}."""
        overlap = Ranking.objects.filter(dated(self.filters)).values("task_id").annotate(n=Count("id")).filter(n__gt=1)
        found = Ranking.objects.filter(task_id__in=overlap.values("task_id")).order_by("task_id").values_list(
            "task_id", "labeler_id", "groups"
        )
        scores = defaultdict(list)
        for _, rows in groupby(found.iterator(chunk_size=BATCH), key=lambda row: row[0]):
            rows = list(rows)
            for _, labeler_id, groups in rows:
                peers = [quality.pairwise_agreement(groups, other) for _, peer, other in rows if peer != labeler_id]
                peers = [s for s in peers if s is not None]
                if peers:
                    scores[labeler_id].append(sum(peers) / len(peers))
        return scores
