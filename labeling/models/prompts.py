from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse


class UseCase(models.TextChoices):
    """InstructGPT's use-case categories (Ouyang et al. 2022, Table 1)."""

    GENERATION = "generation", "Generation"
    OPEN_QA = "open_qa", "Open QA"
    CLOSED_QA = "closed_qa", "Closed QA"
    BRAINSTORMING = "brainstorming", "Brainstorming"
    CHAT = "chat", "Chat"
    REWRITE = "rewrite", "Rewrite"
    SUMMARIZATION = "summarization", "Summarization"
    CLASSIFICATION = "classification", "Classification"
    EXTRACT = "extract", "Extract"
    OTHER = "other", "Other"


class Prompt(models.Model):
    class Source(models.TextChoices):
        PLAIN = "plain", "Labeler-written: plain"
        FEW_SHOT = "few_shot", "Labeler-written: few-shot"
        USER_BASED = "user_based", "Labeler-written: user-based"
        CUSTOMER = "customer", "Customer"
        IMPORTED = "imported", "Imported"
        CHAT = "chat", "A labeler's chat with the model"

    class Split(models.TextChoices):
        TRAIN = "train"
        VALID = "valid"
        TEST = "test"

    text = models.TextField(help_text="The prompt; for a chat, its turns rendered as text.")
    turns = models.JSONField(
        null=True, blank=True, help_text='Chat turns as [{"role": "user", "content": "..."}, ...], or empty.'
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.IMPORTED)
    source_user_id = models.CharField(max_length=128, blank=True)
    split = models.CharField(max_length=5, choices=Split.choices)
    language = models.CharField(max_length=16, default="en")
    use_case = models.CharField(max_length=16, choices=UseCase.choices, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    dedup_key = models.CharField(
        max_length=64, blank=True, help_text="Hash of the normalised prefix; empty when deduplication is off."
    )
    # MinHash LSH band keys of the normalised text (near_duplicates.lsh_bands), one indexed column per band, so
    # that an import finds stored near-duplicates with one indexed query; empty for prompts stored without them.
    lsh_band_0 = models.BigIntegerField(null=True, blank=True, editable=False)
    lsh_band_1 = models.BigIntegerField(null=True, blank=True, editable=False)
    lsh_band_2 = models.BigIntegerField(null=True, blank=True, editable=False)
    lsh_band_3 = models.BigIntegerField(null=True, blank=True, editable=False)
    redactions = models.JSONField(default=dict, blank=True, help_text="Count of redacted PII by kind.")
    needs_completions = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    import_job = models.ForeignKey(
        "ImportJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="prompts"
    )
    assignment = models.OneToOneField(
        "Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="written_prompt",
        help_text="The write-a-prompt task this prompt was written in.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        # Few indexes: imports write prompts in bulk, and every index slows that down.
        indexes = [
            models.Index(fields=["id"], condition=Q(needs_completions=True), name="prompt_needs_completions"),
            # Looked up by equality only (the per-user cap), so without the pattern-matching twin of db_index.
            models.Index(fields=["source_user_id"], name="prompt_source_user_id"),
            *[models.Index(fields=[f"lsh_band_{band}"], name=f"prompt_lsh_band_{band}") for band in range(4)],
        ]
        constraints = [
            models.UniqueConstraint(fields=["dedup_key"], condition=~Q(dedup_key=""), name="unique_prompt_dedup_key"),
            models.CheckConstraint(condition=~Q(text=""), name="prompt_text_not_empty"),
        ]

    def __str__(self):
        return self.text[:80]


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        SFT = "sft", "SFT"
        REWARD = "reward", "Reward model"
        POLICY = "policy", "Policy"
        EXTERNAL = "external", "External endpoint"

    class Status(models.TextChoices):
        TRAINING = "training"
        READY = "ready"
        ACTIVE = "active"
        RETIRED = "retired"
        REJECTED = "rejected", "Rejected by the gate"
        AWAITING = "awaiting", "Awaiting human evaluation"
        FAILED = "failed"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.TRAINING)
    artifact_path = models.CharField(max_length=500, blank=True)
    base_path = models.CharField(
        max_length=500, blank=True,
        help_text="For a LoRA adapter: the full-weights folder it applies to; empty for full weights.")
    adapter = models.JSONField(default=dict, blank=True, help_text="For a LoRA adapter: its rank, alpha and layers.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    training_run = models.OneToOneField(
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version"
    )
    metrics = models.JSONField(default=dict, blank=True)
    status_reason = models.TextField(blank=True, help_text="Why it was activated, rejected or failed.")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    # An external version is a model someone else serves behind an OpenAI-compatible endpoint: a baseline to
    # evaluate against, never trained or activated here.
    endpoint_url = models.CharField(max_length=500, blank=True, help_text="Its OpenAI-compatible base URL.")
    endpoint_model = models.CharField(max_length=200, blank=True, help_text="The model name the endpoint serves.")
    endpoint_key_env = models.CharField(
        max_length=100, blank=True, help_text="The environment variable that holds its API key, if it needs one.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(status="active"), name="one_active_model_version_per_kind"
            ),
            models.UniqueConstraint(fields=["kind", "name"], name="unique_model_version_name_per_kind"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.name}"

    def get_absolute_url(self):
        return reverse("model-version", args=[self.pk])

    @property
    def base_version(self):
        """The version whose weights an adapter applies to, when one is registered; None for the first base model."""
        if not self.base_path:
            return None
        base = Path(self.base_path).resolve()
        versions = ModelVersion.objects.exclude(artifact_path="").exclude(pk=self.pk).order_by("created_at")
        return next((v for v in versions.only("kind", "name", "artifact_path")
                     if Path(v.artifact_path).resolve() == base), None)

    @property
    def served_name(self):
        """The name a sampling endpoint serves it under: its kind and name, unique across kinds (policy-ppo-12)."""
        return f"{self.kind}-{self.name}"


class Completion(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="completions")
    text = models.TextField()
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="completions"
    )
    sampling_params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.text[:80]
