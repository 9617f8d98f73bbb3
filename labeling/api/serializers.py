from django.urls import reverse
from rest_framework import serializers

from ..models import Export, ImportJob, ModelVersion, Prompt, TrainingRun, UseCase


class PromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = [
            "id", "text", "turns", "source", "source_user_id", "split", "language", "use_case", "metadata",
            "redactions", "needs_completions", "created_at",
        ]


class PromptFilterSerializer(serializers.Serializer):
    split = serializers.ChoiceField(choices=Prompt.Split.choices, required=False)
    source = serializers.ChoiceField(choices=Prompt.Source.choices, required=False)
    language = serializers.RegexField(r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$", max_length=16, required=False)
    use_case = serializers.ChoiceField(choices=UseCase.choices, required=False)


class PromptRowSerializer(serializers.Serializer):
    """One prompt to create. The intake rules check the values; only the shape is checked here."""

    prompt = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    messages = serializers.ListField(child=serializers.DictField(), required=False)
    source = serializers.CharField(required=False)
    source_user_id = serializers.CharField(required=False, allow_blank=True)
    language = serializers.CharField(required=False)
    use_case = serializers.CharField(required=False, allow_blank=True)
    metadata = serializers.DictField(required=False)


class PromptBulkSerializer(serializers.Serializer):
    """The request body as documented in the schema."""

    prompts = PromptRowSerializer(many=True, allow_empty=False, max_length=10_000)


class PromptBulkEnvelope(serializers.Serializer):
    """The request body as checked: a list of objects, left as sent for the intake rules."""

    prompts = serializers.ListField(child=serializers.DictField(), allow_empty=False, max_length=10_000)


class RowErrorSerializer(serializers.Serializer):
    line = serializers.IntegerField(help_text="Position of the row: the line of the file, or 1 + the list index.")
    reason = serializers.CharField()


class IntakeReportSerializer(serializers.Serializer):
    rows_read = serializers.IntegerField()
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    over_cap = serializers.IntegerField()
    rejected = serializers.IntegerField()
    split_counts = serializers.DictField(child=serializers.IntegerField())
    redactions = serializers.DictField(child=serializers.IntegerField())
    tasks_opened = serializers.DictField(child=serializers.IntegerField())
    row_errors = RowErrorSerializer(many=True)
    row_errors_omitted = serializers.IntegerField()
    prompt_ids = serializers.ListField(child=serializers.IntegerField())


class ImportJobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    row_errors = RowErrorSerializer(many=True, read_only=True)

    class Meta:
        model = ImportJob
        fields = [
            "id", "filename", "format", "size_bytes", "state", "progress", "created_at", "started_at",
            "finished_at", "rows_read", "accepted", "duplicates", "over_cap", "rejected", "split_counts",
            "redactions", "tasks_opened", "row_errors", "row_errors_omitted", "error",
        ]
        read_only_fields = fields

    def get_progress(self, job) -> dict:
        return job.progress()


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL or CSV, UTF-8.")
    format = serializers.ChoiceField(choices=ImportJob.Format.choices, required=False)


class ExportSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id", "kind", "format", "filters", "with_identities", "state", "progress", "row_count", "size_bytes",
            "sha256", "manifest", "error", "created_by", "created_at", "started_at", "finished_at", "download_url",
        ]

    def get_download_url(self, export) -> str | None:
        if export.state != Export.State.SUCCEEDED:
            return None
        return self.context["request"].build_absolute_uri(reverse("api-export-download", args=[export.pk]))


class ExportCreateSerializer(serializers.Serializer):
    """Only the shape is checked here; the export service judges the filters and names a bad one."""

    kind = serializers.ChoiceField(choices=Export.Kind.choices)
    format = serializers.ChoiceField(choices=Export.Format.choices, default=Export.Format.JSONL)
    filters = serializers.JSONField(
        required=False, default=dict,
        help_text='e.g. {"split": ["train"], "overlap": "consensus", "min_agreement": 0.7, "style": "standard"}',
    )
    with_identities = serializers.BooleanField(default=False, help_text="Usernames instead of pseudonyms; admins only.")


class ModelVersionSerializer(serializers.ModelSerializer):
    served_name = serializers.CharField(read_only=True, help_text="The name a sampling endpoint serves it under.")

    class Meta:
        model = ModelVersion
        fields = ["id", "kind", "name", "served_name", "status", "artifact_path", "base_path", "adapter", "parent",
                  "training_run", "metrics",
                  "endpoint_url", "endpoint_model", "created_at", "activated_at"]


class TrainingRunSerializer(serializers.ModelSerializer):
    model_version = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)  # none until a run succeeds
    progress = serializers.FloatField(read_only=True, help_text="The share of optimizer steps done, 0 to 1.")
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = TrainingRun
        fields = ["id", "kind", "trigger", "state", "progress", "step", "total_steps", "eta_seconds", "config",
                  "export", "valid_export", "base_model", "reward_model", "reference_model", "ptx_export", "ptx_path",
                  "model_version", "metrics", "gate", "history", "log", "error", "created_at", "started_at",
                  "finished_at"]


class TrainingRunCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    options = serializers.DictField(
        required=False, default=dict, help_text='rlhf options for this run, e.g. {"epochs": 2, "lr": 1e-5}'
    )


class CountsSerializer(serializers.Serializer):
    label = serializers.CharField()
    count = serializers.IntegerField()
    percent = serializers.FloatField()


class SamplerSerializer(serializers.Serializer):
    """Where completions come from, and what the last attempt found."""

    backend = serializers.CharField(help_text="The endpoint's URL, or in-process.")
    server = serializers.CharField(allow_null=True, help_text="How the endpoint loads new versions (SAMPLER_SERVER).")
    serving = serializers.CharField(allow_null=True, help_text="The served name of the active policy.")
    ok = serializers.BooleanField(allow_null=True, help_text="Whether the last attempt worked; null: none yet.")
    message = serializers.CharField()
    failures = serializers.IntegerField(help_text="Failed attempts in a row.")
    checked_at = serializers.CharField(required=False)
    last_error = serializers.CharField(required=False)
    last_error_at = serializers.CharField(required=False)
    waiting = serializers.IntegerField(help_text="Prompts waiting for completions.")


class StatisticsSerializer(serializers.Serializer):
    """The numbers behind the dataset dashboard."""

    prompt_count = serializers.IntegerField()
    needing_completions = serializers.IntegerField()
    by_split = CountsSerializer(many=True)
    by_source = CountsSerializer(many=True)
    by_language = CountsSerializer(many=True)
    by_use_case = CountsSerializer(many=True)
    open_tasks = CountsSerializer(many=True)
    results = serializers.DictField(child=serializers.IntegerField(), help_text="Submitted results per kind.")
