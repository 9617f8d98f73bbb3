"""Reads of human evaluations: each evaluation's results, and the leaderboard of every version judged.

The numbers come from the judgments (rankings of evaluation tasks) through evaluation_stats: win
rates against each baseline and mean 1-7 ratings with 95% bootstrap intervals over prompts, the
share of outputs with each InstructGPT flag, win rates by use case, and agreement between the
labelers who judged the same outputs.
"""

from collections import defaultdict

import numpy as np

from . import evaluation_stats, quality
from .models import CompletionRating, ModelVersion, Ranking, Task


def evaluation_results(evaluation):
    """The evaluation's numbers, as plain data for the page, the API and the export."""
    candidate = evaluation.candidate
    baselines = list(evaluation.baselines.order_by("id"))
    judgments = _judgments(Ranking.objects.filter(task__evaluation=evaluation))
    ratings = _ratings(CompletionRating.objects.filter(ranking__task__evaluation=evaluation))
    versions = [candidate, *baselines]
    return {
        "judgments": len(judgments),
        "prompts_judged": len({j["prompt"] for j in judgments}),
        "tasks": evaluation.tasks.count(),
        "tasks_open": evaluation.tasks.filter(state=Task.State.OPEN).count(),
        "win_rates": [
            {"baseline": baseline.name, "baseline_kind": baseline.kind,
             **_as_dict(_win_rate(judgments, candidate.pk, baseline.pk))}
            for baseline in baselines
        ],
        "by_use_case": [
            {"use_case": use_case or "unspecified", "baseline": baseline.name,
             **_as_dict(_win_rate([j for j in judgments if j["use_case"] == use_case], candidate.pk, baseline.pk))}
            for use_case in sorted({j["use_case"] for j in judgments}) for baseline in baselines
        ],
        "models": [{"version": version.name, "kind": version.kind, "candidate": version == candidate,
                    **_rating_numbers(ratings.get(version.pk, []))} for version in versions],
        "agreement": _agreement(judgments),
    }


def leaderboard():
    """Every version judged in any evaluation, strongest first: Bradley-Terry strength with its 95% interval
    from every pairwise outcome of every judgment so far, and its number of comparisons."""
    judgments = _judgments(Ranking.objects.filter(task__evaluation__isnull=False))
    ids = sorted({version for j in judgments for version in j["order"]})
    if len(ids) < 2:
        return []
    index = {pk: n for n, pk in enumerate(ids)}
    prompts = sorted({j["prompt"] for j in judgments})
    row = {prompt: n for n, prompt in enumerate(prompts)}
    wins = np.zeros((len(prompts), len(ids), len(ids)))
    comparisons = defaultdict(int)
    for judgment in judgments:
        versions = list(judgment["order"])
        for a in versions:
            for b in versions:
                if a != b:
                    wins[row[judgment["prompt"]], index[a], index[b]] += evaluation_stats.outcome(
                        judgment["groups"], a, b)
                    comparisons[a] += 1
    strengths, lows, highs = evaluation_stats.bradley_terry_intervals(wins)
    names = dict(ModelVersion.objects.filter(pk__in=ids).values_list("pk", "name"))
    board = [{"version": names[pk], "version_id": pk, "strength": float(strengths[n]), "low": float(lows[n]),
              "high": float(highs[n]), "comparisons": comparisons[pk]} for pk, n in index.items()]
    return sorted(board, key=lambda entry: -entry["strength"])


def _judgments(rankings):
    """Each judgment as its prompt, use case and ranking of model versions (ties kept)."""
    rows = list(rankings.values_list("task_id", "task__prompt_id", "task__prompt__use_case", "groups"))
    makers = dict(Task.completions.through.objects.filter(task_id__in={row[0] for row in rows}).values_list(
        "completion_id", "completion__model_version_id"))
    judgments = []
    for task_id, prompt_id, use_case, groups in rows:
        by_version = [[makers[cid] for cid in group if cid in makers] for group in groups]
        order = {version for group in by_version for version in group}
        judgments.append({"task": task_id, "prompt": prompt_id, "use_case": use_case, "groups": by_version,
                          "completion_groups": groups, "order": order})
    return judgments


def _win_rate(judgments, candidate, baseline):
    by_prompt = defaultdict(list)
    for judgment in judgments:
        result = evaluation_stats.outcome(judgment["groups"], candidate, baseline)
        if result is not None:
            by_prompt[judgment["prompt"]].append(result)
    return evaluation_stats.clustered_mean(list(by_prompt.values()))


def _ratings(queryset):
    """{version id: [(prompt id, rating, {flag: bool})]}."""
    found = defaultdict(list)
    for version, prompt, rating, *flags in queryset.values_list(
        "completion__model_version_id", "ranking__task__prompt_id", "rating", *CompletionRating.FLAGS
    ):
        found[version].append((prompt, rating, dict(zip(CompletionRating.FLAGS, flags, strict=True))))
    return found


def _rating_numbers(rows):
    by_prompt = defaultdict(list)
    for prompt, rating, _ in rows:
        by_prompt[prompt].append(rating)
    flags = {name: sum(flagged[name] for _, _, flagged in rows) / len(rows) if rows else None
             for name in CompletionRating.FLAGS}
    return {"rating": _as_dict(evaluation_stats.clustered_mean(list(by_prompt.values()))), "ratings": len(rows),
            "flag_rates": flags}


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
