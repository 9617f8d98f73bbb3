import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from . import charts, selectors, services
from .forms import (
    AccountForm,
    AnnotationForm,
    DecisionForm,
    DemonstrationForm,
    ExportForm,
    ImportForm,
    RankingForm,
    ScreeningForm,
    SkipForm,
    StatusForm,
    TrainingStartForm,
    WritePromptForm,
)
from .models import Assignment, Export, LabelerProfile, Role, ScreeningAttempt, Task
from .permissions import has_role, role_required, roles_of


@login_required
def start(request):
    return redirect(selectors.start_url_for(request.user))


def join(request, token):
    """An invitation link: make an account with the role it grants."""
    try:
        invitation = services.invitation_check(token)
    except ValidationError as exc:
        return render(request, "labeling/join.html", {"refused": " ".join(exc.messages)}, status=400)
    return _account_page(request, token=token, role=invitation.get_role_display())


def apply(request):
    if not settings.OPEN_APPLICATIONS:
        raise Http404("Applications are by invitation only.")
    return _account_page(request, token=None, role="Labeler")


def _account_page(request, *, token, role):
    form = AccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.account_create(token=token, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)  # a dict of errors lands on its fields
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("start")
    return render(request, "labeling/join.html", {"form": form, "role": role}, status=400 if form.errors else 200)


@role_required(Role.LABELER)
def screening(request):
    profile = LabelerProfile.objects.get(user=request.user)
    if profile.status != LabelerProfile.Status.SCREENING:
        return redirect("labeler-home")
    form = ScreeningForm(services.screening_items(), request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.screening_submit(user=request.user, answers=form.answers())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Thank you: your test is in. An admin reviews it, usually within a few days.")
            return redirect("labeler-home")
    return render(request, "labeling/screening.html", {"form": form, "parts": form.parts()},
                  status=400 if form.errors else 200)


@require_POST
@role_required(Role.LABELER)
def guidelines_acknowledge(request):
    try:
        services.guidelines_acknowledge(user=request.user, version=int(request.POST.get("version", 0)))
    except (ValidationError, ValueError) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    return redirect("labeler-home")


@role_required(Role.ADMIN)
def review_queue(request):
    rows = [(attempt, services.cutoffs(attempt)) for attempt in selectors.review_queue()]
    return render(request, "labeling/review_queue.html", {"rows": rows})


@role_required(Role.ADMIN)
def review(request, pk):
    """One applicant, by number only: scores against the cutoffs, every answer beside the researchers', grading
    of the written replies, and the decision."""
    attempt = get_object_or_404(ScreeningAttempt.objects.select_related("decided_by"), pk=pk)
    decision_form = DecisionForm(request.POST if request.POST.get("action") == "decide" else None)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "grade":
                grades = {key.removeprefix("grade_"): value for key, value in request.POST.items()
                          if key.startswith("grade_")}
                services.screening_grade(attempt=attempt, grades=grades, graded_by=request.user)
                messages.success(request, "Grades saved.")
                return redirect("review", pk=attempt.pk)
            if decision_form.is_valid():
                services.screening_decide(attempt=attempt, approve=decision_form.cleaned_data["decision"] == "approve",
                                          reason=decision_form.cleaned_data["reason"], decided_by=request.user)
                messages.success(request, f"Applicant #{attempt.pk}: {attempt.decision}.")
                return redirect("review-queue")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    items = services.screening_items()
    answers = attempt.answers
    context = {
        "attempt": attempt, "cutoffs": services.cutoffs(attempt), "decision_form": decision_form,
        "flags": [(item, answers.get("flags", {}).get(str(item.pk), [])) for item in items["sensitive_flags"]],
        "rankings": [(item, _letters(answers.get("rankings", {}).get(str(item.pk), [])),
                      _letters(item.gold.get("groups", []))) for item in items["ranking"]],
        "demonstrations": [(item, answers.get("demonstrations", {}).get(str(item.pk), ""),
                            answers.get("grades", {}).get(str(item.pk))) for item in items["demonstration"]],
        "self_assessment": answers.get("self_assessment", {}),
    }
    return render(request, "labeling/review.html", context, status=400 if decision_form.errors else 200)


def _letters(groups):
    """[[0], [1, 2]] -> "A > B = C": a screening ranking as the applicant saw it."""
    return " > ".join(" = ".join(chr(ord("A") + i) for i in group) for group in groups) or "—"


@login_required
def api_token(request):
    """The user's API token: shown here, replaced on request. It reaches only the endpoints of the user's role."""
    if not roles_of(request.user):
        raise PermissionDenied("API tokens are for labelers, researchers and admins.")
    if request.method == "POST":
        services.token_rotate(user=request.user)
        messages.success(request, "Here is your new token; the old one no longer works.")
        return redirect("api-token")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "labeling/api_token.html", {"token": token})


@login_required
def no_role(request):
    return render(request, "labeling/no_role.html", status=403)


@role_required(Role.LABELER)
def labeler_home(request):
    return render(request, "labeling/labeler_home.html", selectors.labeler_overview(request.user))


@require_POST
@role_required(Role.LABELER)
def work_next(request):
    return _to_next_task(request)


def _to_next_task(request):
    try:
        assignment = services.task_lease_next(labeler=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("labeler-home")
    if assignment is None:
        messages.info(request, "Nothing is waiting for you right now. Check back soon.")
        return redirect("labeler-home")
    return redirect("assignment", pk=assignment.pk)


# The form class, the service that saves it and the arguments it takes, per task kind.
TASK_PAGES = {
    Task.Kind.WRITE_PROMPT: (
        WritePromptForm, services.prompt_write,
        lambda form: {key: form.cleaned_data[key] for key in ("style", "text", "use_case", "language")},
    ),
    Task.Kind.WRITE_DEMONSTRATION: (
        DemonstrationForm, services.demonstration_write,
        lambda form: {"turns": form.turns(), "used_model_suggestion": form.cleaned_data["used_suggestion"]},
    ),
    Task.Kind.RANK_COMPLETIONS: (
        RankingForm, services.ranking_submit,
        lambda form: {"groups": form.groups(), "ratings": form.ratings(),
                      "none_acceptable": form.cleaned_data["none_acceptable"]},
    ),
    Task.Kind.ANNOTATE_PROMPT: (
        AnnotationForm, services.annotation_submit,
        lambda form: {"flags": form.flags(), "use_case": form.cleaned_data["use_case"],
                      "language": form.cleaned_data["language"],
                      "contains_personal_data": form.cleaned_data["contains_personal_data"]},
    ),
}


@role_required(Role.LABELER)
def assignment(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    if assignment.state in (Assignment.State.SUBMITTED, Assignment.State.SKIPPED) and request.method == "GET":
        return redirect("my-work-detail", pk=assignment.pk)
    form_class, submit, arguments = TASK_PAGES[assignment.task.kind]
    form = form_class(request.POST or None, **_form_options(assignment))
    if request.method == "POST" and form.is_valid():
        try:
            submit(assignment=assignment, labeler=request.user,
                   time_spent_seconds=form.cleaned_data["time_spent"], **arguments(form))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            if assignment.task.is_practice:  # feedback at once: the researchers' answer and why
                return redirect("my-work-detail", pk=assignment.pk)
            messages.success(request, "Saved. Here is your next task.")
            return _to_next_task(request)
    context = {
        "assignment": assignment,
        "task": assignment.task,
        "form": form,
        "skip_form": SkipForm(),
        **selectors.workspace_panel(request.user),
    }
    if assignment.task.kind == Task.Kind.WRITE_DEMONSTRATION:
        context["suggestion"] = selectors.model_suggestion(assignment.task.prompt)
    status = 400 if form.errors else 200
    return render(request, f"labeling/work/{assignment.task.kind}.html", context, status=status)


def _form_options(assignment):
    task = assignment.task
    if task.kind == Task.Kind.RANK_COMPLETIONS:
        return {"completions": selectors.completions_in_order(assignment)}
    if task.kind == Task.Kind.ANNOTATE_PROMPT:
        return {"initial": {"language": task.prompt.language}}
    return {}


@require_POST
@role_required(Role.LABELER)
def assignment_skip(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    form = SkipForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose why you skip this task.")
        return redirect("assignment", pk=assignment.pk)
    try:
        services.assignment_skip(assignment=assignment, labeler=request.user, reason=form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("my-work-detail", pk=assignment.pk)
    messages.info(request, "Skipped; the task goes back to others.")
    return _to_next_task(request)


@role_required(Role.LABELER)
def my_work(request):
    return render(request, "labeling/work/my_work.html", {"assignments": selectors.work_of(request.user)[:200]})


@role_required(Role.LABELER)
def my_work_detail(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    return render(request, "labeling/work/my_work_detail.html", {
        "assignment": assignment, "task": assignment.task, **selectors.result_of(assignment),
        "feedback": selectors.practice_feedback(assignment),
    })


@role_required(Role.RESEARCHER)
def research_home(request):
    context = selectors.dataset_overview()
    context["recent_imports"] = selectors.import_jobs_visible_to(request.user)[:5]
    context["dashboard"] = dashboard = selectors.dataset_dashboard()
    context["charts"] = _charts(dashboard)
    return render(request, "labeling/research_home.html", context)


def _charts(dashboard):
    weeks = [week.strftime("%d %b") for week, _, _ in dashboard["agreement"]]
    throughput = dashboard["throughput"]
    rewards, policies = dashboard["reward_models"], dashboard["policies"]
    percent = "{:.0%}".format
    return {
        "split_source": charts.stacked_bars("Prompts per split and source", dashboard["splits"],
                                            dict(dashboard["sources"])),
        "agreement": charts.line_chart("Agreement between labelers, by week", weeks,
                                       {"agreement": [a for _, a, _ in dashboard["agreement"]]}, y_max=1,
                                       y_format=percent),
        "throughput": charts.stacked_bars("Results submitted per day",
                                          [d.strftime("%d %b") for d in throughput["dates"]], throughput["series"]),
        "reward_models": charts.line_chart("Reward model accuracy on validation comparisons",
                                           [name for name, *_ in rewards], {"accuracy": [r[2] for r in rewards]},
                                           y_max=1, y_format=percent),
        "policies": charts.line_chart("Policy reward and KL", [name for name, *_ in policies],
                                      {"reward": [p[2] for p in policies], "KL": [p[3] for p in policies]}),
    }


@role_required(Role.RESEARCHER)
def imports(request):
    form = ImportForm(request.POST, request.FILES) if request.method == "POST" else ImportForm()
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                job = services.import_job_create(
                    uploaded_file=form.cleaned_data["file"],
                    created_by=request.user,
                    fmt=form.cleaned_data["format"] or None,
                )
            except ValidationError as exc:
                form.add_error("file", exc)
            else:
                job = services.import_job_start(job=job)
                if not job.is_finished:
                    messages.info(request, f"{job.filename} is large, so a worker imports it; progress shows below.")
                return redirect(job)
        status = 400
    jobs = selectors.import_jobs_visible_to(request.user)[:50]
    context = {"form": form, "jobs": jobs, "cap_per_user": settings.PROMPT_CAP_PER_USER}
    return render(request, "labeling/imports.html", context, status=status)


@role_required(Role.RESEARCHER)
def import_detail(request, pk):
    job = get_object_or_404(selectors.import_jobs_visible_to(request.user), pk=pk)
    return render(request, "labeling/import_detail.html", {"job": job})


@role_required(Role.RESEARCHER)
def import_progress(request, pk):
    job = get_object_or_404(selectors.import_jobs_visible_to(request.user), pk=pk)
    progress = job.progress()
    return JsonResponse(
        {
            "state": job.state,
            "finished": job.is_finished,
            "rows_read": progress["rows_read"],
            "bytes_read": progress["bytes_read"],
            "size_bytes": job.size_bytes,
            "percent": round(100 * progress["bytes_read"] / job.size_bytes) if job.size_bytes else 0,
            "text": f"{progress['rows_read']:,} rows read",
        }
    )


@role_required(Role.RESEARCHER)
def exports(request):
    form = ExportForm(request.POST or None, initial={"format": "jsonl"})
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                export = services.export_create(
                    kind=form.cleaned_data["kind"], fmt=form.cleaned_data["format"], filters=form.filters(),
                    with_identities=form.cleaned_data["with_identities"], created_by=request.user,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                return redirect(export)
        status = 400
    context = {"form": form, "exports": selectors.exports_visible_to(request.user)[:50],
               "can_name_labelers": has_role(request.user, Role.ADMIN)}
    return render(request, "labeling/exports.html", context, status=status)


@role_required(Role.RESEARCHER)
def export_detail(request, pk):
    export = get_object_or_404(selectors.exports_visible_to(request.user), pk=pk)
    manifest_json = json.dumps(export.manifest, indent=2)
    return render(request, "labeling/export_detail.html", {"export": export, "manifest_json": manifest_json})


@role_required(Role.RESEARCHER)
def export_progress(request, pk):
    export = get_object_or_404(selectors.exports_visible_to(request.user), pk=pk)
    return JsonResponse({"state": export.state, "finished": export.is_finished,
                         "percent": round(100 * export.progress), "text": f"{100 * export.progress:.0f}% written"})


@role_required(Role.RESEARCHER)
def export_download(request, pk):
    return export_file_response(get_object_or_404(selectors.exports_visible_to(request.user), pk=pk))


def export_file_response(export):
    if export.state != Export.State.SUCCEEDED:
        raise Http404(f"Export #{export.pk} has no file yet: it is {export.state}.")
    response = FileResponse(export.file.open("rb"), as_attachment=True, filename=export.filename)
    response["X-Checksum-SHA256"] = export.sha256
    return response


# The training loop

CURVES = {"reward": ["loss", "accuracy"], "sft": ["loss"], "ppo": ["reward", "kl"]}


@role_required(Role.RESEARCHER)
def training_runs(request):
    form = TrainingStartForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.training_run_start(kind=form.cleaned_data["kind"], created_by=request.user)
        except ValidationError as exc:
            form.add_error("kind", exc)
        else:
            return redirect(run)
    context = {"form": form, "runs": selectors.training_runs()[:50]}
    return render(request, "labeling/training_runs.html", context, status=400 if form.errors else 200)


@role_required(Role.RESEARCHER)
def training_run(request, pk):
    run = get_object_or_404(selectors.training_runs(), pk=pk)
    train = [point for point in run.history if point.get("split") != "valid"]
    charts_ = [
        (name, charts.line_chart(name.capitalize(), [point["step"] for point in train],
                                 {name: [point.get(name) for point in train]}))
        for name in CURVES[run.kind] if any(name in point for point in train)
    ]
    context = {"run": run, "curves": charts_, "validation": [p for p in run.history if p.get("split") == "valid"],
               "config_json": json.dumps(run.config, indent=2), "version": getattr(run, "model_version", None)}
    return render(request, "labeling/training_run.html", context)


@role_required(Role.RESEARCHER)
def training_run_progress(request, pk):
    run = get_object_or_404(selectors.training_runs(), pk=pk)
    eta = run.eta_seconds()
    text = f"step {run.step:,} of {run.total_steps:,}" if run.total_steps else run.state
    if eta is not None:
        text += f", about {round(eta)} s left"
    return JsonResponse({"state": run.state, "finished": run.is_finished, "percent": round(100 * run.progress),
                         "text": text})


@require_POST
@role_required(Role.RESEARCHER)
def training_run_cancel(request, pk):
    run = get_object_or_404(selectors.training_runs(), pk=pk)
    try:
        services.training_run_cancel(run=run)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.info(request, f"Run #{run.pk} is cancelled; the active model is unchanged.")
    return redirect(run)


@role_required(Role.RESEARCHER)
def model_versions(request):
    return render(request, "labeling/model_versions.html", {"kinds": selectors.model_versions_by_kind()})



# Quality of labelers in production

@role_required(Role.ADMIN)
def team_quality(request):
    report = selectors.quality_report()
    rows = report["labelers"]
    names = [row["user"].username for row in rows]
    percent = "{:.0%}".format
    context = {
        "report": report, "rows": rows,
        "chart_agreement": charts.stacked_bars("Agreement with peers", names,
                                               {"agreement": [row["agreement"] for row in rows]},
                                               y_max=1, y_format=percent),
        "chart_gold": charts.stacked_bars("Gold accuracy", names, {"gold": [row["gold_accuracy"] for row in rows]},
                                          y_max=1, y_format=percent),
        "floors": {"gold": settings.QUALITY_MIN_GOLD_ACCURACY, "agreement": settings.QUALITY_MIN_AGREEMENT},
    }
    return render(request, "labeling/team_quality.html", context)


@role_required(Role.ADMIN)
def labeler_quality(request, pk):
    profile = get_object_or_404(LabelerProfile.objects.select_related("user"), user_id=pk)
    form = StatusForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.labeler_set_status(profile=profile, status=form.cleaned_data["status"],
                                        reason=form.cleaned_data["reason"], changed_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"{profile.user.username} is now {form.cleaned_data['status']}.")
            return redirect("labeler-quality", pk=pk)
    report = selectors.quality_report()
    row = next((r for r in report["labelers"] if r["user"].pk == profile.user_id), None)
    agreement = dict(report["weekly"].get(profile.user_id, []))
    gold = row["gold_weekly"] if row else {}
    weeks = sorted(agreement.keys() | gold.keys())
    weekly = [(week, agreement.get(week), gold.get(week)) for week in weeks]
    throughput = selectors.throughput_by_day(30, labeler=profile.user)
    context = {
        "profile": profile, "row": row, "form": form, "weekly": weekly,
        "history": profile.status_changes.select_related("changed_by"),
        "chart_weekly": charts.line_chart(
            "Agreement with peers and gold accuracy by week", [week.strftime("%d %b") for week in weeks],
            {"agreement": [a for _, a, _ in weekly], "gold accuracy": [g for _, _, g in weekly]},
            y_max=1, y_format="{:.0%}".format,
        ),
        "chart_throughput": charts.stacked_bars("Results submitted per day",
                                                [d.strftime("%d %b") for d in throughput["dates"]],
                                                throughput["series"]),
        "throughput": throughput,
    }
    return render(request, "labeling/labeler_quality.html", context, status=400 if form.errors else 200)
