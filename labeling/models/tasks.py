from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Task(models.Model):
    class Kind(models.TextChoices):
        WRITE_PROMPT = "write_prompt", "Write a prompt"
        WRITE_DEMONSTRATION = "write_demonstration", "Write a demonstration"
        RANK_COMPLETIONS = "rank_completions", "Rank completions"
        ANNOTATE_PROMPT = "annotate_prompt", "Annotate a prompt"
        CHAT = "chat", "Chat with the model"

    class State(models.TextChoices):
        OPEN = "open"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    prompt = models.ForeignKey("Prompt", null=True, blank=True, on_delete=models.CASCADE, related_name="tasks")
    completions = models.ManyToManyField("Completion", blank=True, related_name="tasks")
    params = models.JSONField(
        default=dict, blank=True,
        help_text='Kind-specific instructions: the prompt style to write; a chat\'s {"system_prompt": "..."}.'
    )
    required_annotations = models.PositiveSmallIntegerField(default=1)
    priority = models.SmallIntegerField(default=0, help_text="Higher first.")
    is_gold = models.BooleanField(default=False, help_text="Known answer: mixed into the queue and scored silently.")
    is_practice = models.BooleanField(
        default=False, help_text="An onboarding exercise: a gold task with feedback, given only to new labelers."
    )
    gold_answer = models.JSONField(
        null=True, blank=True,
        help_text='Ranking: {"groups": [[completion id], ...]}; annotation: {"flags": [...], "use_case": "..."}; '
                  'with an optional "explanation" shown after practice.',
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    evaluation = models.ForeignKey(
        "Evaluation", null=True, blank=True, on_delete=models.CASCADE, related_name="tasks",
        help_text="A ranking that judges model versions for an evaluation; never training data unless asked for.",
    )
    consensus = models.JSONField(
        null=True, blank=True,
        help_text="For a ranking task done by several labelers: their consensus by Tideman's ranked pairs.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "created_at"]
        # The queue's order, over open tasks only: the next-task query walks it and stops at the first fit.
        indexes = [
            models.Index(
                fields=["-priority", "created_at", "id"], condition=Q(state="open"), name="open_task_queue"
            ),
            # A lease walks one kind's queue at a time (QUEUE_SHARES).
            models.Index(
                fields=["kind", "-priority", "created_at", "id"], condition=Q(state="open"), name="open_task_queue_kind"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(required_annotations__gte=1), name="task_needs_an_annotation"),
            models.CheckConstraint(
                condition=Q(kind__in=["write_prompt", "chat"]) | Q(prompt__isnull=False),
                name="task_has_prompt_unless_writing_one_or_chatting",
            ),
            models.CheckConstraint(
                condition=Q(is_gold=False) | Q(gold_answer__isnull=False), name="gold_task_has_answer"
            ),
            models.CheckConstraint(condition=Q(is_practice=False) | Q(is_gold=True), name="practice_task_is_gold"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk}"


class Assignment(models.Model):
    """One labeler's lease on one task, and what became of it."""

    class State(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    class SkipReason(models.TextChoices):
        UNCLEAR_INTENT = "unclear_intent", "Unclear intent"
        NOT_MY_LANGUAGE = "not_my_language", "Not my language"
        BEYOND_COMFORT = "beyond_comfort", "Beyond my comfort"
        BROKEN_OUTPUT = "broken_output", "Broken or empty output"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    leased_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField()
    submitted_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, blank=True)
    display_order = models.JSONField(
        default=list, blank=True, help_text="Completion ids in the order this labeler sees them."
    )
    time_spent_seconds = models.PositiveIntegerField(default=0)
    gold_score = models.FloatField(
        null=True, blank=True, help_text="On a gold task: agreement with the gold answer, 0 to 1, scored silently."
    )

    class Meta:
        ordering = ["-leased_at"]
        constraints = [
            models.UniqueConstraint(fields=["task", "labeler"], name="one_assignment_per_task_and_labeler"),
            models.CheckConstraint(
                condition=~Q(state="skipped") | ~Q(skip_reason=""), name="skipped_assignment_has_reason"
            ),
        ]
        indexes = [models.Index(fields=["state", "lease_expires_at"], name="assignment_lease_expiry")]

    def __str__(self):
        return f"{self.task} for {self.labeler}"
