from django.conf import settings
from django.core.cache import cache
from django.db import models
from django.urls import reverse


class JobState(models.TextChoices):
    """States of background work with a report: imports and exports."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ImportJob(models.Model):
    """One uploaded prompt file and the report of what its import did."""

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSONL"
        CSV = "csv", "CSV"

    State = JobState

    file = models.FileField(upload_to="imports/%Y/%m/")
    filename = models.CharField(max_length=255)
    format = models.CharField(max_length=5, choices=Format.choices)
    size_bytes = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows_read = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    over_cap = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    split_counts = models.JSONField(default=dict, blank=True)
    redactions = models.JSONField(default=dict, blank=True)
    tasks_opened = models.JSONField(default=dict, blank=True)
    row_errors = models.JSONField(default=list, blank=True, help_text='[{"line": 7, "reason": "..."}, ...]')
    row_errors_omitted = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole file was refused or the import failed.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Import #{self.pk} of {self.filename}"

    def get_absolute_url(self):
        return reverse("import-detail", args=[self.pk])

    @property
    def is_finished(self):
        return self.state in (self.State.SUCCEEDED, self.State.FAILED)

    @property
    def progress_cache_key(self):
        return f"import-job:{self.pk}:progress"

    def progress(self):
        """Bytes read so far. Written to the cache, since the rows land in one transaction at the end."""
        if self.is_finished:
            return {"bytes_read": self.size_bytes, "rows_read": self.rows_read}
        return cache.get(self.progress_cache_key) or {"bytes_read": 0, "rows_read": 0}
