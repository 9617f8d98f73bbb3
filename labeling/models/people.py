from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse


class Role(models.TextChoices):
    """Roles are Django groups of these names, created by a migration."""

    LABELER = "labeler", "Labeler"
    RESEARCHER = "researcher", "Researcher"
    ADMIN = "admin", "Admin"


class Guidelines(models.Model):
    """A published version of the labeling guidelines, in markdown."""

    version = models.PositiveIntegerField(unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown.")
    published_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-version"]
        verbose_name_plural = "guidelines"

    def __str__(self):
        return f"v{self.version}: {self.title}"


class LabelerProfile(models.Model):
    class Status(models.TextChoices):
        INVITED = "invited"
        SCREENING = "screening"
        SCREENED = "screened"
        ONBOARDING = "onboarding"
        ACTIVE = "active"
        PAUSED = "paused"
        OFFBOARDED = "offboarded"
        REJECTED = "rejected"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labeler_profile")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INVITED, db_index=True)
    status_reason = models.TextField(blank=True)
    languages = models.JSONField(default=list, blank=True, help_text='Language codes, e.g. ["en", "fr"].')
    task_kinds = models.JSONField(
        default=list, blank=True, help_text="Task kinds this person may receive; empty means every kind."
    )
    self_assessment = models.JSONField(
        default=dict, blank=True, help_text="Topics and cultural groups the person is comfortable judging."
    )
    flag_agreement = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)])
    ranking_agreement = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(1)]
    )
    demonstration_score = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(7)]
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    guidelines_acknowledged = models.ForeignKey(Guidelines, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(flag_agreement__isnull=True) | Q(flag_agreement__gte=0, flag_agreement__lte=1),
                name="profile_flag_agreement_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(ranking_agreement__isnull=True) | Q(ranking_agreement__gte=0, ranking_agreement__lte=1),
                name="profile_ranking_agreement_is_a_share",
            ),
            models.CheckConstraint(
                condition=Q(demonstration_score__isnull=True)
                | Q(demonstration_score__gte=1, demonstration_score__lte=7),
                name="profile_demonstration_score_1_to_7",
            ),
        ]

    def __str__(self):
        return f"{self.user} ({self.status})"

    @property
    def is_active_labeler(self):
        return self.status == self.Status.ACTIVE


class Invitation(models.Model):
    """A single-use link that lets one person make an account with a role; it expires."""

    token = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.LABELER)
    note = models.CharField(
        max_length=200, blank=True, help_text="For the admins: who it is for. Never shown to reviewers."
    )
    expires_at = models.DateTimeField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    used_by = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="invitation")
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Invitation #{self.pk} ({self.get_role_display()})"

    def get_absolute_url(self):
        return reverse("join", args=[self.token])


class StatusChange(models.Model):
    """Every change of a labeler's status, with who made it, when and why."""

    profile = models.ForeignKey("LabelerProfile", on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=16)
    new_status = models.CharField(max_length=16)
    reason = models.TextField(blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self):
        return f"{self.old_status} → {self.new_status}"


class ScreeningItem(models.Model):
    """One question of the screening test, authored by researchers."""

    # The sensitive-content categories of InstructGPT's screening (Ouyang et al. 2022, appendix B.1).
    SENSITIVE_FLAGS = ["toxic", "sexual", "violent", "self_harm", "hateful", "judgemental", "political",
                       "personal_data"]

    class Part(models.TextChoices):
        SENSITIVE_FLAGS = "sensitive_flags", "Flag sensitive content"
        RANKING = "ranking", "Rank completions"
        DEMONSTRATION = "demonstration", "Write a demonstration"
        SELF_ASSESSMENT = "self_assessment", "Self-assessment"

    part = models.CharField(max_length=20, choices=Part.choices)
    prompt_text = models.TextField(blank=True)
    completions = models.JSONField(default=list, blank=True, help_text="Completion texts shown with the prompt.")
    gold = models.JSONField(
        default=dict, blank=True, help_text="The researchers' answer: flags per completion, or a ranking."
    )
    explanation = models.TextField(blank=True, help_text="Why the researchers' answer is right.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["part", "id"]

    def __str__(self):
        return f"{self.get_part_display()} #{self.pk}"


class ScreeningAttempt(models.Model):
    class Decision(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    profile = models.ForeignKey(LabelerProfile, on_delete=models.CASCADE, related_name="screening_attempts")
    answers = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    flag_agreement = models.FloatField(null=True, blank=True)
    ranking_agreement = models.FloatField(null=True, blank=True)
    demonstration_score = models.FloatField(null=True, blank=True)
    graded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.PENDING)
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(demonstration_score__isnull=True)
                | Q(demonstration_score__gte=1, demonstration_score__lte=7),
                name="attempt_demonstration_score_1_to_7",
            ),
        ]

    def __str__(self):
        return f"Screening of {self.profile.user} ({self.decision})"
