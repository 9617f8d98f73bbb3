"""Reads, scoped to the user who asks."""

from django.db.models import Count
from django.urls import reverse

from .models import ImportJob, LabelerProfile, Prompt, Role, Task
from .permissions import roles_of


def start_url_for(user):
    roles = roles_of(user)
    if Role.ADMIN in roles:
        return reverse("admin:index")
    if Role.RESEARCHER in roles:
        return reverse("research-home")
    if Role.LABELER in roles:
        return reverse("labeler-home")
    return reverse("no-role")


def _shares(queryset, field, choices=None):
    """Rows of (label, count, percent) for a grouped count, largest first."""
    labels = dict(choices) if choices else {}
    counts = list(queryset.order_by().values_list(field).annotate(n=Count("id")).order_by("-n"))
    total = sum(n for _, n in counts) or 1
    return [(labels.get(value, value) or "unspecified", n, round(100 * n / total, 1)) for value, n in counts]


def dataset_overview():
    prompts = Prompt.objects.all()
    return {
        "prompt_count": prompts.count(),
        "by_split": _shares(prompts, "split", Prompt.Split.choices),
        "by_source": _shares(prompts, "source", Prompt.Source.choices),
        "by_language": _shares(prompts, "language"),
        "by_use_case": _shares(prompts, "use_case", Prompt._meta.get_field("use_case").choices),
        "open_tasks": _shares(Task.objects.filter(state=Task.State.OPEN), "kind", Task.Kind.choices),
        "needing_completions": prompts.filter(needs_completions=True).count(),
    }


def import_jobs_visible_to(user):
    """Researchers and admins share the team's imports."""
    return ImportJob.objects.select_related("created_by")


def labeler_overview(user):
    profile, _ = LabelerProfile.objects.get_or_create(user=user)
    return {"profile": profile, "submitted": user.assignments.filter(state="submitted").count()}
