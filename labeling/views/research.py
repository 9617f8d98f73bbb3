"""Researchers' pages: the dataset dashboard, imports, exports, training runs and model versions."""

import json

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .. import charts, selectors, services
from ..forms import ExportForm, ImportForm, TrainingStartForm
from ..models import Export, Role
from ..permissions import has_role, role_required


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
    return {
        "split_source": charts.stacked_bars("Prompts per split and source", dashboard["splits"],
                                            dict(dashboard["sources"]), y_label="Prompts"),
        "agreement": charts.line_chart("Agreement between labelers, by week", weeks,
                                       {"Agreement": [a for _, a, _ in dashboard["agreement"]]}, domain=(0, 1),
                                       percent=True, y_label="Pairs ordered alike"),
        "throughput": charts.stacked_bars("Results submitted per day",
                                          [d.strftime("%d %b") for d in throughput["dates"]], throughput["series"],
                                          y_label="Results per day"),
        "reward_models": charts.line_chart("Reward model accuracy on validation comparisons",
                                           [name for name, *_ in rewards],
                                           {charts.metric_name("accuracy"): [r[2] for r in rewards]}, domain=(0, 1),
                                           percent=True, y_label=charts.metric_name("accuracy")),
        "policies": charts.line_chart("Policy reward and KL", [name for name, *_ in policies],
                                      {charts.metric_name("reward"): [p[2] for p in policies],
                                       charts.metric_name("kl"): [p[3] for p in policies]}),
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
                if job.state == job.State.FAILED:  # refused, or every row turned away: say why beside the field
                    form.add_error("file", job.error)
                else:
                    if not job.is_finished:
                        messages.info(
                            request, f"{job.filename} is large, so a worker imports it; progress shows below."
                        )
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


# Named here rather than guessed from the file name, so a download's type never depends on the server's table.
EXPORT_MEDIA_TYPES = {
    Export.Format.JSONL: "application/jsonl",
    Export.Format.JSONL_GZ: "application/gzip",
    Export.Format.PARQUET: "application/vnd.apache.parquet",
    Export.Format.CSV: "text/csv",
}


def export_file_response(export):
    if export.state != Export.State.SUCCEEDED:
        raise Http404(f"Export #{export.pk} has no file yet: it is {export.state}.")
    response = FileResponse(export.file.open("rb"), as_attachment=True, filename=export.filename,
                            content_type=EXPORT_MEDIA_TYPES[export.format])
    response["X-Checksum-SHA256"] = export.sha256
    return response


CURVES = {"reward": ["loss", "accuracy"], "sft": ["loss"], "ppo": ["reward", "kl"]}


@role_required(Role.RESEARCHER)
def training_runs(request):
    form = TrainingStartForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = services.training_run_start(kind=form.cleaned_data["kind"], options=form.cleaned_data["options"],
                                              created_by=request.user)
        except ValidationError as exc:
            form.add_error("options" if exc.code == "options" else "kind", exc)
        else:
            return redirect(run)
    runs = selectors.training_runs()[:50]
    context = {"form": form, "runs": runs, "rules": selectors.training_rules(),
               "queued": selectors.queued_because(runs), "sampler": selectors.sampler_overview()}
    return render(request, "labeling/training_runs.html", context, status=400 if form.errors else 200)


@role_required(Role.RESEARCHER)
def training_run(request, pk):
    run = get_object_or_404(selectors.training_runs(), pk=pk)
    train = [point for point in run.history if point.get("split") != "valid"]
    steps = [point["step"] for point in train]
    curves = [
        (charts.metric_title(name), charts.line_chart(
            charts.metric_title(name), steps, {charts.metric_name(name): [point.get(name) for point in train]},
            y_label=charts.metric_name(name)))
        for name in CURVES[run.kind] if any(name in point for point in train)
    ]
    validation = [point for point in run.history if point.get("split") == "valid"]
    # Every metric any validation point has, in the order they first appear: a column never shifts under
    # another's heading.
    columns = [name for name in dict.fromkeys(key for point in validation for key in point)
               if name not in ("step", "split", "epoch")]
    context = {"run": run, "curves": curves, "validation": validation, "validation_columns": columns,
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
