from rest_framework import serializers

from ..models import ImportJob, Prompt, UseCase


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
