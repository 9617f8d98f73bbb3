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
from django.db.models import Avg, Count, IntegerField, Max, Q, Sum
from django.db.models.functions import Cast
from django.utils import timezone
from scipy import sparse

from . import evaluation_stats, quality
from .models import CompletionRating, Evaluation, ModelVersion, Ranking, Task


def evaluation_results(evaluation, *, stale_ok=False, compute=True):
    """The evaluation's numbers, as plain data for the page, the API and the export; cached until a judgment is
    added, a task closes or the reward model's scores arrive. With `stale_ok`, numbers computed before the newest
    of these are returned as they are ("stale": true) while a worker computes them again; without `compute`,
    None when none are cached yet (a worker computes them)."""
    stamp = _results_stamp(evaluation)
    cached = cache.get(_results_key(evaluation))
    if cached and cached["stamp"] == stamp:
        return cached["results"]
    if stale_ok and (cached or not compute):
        if cache.add(_results_key(evaluation) + ":refreshing", True, timeout=600):
            from .tasks import refresh_evaluation

            refresh_evaluation.delay(evaluation.pk)
        return {**cached["results"], "stale": True} if cached else None
    return evaluation_results_compute(evaluation, stamp=stamp)


def evaluation_results_compute(evaluation, *, stamp=None):
    """Compute the evaluation's numbers and cache them."""
    stamp = stamp or _results_stamp(evaluation)
    results = {**_results(evaluation), "tasks": stamp[3], "tasks_open": stamp[4], "stale": False}
    cache.set(_results_key(evaluation), {"stamp": stamp, "results": results}, timeout=None)
    cache.delete(_results_key(evaluation) + ":refreshing")
    return results


def evaluation_progress(evaluation):
    """Its judgments, tasks and tasks still open, read without computing any number."""
    judgments, _, _, tasks, tasks_open, *_ = _results_stamp(evaluation)
    return {"judgments": judgments, "tasks": tasks, "tasks_open": tasks_open}


def _results_key(evaluation):
    """The cache key of its numbers: named by its creation too, so that nothing cached about another database's
    evaluation of the same id is ever shown for it."""
    return f"evaluation-results:{evaluation.pk}:{evaluation.created_at.timestamp()}"


def _results_stamp(evaluation):
    """What the numbers depend on: the judgments (their number, the newest), the tasks open, the reward scores."""
    tasks = evaluation.tasks.aggregate(tasks=Count("id"), open=Count("id", filter=Q(state=Task.State.OPEN)))
    return (*_stamp(Ranking.objects.filter(task__evaluation=evaluation)), tasks["tasks"], tasks["open"],
            evaluation.reward_model_id)


def _stamp(rankings):
    found = rankings.aggregate(count=Count("id"), last=Max("id"), at=Max("created_at"))
    return found["count"], found["last"], found["at"].isoformat() if found["at"] else None


def _results(evaluation):
    candidate = evaluation.candidate
    baselines = list(evaluation.baselines.order_by("id"))
    versions = [candidate, *baselines]
    judgments = _judgments(Ranking.objects.filter(task__evaluation=evaluation), task__evaluation=evaluation)
    ratings = CompletionRating.objects.filter(ranking__task__evaluation=evaluation)
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
    for version, prompt, total, count in ratings.values_list("completion__model_version_id",
                                                            "ranking__task__prompt_id").annotate(
            total=Sum("rating"), count=Count("id")).order_by():
        means.add(("rating", version), prompt, total, count)
    shares = {flag: Avg(Cast(flag, IntegerField())) for flag in CompletionRating.FLAGS}
    flags = {row.pop("completion__model_version_id"): row for row in ratings.values(
        "completion__model_version_id").annotate(ratings=Count("id"), **shares).order_by()}
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
                    "rating": estimate("rating", version.pk), **_flag_rates(flags.get(version.pk))}
                   for version in versions],
        "agreement": _agreement(judgments),
    }


def leaderboard(*, stale_ok=False):
    """Every version judged in any evaluation, strongest first: Bradley-Terry strength with its 95% interval from
    every pairwise outcome of every judgment so far, and its number of comparisons.

    {"versions": [...], "judgments": N, "computed_at": ..., "stale": bool}. With `stale_ok`, a board computed
    before the newest judgments is returned as it is (stale) while a worker computes the next one."""
    stamp, key = _stamp(Ranking.objects.filter(task__evaluation__isnull=False)), _leaderboard_key()
    cached = cache.get(key)
    if cached and cached["stamp"] == stamp:
        return {**cached["board"], "stale": False}
    if cached and stale_ok:
        if cache.add(key + ":refreshing", True, timeout=600):
            from .tasks import refresh_leaderboard

            refresh_leaderboard.delay()
        return {**cached["board"], "stale": True}
    return leaderboard_compute(stamp=stamp)


def leaderboard_compute(*, stamp=None):
    """Fit the leaderboard on every judgment and cache it."""
    stamp = stamp or _stamp(Ranking.objects.filter(task__evaluation__isnull=False))
    board = {"versions": _board(), "judgments": stamp[0], "computed_at": timezone.now().isoformat()}
    key = _leaderboard_key()
    cache.set(key, {"stamp": stamp, "board": board}, timeout=None)
    cache.delete(key + ":refreshing")
    return {**board, "stale": False}


def _leaderboard_key():
    """Named by the first evaluation, so that a board of another database is never shown for this one."""
    first = Evaluation.objects.order_by("pk").values_list("pk", "created_at").first()
    return f"evaluation-leaderboard:{first[0]}:{first[1].timestamp()}" if first else "evaluation-leaderboard"


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


def _flag_rates(row):
    """The number of ratings of a version's outputs, and the share of them with each flag set."""
    return {"ratings": row["ratings"] if row else 0,
            "flag_rates": {flag: float(row[flag]) if row else None for flag in CompletionRating.FLAGS}}


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
