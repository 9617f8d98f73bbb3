from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, Q
from django.utils import timezone

from .models import (
    Assignment,
    Completion,
    CompletionRating,
    Demonstration,
    Export,
    Guidelines,
    ImportJob,
    Invitation,
    LabelerProfile,
    ModelVersion,
    Prompt,
    PromptAnnotation,
    Ranking,
    ScreeningAttempt,
    ScreeningItem,
    StatusChange,
    Task,
    TrainingRun,
)
from .services.screening import invitation_token

admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class PeopleAdmin(UserAdmin):
    """Admins manage people; only a superuser can grant superuser status or single permissions."""

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        return readonly if request.user.is_superuser else [*readonly, "is_superuser", "user_permissions"]


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
    """Invite people by a single-use link that expires; send them the link shown after saving."""

    list_display = ["id", "role", "note", "link", "expires_at", "used_at", "created_by"]
    list_filter = ["role"]
    fields = ["role", "note", "expires_at", "link", "used_by", "used_at", "created_by"]
    readonly_fields = ["link", "used_by", "used_at", "created_by"]

    def get_changeform_initial_data(self, request):
        return {"expires_at": timezone.now() + timedelta(days=settings.INVITATION_DAYS)}

    @admin.display(description="link")
    def link(self, invitation):
        return invitation.get_absolute_url() if invitation.token else "made when saved"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.token, obj.created_by = invitation_token(), request.user
        super().save_model(request, obj, form, change)


@admin.register(LabelerProfile)
class LabelerProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "status", "languages", "flag_agreement", "ranking_agreement", "demonstration_score",
                    "approved_at"]
    list_filter = ["status"]
    search_fields = ["user__username", "user__email"]
    raw_id_fields = ["user", "approved_by"]
    inlines = [StatusChangeInline]


@admin.register(Guidelines)
class GuidelinesAdmin(admin.ModelAdmin):
    list_display = ["version", "title", "published_at", "published_by"]
    search_fields = ["title", "body"]
    readonly_fields = ["published_at"]


@admin.register(ScreeningItem)
class ScreeningItemAdmin(admin.ModelAdmin):
    list_display = ["id", "part", "short_prompt", "is_active", "created_at"]
    list_filter = ["part", "is_active"]
    search_fields = ["prompt_text"]

    @admin.display(description="prompt")
    def short_prompt(self, item):
        return item.prompt_text[:80]


@admin.register(ScreeningAttempt)
class ScreeningAttemptAdmin(admin.ModelAdmin):
    list_display = ["id", "profile", "submitted_at", "flag_agreement", "ranking_agreement",
                    "demonstration_score", "decision", "decided_by"]
    list_filter = ["decision"]
    search_fields = ["profile__user__username"]
    raw_id_fields = ["profile", "graded_by", "decided_by"]


class TaskInline(admin.TabularInline):
    model = Task
    fields = ["kind", "state", "required_annotations", "priority", "is_gold"]
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
    list_display = ["name", "kind", "status", "parent", "created_at", "activated_at"]
    list_filter = ["kind", "status"]
    search_fields = ["name", "artifact_path"]
    raw_id_fields = ["parent", "training_run"]


@admin.register(Completion)
class CompletionAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt_id", "short_text", "model_version", "token_count", "finish_reason", "created_at"]
    list_filter = ["model_version", "finish_reason"]
    search_fields = ["text", "prompt__text"]
    raw_id_fields = ["prompt", "model_version"]

    @admin.display(description="text")
    def short_text(self, completion):
        return completion.text[:80]


class AssignmentInline(admin.TabularInline):
    model = Assignment
    fields = ["labeler", "state", "leased_at", "lease_expires_at", "submitted_at", "skip_reason"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "prompt_id", "state", "required_annotations", "submitted", "priority",
                    "is_gold", "created_at"]
    list_filter = ["kind", "state", "is_gold", "required_annotations"]
    search_fields = ["prompt__text"]
    raw_id_fields = ["prompt", "completions"]
    inlines = [AssignmentInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            submitted_count=Count("assignments", filter=Q(assignments__state=Assignment.State.SUBMITTED))
        )

    @admin.display(description="submitted", ordering="submitted_count")
    def submitted(self, task):
        return task.submitted_count


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "labeler", "state", "leased_at", "lease_expires_at", "submitted_at",
                    "skip_reason", "time_spent_seconds"]
    list_filter = ["state", "skip_reason", "task__kind"]
    search_fields = ["labeler__username", "task__prompt__text"]
    raw_id_fields = ["task", "labeler"]


@admin.register(Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt_id", "author", "used_model_suggestion", "created_at"]
    list_filter = ["used_model_suggestion"]
    search_fields = ["prompt__text", "author__username"]
    raw_id_fields = ["assignment", "prompt", "author", "suggestion_model_version"]


class CompletionRatingInline(admin.TabularInline):
    model = CompletionRating
    extra = 0
    raw_id_fields = ["completion"]


@admin.register(Ranking)
class RankingAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "labeler", "groups", "none_acceptable", "created_at"]
    list_filter = ["none_acceptable"]
    search_fields = ["labeler__username", "task__prompt__text"]
    raw_id_fields = ["assignment", "task", "labeler"]
    inlines = [CompletionRatingInline]


@admin.register(CompletionRating)
class CompletionRatingAdmin(admin.ModelAdmin):
    list_display = ["id", "completion_id", "ranking_id", "rating", "fails_to_follow_instruction", "hallucination",
                    "harmful_advice"]
    list_filter = ["rating", *CompletionRating.FLAGS]
    search_fields = ["notes", "completion__text"]
    raw_id_fields = ["ranking", "completion"]


@admin.register(PromptAnnotation)
class PromptAnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt_id", "labeler", "use_case", "language", "ambiguous", "sensitive_content",
                    "contains_personal_data", "created_at"]
    list_filter = ["use_case", "language", "contains_personal_data", *PromptAnnotation.FLAGS]
    search_fields = ["prompt__text", "labeler__username"]
    raw_id_fields = ["assignment", "prompt", "labeler"]


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "filename", "state", "created_by", "rows_read", "accepted", "duplicates", "over_cap",
                    "rejected", "created_at"]
    list_filter = ["state", "format"]
    search_fields = ["filename", "created_by__username"]
    readonly_fields = [f.name for f in ImportJob._meta.fields]


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
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "state", "progress", "export", "base_model", "created_at", "finished_at"]
    list_filter = ["kind", "state"]
    search_fields = ["log", "error"]
    raw_id_fields = ["export", "base_model", "created_by"]
