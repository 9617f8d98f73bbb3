from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render

from . import selectors, services
from .forms import ImportForm
from .models import Role
from .permissions import role_required


@login_required
def start(request):
    return redirect(selectors.start_url_for(request.user))


@login_required
def no_role(request):
    return render(request, "labeling/no_role.html", status=403)


@role_required(Role.LABELER)
def labeler_home(request):
    return render(request, "labeling/labeler_home.html", selectors.labeler_overview(request.user))


@role_required(Role.RESEARCHER)
def research_home(request):
    context = selectors.dataset_overview()
    context["recent_imports"] = selectors.import_jobs_visible_to(request.user)[:5]
    return render(request, "labeling/research_home.html", context)


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
        }
    )
