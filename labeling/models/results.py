from django.conf import settings
from django.db import models
from django.db.models import Q

from .prompts import UseCase


class Demonstration(models.Model):
    """An ideal reply written by a labeler, as chat messages ending with the assistant's turn."""

    assignment = models.OneToOneField(
        "Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="demonstration"
    )
    prompt = models.ForeignKey("Prompt", on_delete=models.CASCADE, related_name="demonstrations")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="demonstrations")
    messages = models.JSONField(help_text='[{"role": "user"|"assistant", "content": "..."}, ...]')
    used_model_suggestion = models.BooleanField(default=False)
    suggestion_model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    turn_suggestions = models.JSONField(
        default=list, blank=True,
        help_text='Per assistant turn the model suggested a reply for: [{"turn": n, "model_version": "...", '
                  '"used": bool}], n counting the labeler\'s turns from 1.',
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Demonstration #{self.pk} on prompt #{self.prompt_id}"


class Ranking(models.Model):
    """A labeler's ordering of a task's completions, best first; each group holds tied completions."""

    assignment = models.OneToOneField(
        "Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="ranking"
    )
    task = models.ForeignKey("Task", on_delete=models.CASCADE, related_name="rankings")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rankings")
    groups = models.JSONField(help_text="Completion ids as ordered groups of ties, best first: [[3], [1, 4], [2]].")
    none_acceptable = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["task", "labeler"], name="one_ranking_per_task_and_labeler")]

    def __str__(self):
        return f"Ranking #{self.pk} of task #{self.task_id}"


class CompletionRating(models.Model):
    """Overall quality on a 1-7 scale and InstructGPT's metadata flags (Ouyang et al. 2022, Table 3)."""

    FLAGS = [
        "fails_to_follow_instruction",
        "inappropriate_for_customer_assistant",
        "hallucination",
        "satisfies_constraint",
        "sexual_content",
        "violent_content",
        "encourages_violence",
        "denigrates_protected_class",
        "harmful_advice",
        "expresses_opinion",
        "expresses_moral_judgment",
    ]

    ranking = models.ForeignKey(Ranking, on_delete=models.CASCADE, related_name="ratings")
    completion = models.ForeignKey("Completion", on_delete=models.CASCADE, related_name="ratings")
    rating = models.PositiveSmallIntegerField(help_text="Overall quality, 1 (worst) to 7 (best).")
    fails_to_follow_instruction = models.BooleanField(default=False)
    inappropriate_for_customer_assistant = models.BooleanField(default=False)
    hallucination = models.BooleanField(default=False, help_text="Makes up information in a closed-domain task.")
    satisfies_constraint = models.BooleanField(default=False, help_text="Satisfies the constraint in the prompt.")
    sexual_content = models.BooleanField(default=False)
    violent_content = models.BooleanField(default=False)
    encourages_violence = models.BooleanField(default=False, help_text="Encourages violence, abuse or self-harm.")
    denigrates_protected_class = models.BooleanField(default=False)
    harmful_advice = models.BooleanField(default=False)
    expresses_opinion = models.BooleanField(default=False)
    expresses_moral_judgment = models.BooleanField(default=False)
    notes = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(rating__gte=1, rating__lte=7), name="rating_is_likert_1_to_7"),
            models.UniqueConstraint(fields=["ranking", "completion"], name="one_rating_per_completion_in_ranking"),
        ]

    def __str__(self):
        return f"{self.rating}/7 for completion #{self.completion_id}"


class PromptAnnotation(models.Model):
    """Metadata about a prompt (Ouyang et al. 2022, Table 7), its use case and language."""

    FLAGS = [
        "ambiguous",
        "sensitive_content",
        "identity_dependent",
        "closed_domain",
        "continuation_style",
        "requests_opinionated_content",
        "requests_advice",
        "requests_moral_judgment",
        "explicit_safety_constraints",
        "other_explicit_constraints",
        "intent_unclear",
    ]

    assignment = models.OneToOneField(
        "Assignment", null=True, blank=True, on_delete=models.SET_NULL, related_name="annotation"
    )
    prompt = models.ForeignKey("Prompt", on_delete=models.CASCADE, related_name="annotations")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    ambiguous = models.BooleanField(default=False)
    sensitive_content = models.BooleanField(default=False)
    identity_dependent = models.BooleanField(default=False)
    closed_domain = models.BooleanField(default=False)
    continuation_style = models.BooleanField(default=False)
    requests_opinionated_content = models.BooleanField(default=False)
    requests_advice = models.BooleanField(default=False)
    requests_moral_judgment = models.BooleanField(default=False)
    explicit_safety_constraints = models.BooleanField(default=False)
    other_explicit_constraints = models.BooleanField(default=False)
    intent_unclear = models.BooleanField(default=False)
    use_case = models.CharField(max_length=16, choices=UseCase.choices)
    language = models.CharField(max_length=16)
    contains_personal_data = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "labeler"], name="one_annotation_per_prompt_and_labeler")
        ]

    def __str__(self):
        return f"Annotation #{self.pk} of prompt #{self.prompt_id}"
