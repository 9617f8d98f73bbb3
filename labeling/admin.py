"""The Django admin. Whatever a service owns (a labeler's status, a model's activation, a task's state, results)
is read-only here and changes only through actions that call the same services as the pages."""

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, Value
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse_lazy
from django.utils import timezone

from . import services
from .models import (
    Assignment,
    ChatMessage,
    Completion,
    CompletionRating,
    Conversation,
    Demonstration,
    Evaluation,
    Export,
    Guidelines,
    ImportJob,
    Invitation,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    Role,
    ScreeningAttempt,
    ScreeningItem,
    StatusChange,
    Task,
    TrainingRun,
)
from .services.screening import invitation_token

admin.site.unregister(get_user_model())
admin.site.site_header = admin.site.site_title = "RLHF labeling admin"
# "View site" opens the start page, which takes an admin to the Team page; templates/admin/ adds the other site
# pages an admin works on to the header and the index.
admin.site.site_url = reverse_lazy("start")


class ViewOnlyAdmin(admin.ModelAdmin):
    """Rows that labelers' work, the sampler or the trainer made: admins read them and never edit them, so every
    export and model stays traceable to what was really submitted."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ViewOnlyInline(admin.TabularInline):
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


def apply_with_reason(model_admin, request, queryset, *, title, done, change, name=str):
    """Django's intermediate action page: ask for a reason, then `change(row, reason)` each selected row.

    A row the service refuses is named (by `name(row)`) with the service's reason; the others are changed."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if not form.is_valid():
        context = {
            **model_admin.admin_site.each_context(request), "title": title, "form": form, "rows": queryset,
            "opts": model_admin.model._meta, "action": request.POST["action"],
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/labeling/reason_form.html", context)
    changed = []
    for row in queryset:
        try:
            change(row, form.cleaned_data["reason"])
        except ValidationError as exc:
            model_admin.message_user(request, f"{name(row)}: {' '.join(exc.messages)}", messages.ERROR)
        else:
            changed.append(name(row))
    if changed:
        model_admin.message_user(request, f"{done}: {', '.join(changed)}.", messages.SUCCESS)
    return None


@admin.register(get_user_model())
class PeopleAdmin(UserAdmin):
    """Admins manage people. A role (its group, staff status and labeler profile) changes only through the role
    actions; only a superuser can grant superuser status or single permissions."""

    actions = ["make_labeler", "make_researcher", "make_admin"]

    def get_readonly_fields(self, request, obj=None):
        readonly = [*super().get_readonly_fields(request, obj), "groups", "is_staff"]
        return readonly if request.user.is_superuser else [*readonly, "is_superuser", "user_permissions"]

    def _set_role(self, request, queryset, role):
        for user in queryset:
            services.user_set_role(user=user, role=role)
        self.message_user(request, f"Now {Role(role).label.lower()}: {', '.join(u.username for u in queryset)}.",
                          messages.SUCCESS)

    @admin.action(description="Make the selected people labelers", permissions=["change"])
    def make_labeler(self, request, queryset):
        self._set_role(request, queryset, Role.LABELER)

    @admin.action(description="Make the selected people researchers", permissions=["change"])
    def make_researcher(self, request, queryset):
        self._set_role(request, queryset, Role.RESEARCHER)

    @admin.action(description="Make the selected people admins", permissions=["change"])
    def make_admin(self, request, queryset):
        self._set_role(request, queryset, Role.ADMIN)


class StatusChangeInline(admin.TabularInline):
    model = StatusChange
    fields = ["changed_at", "old_status", "new_status", "reason", "changed_by"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invite people by a single-use link that expires; send them the link shown after saving, whole and with a
    button that copies it."""

    list_display = ["id", "role", "note", "link", "expires_at", "used_at", "created_by"]
    list_filter = ["role"]
    fields = ["role", "note", "expires_at", "link", "used_by", "used_at", "created_by"]
    readonly_fields = ["link", "used_by", "used_at", "created_by"]

    class Media:
        js = ["js/copy.js"]

    def get_queryset(self, request):
        # The address this admin reached the site by, so that the link shown is the whole one to send.
        return super().get_queryset(request).annotate(site_root=Value(request.build_absolute_uri("/")))

    def get_changeform_initial_data(self, request):
        return {"expires_at": timezone.now() + timedelta(days=settings.INVITATION_DAYS)}

    @admin.display(description="link")
    def link(self, invitation):
        if not invitation.token:
            return "made when saved"
        url = invitation.site_root.rstrip("/") + invitation.get_absolute_url()
        return render_to_string("labeling/_copy_field.html", {"text": url, "label": "Invitation link"})

    def save_model(self, request, obj, form, change):
        if not change:
            obj.token, obj.created_by = invitation_token(), request.user
        super().save_model(request, obj, form, change)


@admin.register(LabelerProfile)
class LabelerProfileAdmin(admin.ModelAdmin):
    """Screening fills in the scores and the approval; pausing, resuming and offboarding are actions with a reason,
    which also hand the person's live leases back to the queue. A profile is made with the labeler role."""

    list_display = ["user", "status", "languages", "flag_agreement", "ranking_agreement", "demonstration_score",
                    "approved_at"]
    list_filter = ["status"]
    search_fields = ["user__username", "user__email"]
    readonly_fields = ["user", "status", "status_reason", "self_assessment", "flag_agreement", "ranking_agreement",
                       "demonstration_score", "approved_by", "approved_at", "guidelines_acknowledged", "created_at"]
    inlines = [StatusChangeInline]
    actions = ["pause", "resume", "offboard"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # offboarding keeps the person's history; deleting would orphan their results

    def _move(self, request, queryset, status, title, done):
        def change(profile, reason):
            services.labeler_set_status(profile=profile, status=status, reason=reason, changed_by=request.user)

        return apply_with_reason(self, request, queryset.select_related("user"), title=title, done=done,
                                 change=change, name=lambda profile: profile.user.username)

    @admin.action(description="Pause the selected labelers", permissions=["change"])
    def pause(self, request, queryset):
        return self._move(request, queryset, LabelerProfile.Status.PAUSED, "Pause labelers", "Paused")

    @admin.action(description="Resume the selected labelers", permissions=["change"])
    def resume(self, request, queryset):
        return self._move(request, queryset, LabelerProfile.Status.ACTIVE, "Resume labelers", "Resumed")

    @admin.action(description="Offboard the selected labelers", permissions=["change"])
    def offboard(self, request, queryset):
        return self._move(request, queryset, LabelerProfile.Status.OFFBOARDED, "Offboard labelers", "Offboarded")


@admin.register(Guidelines)
class GuidelinesAdmin(admin.ModelAdmin):
    """Published through the service as the next version; a published version stays as labelers acknowledged it, so
    a change is published as a new version, which every labeler acknowledges before more work."""

    list_display = ["version", "title", "published_at", "published_by"]
    search_fields = ["title", "body"]
    fields = ["title", "body"]

    def has_change_permission(self, request, obj=None):
        return False

    def get_fields(self, request, obj=None):
        return ["version", "title", "body", "published_at", "published_by"] if obj else self.fields

    def save_model(self, request, obj, form, change):
        # The form's fields are required and stripped, as the service asks.
        published = services.guidelines_publish(title=obj.title, body=obj.body, published_by=request.user)
        obj.pk, obj.version, obj.published_at, obj.published_by = (published.pk, published.version,
                                                                   published.published_at, request.user)


@admin.register(ScreeningItem)
class ScreeningItemAdmin(admin.ModelAdmin):
    list_display = ["id", "part", "short_prompt", "is_active", "created_at"]
    list_filter = ["part", "is_active"]
    search_fields = ["prompt_text"]

    @admin.display(description="prompt")
    def short_prompt(self, item):
        return item.prompt_text[:80]


@admin.register(ScreeningAttempt)
class ScreeningAttemptAdmin(ViewOnlyAdmin):
    """Graded and decided on the review pages."""

    list_display = ["id", "profile", "submitted_at", "flag_agreement", "ranking_agreement",
                    "demonstration_score", "decision", "decided_by"]
    list_filter = ["decision"]
    search_fields = ["profile__user__username"]


class TaskInline(admin.TabularInline):
    model = Task
    fields = ["kind", "state", "required_annotations", "priority", "is_gold"]
    readonly_fields = ["state"]
    extra = 0
    show_change_link = True


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "short_text", "source", "split", "language", "use_case", "source_user_id",
                    "needs_completions", "created_at"]
    list_filter = ["split", "source", "language", "use_case", "needs_completions"]
    search_fields = ["text", "source_user_id"]
    raw_id_fields = ["created_by", "import_job"]
    readonly_fields = ["dedup_key", "redactions", "created_at"]
    date_hierarchy = "created_at"
    inlines = [TaskInline]

    @admin.display(description="text")
    def short_text(self, prompt):
        return prompt.text[:80]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Training registers versions and the evaluation gate activates them; an admin may activate one by hand
    (a rollback, or overriding the gate) through the same activation, which retires the active one of its kind."""

    ACTIVATABLE = (ModelVersion.Status.READY, ModelVersion.Status.RETIRED, ModelVersion.Status.REJECTED)

    list_display = ["name", "kind", "status", "parent", "created_at", "activated_at"]
    list_filter = ["kind", "status"]
    search_fields = ["name", "artifact_path"]
    readonly_fields = ["kind", "status", "status_reason", "artifact_path", "base_path", "adapter", "parent",
                       "training_run", "metrics",
                       "endpoint_url", "endpoint_model", "endpoint_key_env", "created_at", "activated_at"]
    actions = ["activate"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.status != ModelVersion.Status.ACTIVE  # samplers always find one active version

    @admin.action(description="Activate the selected version", permissions=["change"])
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose one version to activate: each kind has exactly one active version.",
                              messages.ERROR)
            return None
        return apply_with_reason(self, request, queryset, title="Activate a model version", done="Activated",
                                 change=lambda version, reason: self._activate(version, reason, request.user))

    def _activate(self, version, reason, user):
        if version.status not in self.ACTIVATABLE:
            raise ValidationError(f"It is {version.status}; only a ready, retired or rejected version can be "
                                  f"activated.")
        services.model_version_activate(version=version, reason=f"Activated by {user.username}: {reason}")


@admin.register(Evaluation)
class EvaluationAdmin(ViewOnlyAdmin):
    """Researchers start evaluations on the site (or through the API and `manage.py evaluate`), where the results
    are; the human gate decides its own. Here they are read."""

    list_display = ["id", "candidate", "state", "gates", "held_out_labelers", "trigger", "created_at"]
    list_filter = ["state", "gates", "held_out_labelers"]
    search_fields = ["candidate__name", "trigger"]
    exclude = ["reward_scores"]


@admin.register(Completion)
class CompletionAdmin(ViewOnlyAdmin):
    """Sampled text that labelers ranked: editing it would change what their rankings mean."""

    list_display = ["id", "prompt_id", "short_text", "model_version", "token_count", "finish_reason", "created_at"]
    list_filter = ["model_version", "finish_reason"]
    search_fields = ["text", "prompt__text"]

    @admin.display(description="text")
    def short_text(self, completion):
        return completion.text[:80]


class AssignmentInline(admin.TabularInline):
    model = Assignment
    fields = ["labeler", "state", "leased_at", "lease_expires_at", "submitted_at", "skip_reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """A task's state and consensus follow from its assignments; the rest (priority, overlap, gold) is the admin's."""

    list_display = ["id", "kind", "prompt_id", "state", "required_annotations", "submitted", "priority",
                    "is_gold", "created_at"]
    list_filter = ["kind", "state", "is_gold", "required_annotations"]
    search_fields = ["prompt__text"]
    raw_id_fields = ["prompt", "completions"]
    readonly_fields = ["state", "consensus", "created_at"]
    inlines = [AssignmentInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            submitted_count=Count("assignments", filter=Q(assignments__state=Assignment.State.SUBMITTED))
        )

    @admin.display(description="submitted", ordering="submitted_count")
    def submitted(self, task):
        return task.submitted_count


@admin.register(Assignment)
class AssignmentAdmin(ViewOnlyAdmin):
    """Leases are taken, submitted, skipped and expired by the labeling services."""

    list_display = ["id", "task", "labeler", "state", "leased_at", "lease_expires_at", "submitted_at",
                    "skip_reason", "time_spent_seconds"]
    list_filter = ["state", "skip_reason", "task__kind"]
    search_fields = ["labeler__username", "task__prompt__text"]


class ChatMessageInline(ViewOnlyInline):
    model = ChatMessage
    fields = ["position", "role", "text", "state", "superseded", "rewritten", "original_text", "model_version",
              "finish_reason", "error"]


@admin.register(Conversation)
class ConversationAdmin(ViewOnlyAdmin):
    """Chats are written by labelers and the chat worker, and ended by the chat services."""

    list_display = ["id", "labeler", "state", "created_at", "ended_at", "chosen_message", "ranking_prompt"]
    list_filter = ["state"]
    search_fields = ["labeler__username", "messages__text"]
    inlines = [ChatMessageInline]


@admin.register(Demonstration)
class DemonstrationAdmin(ViewOnlyAdmin):
    list_display = ["id", "prompt_id", "author", "used_model_suggestion", "created_at"]
    list_filter = ["used_model_suggestion"]
    search_fields = ["prompt__text", "author__username"]


class CompletionRatingInline(ViewOnlyInline):
    model = CompletionRating


@admin.register(Ranking)
class RankingAdmin(ViewOnlyAdmin):
    list_display = ["id", "task", "labeler", "groups", "none_acceptable", "created_at"]
    list_filter = ["none_acceptable"]
    search_fields = ["labeler__username", "task__prompt__text"]
    inlines = [CompletionRatingInline]


@admin.register(CompletionRating)
class CompletionRatingAdmin(ViewOnlyAdmin):
    list_display = ["id", "completion_id", "ranking_id", "rating", "fails_to_follow_instruction", "hallucination",
                    "harmful_advice"]
    list_filter = ["rating", *CompletionRating.FLAGS]
    search_fields = ["notes", "completion__text"]


@admin.register(PromptAnnotation)
class PromptAnnotationAdmin(ViewOnlyAdmin):
    list_display = ["id", "prompt_id", "labeler", "use_case", "language", "ambiguous", "sensitive_content",
                    "contains_personal_data", "created_at"]
    list_filter = ["use_case", "language", "contains_personal_data", *PromptAnnotation.FLAGS]
    search_fields = ["prompt__text", "labeler__username"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    """Imports are made on the imports page, the API or `manage.py import_prompts`."""

    list_display = ["id", "filename", "state", "created_by", "rows_read", "accepted", "duplicates", "over_cap",
                    "rejected", "created_at"]
    list_filter = ["state", "format"]
    search_fields = ["filename", "created_by__username"]
    readonly_fields = [f.name for f in ImportJob._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Export)
class ExportAdmin(admin.ModelAdmin):
    """Snapshots are made on the exports page, the API or `manage.py export`, and never edited."""

    list_display = ["id", "kind", "format", "state", "row_count", "size_bytes", "sha256", "created_by", "created_at"]
    list_filter = ["kind", "format", "state", "with_identities"]
    search_fields = ["sha256", "created_by__username"]
    readonly_fields = [f.name for f in Export._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(ViewOnlyAdmin):
    """Runs are started and cancelled on the training pages or the API; the worker writes their state and results."""

    list_display = ["id", "kind", "state", "progress", "export", "base_model", "created_at", "finished_at"]
    list_filter = ["kind", "state"]
    search_fields = ["log", "error"]
