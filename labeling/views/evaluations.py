"""Researchers' pages of human evaluations: start one, read its results, the leaderboard, a version's results."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .. import charts, evaluations, services
from ..forms import EvaluationStartForm, ExternalModelForm
from ..models import CompletionRating, Evaluation, ModelVersion, Role
from ..permissions import role_required

CHARTED_FLAGS = CompletionRating.FLAGS[:4]  # the four of InstructGPT's metadata figure
percent = "{:.0%}".format


def _evaluations():
    return Evaluation.objects.select_related("candidate").prefetch_related("baselines")


@role_required(Role.RESEARCHER)
def evaluation_list(request):
    start_form = EvaluationStartForm(request.POST if "start" in request.POST else None)
    endpoint_form = ExternalModelForm(request.POST if "register" in request.POST else None)
    if request.method == "POST" and "start" in request.POST and start_form.is_valid():
        data = start_form.cleaned_data
        try:
            evaluation = services.evaluation_start(
                candidate=data["candidate"], baselines=list(data["baselines"]), prompt_count=data["prompts"],
                held_out_labelers=data["held_out_labelers"], created_by=request.user,
                trigger=f"{request.user.username}, on the site")
        except ValidationError as exc:
            start_form.add_error(None, exc)
        else:
            messages.info(request, f"Evaluation #{evaluation.pk} started: a GPU worker samples its outputs, then its "
                                   f"tasks open to labelers.")
            return redirect("evaluation", pk=evaluation.pk)
    if request.method == "POST" and "register" in request.POST and endpoint_form.is_valid():
        try:
            version = services.external_model_register(**endpoint_form.cleaned_data, created_by=request.user)
        except ValidationError as exc:
            endpoint_form.add_error(None, exc)
        else:
            messages.info(request, f"{version.name} is registered: choose it as a baseline below.")
            return redirect("evaluations")
    rows = [(evaluation, evaluations.evaluation_progress(evaluation),
             evaluations.evaluation_results(evaluation, stale_ok=True, compute=False))
            for evaluation in _evaluations()[:50]]
    context = {"rows": rows, "start_form": start_form, "endpoint_form": endpoint_form,
               "endpoints": ModelVersion.objects.filter(kind=ModelVersion.Kind.EXTERNAL).order_by("name")}
    failed = request.method == "POST" and (start_form.errors or endpoint_form.errors)
    return render(request, "labeling/evaluations.html", context, status=400 if failed else 200)


@role_required(Role.RESEARCHER)
def evaluation(request, pk):
    found = get_object_or_404(_evaluations(), pk=pk)
    results = evaluations.evaluation_results(found, stale_ok=True)
    context = {"evaluation": found, "results": results, "charts": result_charts(results),
               "flags": [(_flag_label(flag), flag) for flag in CompletionRating.FLAGS],
               "percent_done": _percent_done(results)}
    return render(request, "labeling/evaluation.html", context)


def result_charts(results):
    """The evaluation's figures: win rate against each baseline, mean rating of each model, the flags."""
    models = results["models"]
    return {
        "win_rates": charts.intervals(
            "Win rate of the candidate against each baseline, with 95% intervals",
            [(f"vs {w['baseline']}", w["value"], w["low"], w["high"]) for w in results["win_rates"]],
            domain=(0, 1), x_format=percent, reference=0.5),
        "reward_model": charts.intervals(
            "The reward model's win rate on the same outputs",
            [(f"vs {w['baseline']}", w["reward_model"]["value"], w["reward_model"]["low"], w["reward_model"]["high"])
             for w in results["win_rates"]], domain=(0, 1), x_format=percent, reference=0.5)
        if results["reward_model"] else None,
        "ratings": charts.intervals(
            "Mean rating of each model (1-7), with 95% intervals",
            [(m["version"], m["rating"]["value"], m["rating"]["low"], m["rating"]["high"]) for m in models],
            domain=(1, 7), x_format="{:.0f}".format),
        "flags": charts.grouped_bars(
            "Share of outputs with each flag", [_flag_label(flag) for flag in CHARTED_FLAGS],
            {m["version"]: [m["flag_rates"][flag] for flag in CHARTED_FLAGS] for m in models}),
        "by_use_case": charts.intervals(
            "Win rate by use case", [(f"{row['use_case']} vs {row['baseline']}", row["value"], row["low"], row["high"])
                                     for row in results["by_use_case"]], domain=(0, 1), x_format=percent,
            reference=0.5),
    }


def _flag_label(flag):
    return CompletionRating._meta.get_field(flag).verbose_name.capitalize()


@role_required(Role.RESEARCHER)
def evaluation_progress(request, pk):
    found = get_object_or_404(Evaluation, pk=pk)
    results = evaluations.evaluation_progress(found)
    done = results["tasks"] - results["tasks_open"]
    running = found.state in (Evaluation.State.SAMPLING, Evaluation.State.OPEN)
    text = ("sampling the outputs" if found.state == Evaluation.State.SAMPLING
            else f"{done:,} of {results['tasks']:,} tasks judged, {results['judgments']:,} judgments")
    # `finished` reloads the page: when the evaluation ends, and when it moves on from the state the page shows.
    moved_on = request.GET.get("shown", found.state) != found.state
    return JsonResponse({"state": "running" if running else found.state, "finished": moved_on or not running,
                         "percent": _percent_done(results), "text": text})


def _percent_done(results):
    return round(100 * (results["tasks"] - results["tasks_open"]) / results["tasks"]) if results["tasks"] else 0


@require_POST
@role_required(Role.RESEARCHER)
def evaluation_cancel(request, pk):
    found = get_object_or_404(Evaluation, pk=pk)
    try:
        services.evaluation_cancel(evaluation=found)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.info(request, f"Evaluation #{found.pk} is cancelled; its judgments so far are kept.")
    return redirect("evaluation", pk=found.pk)


@role_required(Role.RESEARCHER)
def leaderboard(request):
    board = evaluations.leaderboard(stale_ok=True)
    chart = charts.intervals("Bradley-Terry strength of each version, with 95% intervals",
                             [(row["version"], row["strength"], row["low"], row["high"]) for row in board["versions"]],
                             x_format="{:+.1f}".format, reference=0)
    rows = [{**row, "value": row["strength"]} for row in board["versions"]]
    return render(request, "labeling/leaderboard.html", {"board": board, "rows": rows, "chart": chart})


@role_required(Role.RESEARCHER)
def model_version(request, pk):
    version = get_object_or_404(ModelVersion.objects.select_related("parent", "training_run"), pk=pk)
    # Its own evaluations are counted here if they must be; those it was a baseline in (the base model's may be
    # many) show what is cached, and a worker counts the rest.
    judged = [(found, evaluations.evaluation_results(found, stale_ok=True, compute=found.candidate_id == version.pk))
              for found in (_evaluations().filter(candidate=version) | _evaluations().filter(baselines=version))
              .distinct().order_by("-created_at")[:50]]
    results = [(found, numbers, numbers and charts.intervals(
        f"Win rate of {found.candidate.name} against each baseline",
        [(f"vs {w['baseline']}", w["value"], w["low"], w["high"]) for w in numbers["win_rates"]],
        domain=(0, 1), x_format=percent, reference=0.5)) for found, numbers in judged]
    board = evaluations.leaderboard(stale_ok=True)
    place = next(((n, row) for n, row in enumerate(board["versions"], start=1) if row["version_id"] == version.pk),
                 None)
    return render(request, "labeling/model_version.html",
                  {"version": version, "results": results, "place": place, "board": board})
