"""Reads of human evaluations: each evaluation's results, and the leaderboard of every version judged.

The numbers come from the judgments (rankings of evaluation tasks) through evaluation_stats: win
rates against each baseline and mean 1-7 ratings with 95% bootstrap intervals over prompts, the
share of outputs with each InstructGPT flag, win rates by use case, and agreement between the
labelers who judged the same outputs.

Judgments are only ever added, so both reads are cached under a stamp of the judgments behind them
(their number and the newest) and computed again only when it changes. The leaderboard's bootstrap
refits Bradley-Terry a thousand times; a page that finds it out of date shows the last board and a
worker computes the next one.
"""

from collections import defaultdict

from django.core.cache import cache
from django.db.models import Count, Max, Q
from django.utils import timezone
from scipy import sparse

from . import evaluation_stats, quality
from .models import CompletionRating, ModelVersion, Ranking, Task

LEADERBOARD = "evaluation-leaderboard"
LEADERBOARD_REFRESHING = "evaluation-leaderboard-refreshing"


def evaluation_results(evaluation):
    """The evaluation's numbers, as plain data for the page, the API and the export; cached until a judgment is
    added, a task closes or the reward model's scores arrive."""
    tasks = evaluation.tasks.aggregate(tasks=Count("id"), open=Count("id", filter=Q(state=Task.State.OPEN)))
    stamp = (*_stamp(Ranking.objects.filter(task__evaluation=evaluation)), tasks["tasks"], tasks["open"],
             evaluation.created_at.isoformat(), evaluation.reward_model_id)
    key = f"evaluation-results:{evaluation.pk}"
    cached = cache.get(key)
    if cached and cached["stamp"] == stamp:
        return cached["results"]
    results = {**_results(evaluation), "tasks": tasks["tasks"], "tasks_open": tasks["open"]}
    cache.set(key, {"stamp": stamp, "results": results}, timeout=None)
    return results


def _stamp(rankings):
    found = rankings.aggregate(count=Count("id"), last=Max("id"), at=Max("created_at"))
    return found["count"], found["last"], found["at"].isoformat() if found["at"] else None


def _results(evaluation):
    candidate = evaluation.candidate
    baselines = list(evaluation.baselines.order_by("id"))
    versions = [candidate, *baselines]
    judgments = _judgments(Ranking.objects.filter(task__evaluation=evaluation), task__evaluation=evaluation)
    ratings = _ratings(CompletionRating.objects.filter(ranking__task__evaluation=evaluation))
    # Every number with an interval, resampled together: the same draws of prompts for all of them.
    means, scored, agreed = evaluation_stats.ClusteredMeans(), set(), defaultdict(list)
    scores = evaluation.reward_scores
    for judgment in judgments:
        prompt, outputs = judgment["prompt"], judgment["outputs"]
        for baseline in baselines:
            human = evaluation_stats.outcome(judgment["groups"], candidate.pk, baseline.pk)
            if human is None:
                continue
            means.add(("win", baseline.pk), prompt, human)
            means.add(("use_case", judgment["use_case"], baseline.pk), prompt, human)
            ours, theirs = scores.get(str(outputs[candidate.pk])), scores.get(str(outputs[baseline.pk]))
            if ours is not None and theirs is not None:
                machine = 0.5 if ours == theirs else float(ours > theirs)
                if (baseline.pk, prompt) not in scored:  # the same two outputs: one outcome per prompt
                    scored.add((baseline.pk, prompt))
                    means.add(("rm", baseline.pk), prompt, machine)
                if human != 0.5:
                    agreed[baseline.pk].append(human == machine)
    for version, rows in ratings.items():
        for prompt, rating, _ in rows:
            means.add(("rating", version), prompt, rating)
    found = means.estimates()

    def estimate(*measure):
        return _as_dict(found.get(measure))

    def reward_model(baseline):
        votes = agreed.get(baseline.pk, [])
        return {**estimate("rm", baseline.pk), "agreement": sum(votes) / len(votes) if votes else None,
                "pairs": len(votes)}

    return {
        "judgments": len(judgments),
        "prompts_judged": len({j["prompt"] for j in judgments}),
        "win_rates": [{"baseline": baseline.name, "baseline_kind": baseline.kind, **estimate("win", baseline.pk),
                       "reward_model": reward_model(baseline)} for baseline in baselines],
        "reward_model": evaluation.reward_model.name if evaluation.reward_model else None,
        "by_use_case": [
            {"use_case": use_case or "unspecified", "baseline": baseline.name,
             **estimate("use_case", use_case, baseline.pk)}
            for use_case in sorted({j["use_case"] for j in judgments}) for baseline in baselines
        ],
        "models": [{"version": version.name, "kind": version.kind, "candidate": version == candidate,
                    "rating": estimate("rating", version.pk), **_rating_counts(ratings.get(version.pk, []))}
                   for version in versions],
        "agreement": _agreement(judgments),
    }


def leaderboard(*, stale_ok=False):
    """Every version judged in any evaluation, strongest first: Bradley-Terry strength with its 95% interval from
    every pairwise outcome of every judgment so far, and its number of comparisons.

    {"versions": [...], "judgments": N, "computed_at": ..., "stale": bool}. With `stale_ok`, a board computed
    before the newest judgments is returned as it is (stale) while a worker computes the next one."""
    stamp = _stamp(Ranking.objects.filter(task__evaluation__isnull=False))
    cached = cache.get(LEADERBOARD)
    if cached and cached["stamp"] == stamp:
        return {**cached["board"], "stale": False}
    if cached and stale_ok:
        if cache.add(LEADERBOARD_REFRESHING, True, timeout=600):
            from .tasks import refresh_leaderboard

            refresh_leaderboard.delay()
        return {**cached["board"], "stale": True}
    return leaderboard_compute(stamp=stamp)


def leaderboard_compute(*, stamp=None):
    """Fit the leaderboard on every judgment and cache it."""
    stamp = stamp or _stamp(Ranking.objects.filter(task__evaluation__isnull=False))
    board = {"versions": _board(), "judgments": stamp[0], "computed_at": timezone.now().isoformat()}
    cache.set(LEADERBOARD, {"stamp": stamp, "board": board}, timeout=None)
    cache.delete(LEADERBOARD_REFRESHING)
    return {**board, "stale": False}


def _board():
    judgments = _judgments(Ranking.objects.filter(task__evaluation__isnull=False), task__evaluation__isnull=False)
    ids = sorted({version for j in judgments for version in j["order"]})
    if len(ids) < 2:
        return []
    index = {pk: n for n, pk in enumerate(ids)}
    row = {prompt: n for n, prompt in enumerate(sorted({j["prompt"] for j in judgments}))}
    versions = len(ids)
    rows, columns, outcomes = [], [], []  # the sparse (prompts, versions × versions) matrix of wins
    comparisons = defaultdict(int)
    for judgment in judgments:
        place = {index[version]: rank for rank, group in enumerate(judgment["groups"]) for version in group}
        for a, rank_a in place.items():
            comparisons[a] += len(place) - 1
            for b, rank_b in place.items():
                if a != b and rank_a <= rank_b:
                    rows.append(row[judgment["prompt"]])
                    columns.append(a * versions + b)
                    outcomes.append(0.5 if rank_a == rank_b else 1.0)
    wins = sparse.csr_matrix((outcomes, (rows, columns)), shape=(len(row), versions * versions))
    strengths, lows, highs = evaluation_stats.bradley_terry_intervals(wins, versions=versions)
    names = dict(ModelVersion.objects.filter(pk__in=ids).values_list("pk", "name"))
    board = [{"version": names[pk], "version_id": pk, "strength": float(strengths[n]), "low": float(lows[n]),
              "high": float(highs[n]), "comparisons": comparisons[n]} for pk, n in index.items()]
    return sorted(board, key=lambda entry: -entry["strength"])


def _judgments(rankings, **tasks):
    """Each judgment as its prompt, use case and ranking of model versions (ties kept); `tasks` filters the tasks
    the rankings are of."""
    rows = list(rankings.values_list("task_id", "task__prompt_id", "task__prompt__use_case", "groups"))
    makers = dict(Task.completions.through.objects.filter(**tasks).values_list(
        "completion_id", "completion__model_version_id"))
    judgments = []
    for task_id, prompt_id, use_case, groups in rows:
        by_version = [[makers[cid] for cid in group if cid in makers] for group in groups]
        outputs = {makers[cid]: cid for group in groups for cid in group if cid in makers}
        judgments.append({"task": task_id, "prompt": prompt_id, "use_case": use_case, "groups": by_version,
                          "completion_groups": groups, "order": set(outputs), "outputs": outputs})
    return judgments


def _ratings(queryset):
    """{version id: [(prompt id, rating, {flag: bool})]}."""
    found = defaultdict(list)
    for version, prompt, rating, *flags in queryset.values_list(
        "completion__model_version_id", "ranking__task__prompt_id", "rating", *CompletionRating.FLAGS
    ):
        found[version].append((prompt, rating, dict(zip(CompletionRating.FLAGS, flags, strict=True))))
    return found


def _rating_counts(rows):
    flags = {name: sum(flagged[name] for _, _, flagged in rows) / len(rows) if rows else None
             for name in CompletionRating.FLAGS}
    return {"ratings": len(rows), "flag_rates": flags}


def _agreement(judgments):
    """Mean pairwise agreement of the labelers who judged the same outputs, over the tasks several judged."""
    by_task = defaultdict(list)
    for judgment in judgments:
        by_task[judgment["task"]].append(judgment["completion_groups"])
    scores = [score for orders in by_task.values() if len(orders) > 1
              if (score := quality.mean_agreement(orders)) is not None]
    return {"value": sum(scores) / len(scores) if scores else None, "tasks": len(scores)}


def _as_dict(estimate):
    return estimate.as_dict() if estimate else {"value": None, "low": None, "high": None, "n": 0, "prompts": 0}
