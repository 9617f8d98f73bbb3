from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from .intake import JobState


class Export(models.Model):
    """An immutable dataset snapshot: a file and the manifest that describes it."""

    class Kind(models.TextChoices):
        PREFERENCE_PAIRS = "preference_pairs", "Preference pairs (TRL)"
        RANKINGS = "rankings", "K-way rankings"
        SFT = "sft", "SFT demonstrations"
        PPO_PROMPTS = "ppo_prompts", "PPO prompts"
        ANNOTATIONS = "annotations", "Prompt annotations"
        OASST = "oasst", "Open Assistant message trees"
        DIALOGUES = "dialogues", "Dialogue SFT turns"
        HUMAN_EVAL = "human_eval", "Human evaluation judgments"
        LABELER_STATS = "labeler_stats", "Labeler statistics"

    class Format(models.TextChoices):
        JSONL = "jsonl", "JSONL"
        JSONL_GZ = "jsonl.gz", "JSONL.gz"
        PARQUET = "parquet", "Parquet"
        CSV = "csv", "CSV"

    State = JobState

    kind = models.CharField(max_length=20, choices=Kind.choices)
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.JSONL)
    filters = models.JSONField(default=dict, blank=True, help_text="Filters and options, as checked.")
    with_identities = models.BooleanField(
        default=False, help_text="Labelers by username instead of pseudonym; only an admin may ask for it."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.FloatField(default=0)
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to="exports/", blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="export_progress_is_a_share")
        ]

    def __str__(self):
        return f"{self.get_kind_display()} export #{self.pk}"

    def get_absolute_url(self):
        return reverse("export-detail", args=[self.pk])

    @property
    def is_finished(self):
        return self.state in (self.State.SUCCEEDED, self.State.FAILED)

    @property
    def filename(self):
        return f"export-{self.pk}-{self.kind}.{self.format}"


class TrainingRun(models.Model):
    """One training job: export snapshot -> `python -m rlhf` -> model version -> evaluation gate."""

    class Kind(models.TextChoices):
        SFT = "sft", "Supervised fine-tuning"
        REWARD = "reward", "Reward model"
        PPO = "ppo", "PPO policy"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    LIVE = (State.QUEUED, State.RUNNING)

    kind = models.CharField(max_length=8, choices=Kind.choices)
    trigger = models.CharField(max_length=100, blank=True,
                               help_text="What started it: a person, or the rule that did.")
    config = models.JSONField(default=dict, blank=True, help_text="The rlhf options it ran with.")
    export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.PROTECT, related_name="training_runs",
        help_text="The training data snapshot.",
    )
    valid_export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The validation snapshot the gate compares on.",
    )
    base_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The model version training starts from.",
    )
    reward_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="For a policy: the reward model it optimises against.",
    )
    reference_model = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="For a policy: the SFT model that is its KL reference (and, by default, its start).",
    )
    ptx_export = models.ForeignKey(
        Export, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="For a policy: the demonstrations its pretraining (ptx) term trains on.",
    )
    ptx_path = models.CharField(
        max_length=500, blank=True, help_text="For a policy: the pretraining corpus of its ptx term, when one is set."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="The final metrics and the gate's evaluation.")
    history = models.JSONField(default=list, blank=True, help_text="Logged metrics per step, for the curves.")
    gate = models.JSONField(default=dict, blank=True, help_text='{"passed": bool, "reason": "..."}')
    log = models.TextField(blank=True, help_text="The tail of the training log.")
    error = models.TextField(blank=True)
    output_path = models.CharField(max_length=500, blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Two beats, or a beat and a person, can never start two runs of one kind at once.
            models.UniqueConstraint(
                fields=["kind"], condition=Q(state__in=["queued", "running"]), name="one_live_training_run_per_kind"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} run #{self.pk}"

    def get_absolute_url(self):
        return reverse("training-run", args=[self.pk])

    @property
    def is_finished(self):
        return self.state not in self.LIVE

    @property
    def progress(self):
        """The share of optimizer steps done, 0 to 1."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 0.0

    @property
    def model_kind(self):
        return {self.Kind.SFT: "sft", self.Kind.REWARD: "reward", self.Kind.PPO: "policy"}[self.kind]

    def eta_seconds(self):
        """Seconds left at the pace so far, or None before the first step."""
        if self.state != self.State.RUNNING or not self.step or not self.started_at or not self.total_steps:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return max(0, elapsed / self.step * (self.total_steps - self.step))


class Evaluation(models.Model):
    """Humans judge a model version against baselines on held-out prompts: one sample per model per prompt, shown
    blind and shuffled as a ranking task; the judgments give win rates, ratings and flags per model."""

    class State(models.TextChoices):
        SAMPLING = "sampling", "Sampling the outputs"
        OPEN = "open", "Open for judgments"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    candidate = models.ForeignKey("ModelVersion", on_delete=models.PROTECT, related_name="evaluations")
    baselines = models.ManyToManyField("ModelVersion", related_name="+")
    prompt_ids = models.JSONField(default=list, help_text="The test-split prompts chosen, in order.")
    held_out_labelers = models.BooleanField(
        default=False, help_text="Only labelers with no training data in the candidate's snapshot judge it.")
    gates = models.BooleanField(
        default=False, help_text="The human gate: its verdict activates the candidate or refuses it.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.SAMPLING)
    sampling_params = models.JSONField(default=dict, blank=True)
    trigger = models.CharField(max_length=100, blank=True, help_text="Who or what started it.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    error = models.TextField(blank=True, help_text="Why sampling is waiting, when it is.")
    reward_model = models.ForeignKey("ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="The reward model that scored the same outputs.")
    reward_scores = models.JSONField(default=dict, blank=True, help_text="Its score of each output: {completion id: "
                                                                         "score}.")
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Evaluation #{self.pk} of {self.candidate}"

    def get_absolute_url(self):
        return reverse("evaluation", args=[self.pk])
