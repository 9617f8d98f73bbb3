from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    """A labeler's chat with the active policy, in one chat task's lease.

    When it ends, one model-written message is chosen at random (`choice_seed` makes the choice
    reproducible) and becomes a prompt to rank: the conversation before it, its original reply and
    alternatives sampled from the same context.
    """

    class State(models.TextChoices):
        OPEN = "open"
        ENDED = "ended"

    assignment = models.OneToOneField("Assignment", on_delete=models.CASCADE, related_name="conversation")
    labeler = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="conversations")
    system_prompt = models.TextField(blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    choice_seed = models.BigIntegerField(null=True, blank=True, help_text="Seed of the random choice of a message.")
    chosen_message = models.OneToOneField(
        "ChatMessage", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The model-written message whose alternatives are ranked.",
    )
    ranking_prompt = models.OneToOneField(
        "Prompt", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversation",
        help_text="The conversation up to the chosen message, as a prompt whose completions are ranked.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(state="open") | Q(ended_at__isnull=False), name="ended_chat_has_time"),
        ]

    def __str__(self):
        return f"Conversation #{self.pk} of {self.labeler}"

    def turns(self, messages, *, before=None):
        """Chat turns: the system prompt, then `messages` (the current ones, in order) before position `before`."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": m.role, "content": m.text} for m in messages if before is None or m.position < before]


class ChatMessage(models.Model):
    """One turn of a conversation. A regenerated reply stays, superseded, beside the one that replaced it."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for the model"
        STREAMING = "streaming"
        DONE = "done"
        STOPPED = "stopped", "Stopped by the labeler"
        FAILED = "failed"

    FINAL = (State.DONE, State.STOPPED, State.FAILED)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    position = models.PositiveSmallIntegerField(help_text="1 for the first turn after the system prompt.")
    role = models.CharField(max_length=9, choices=Role.choices)
    text = models.TextField(blank=True)
    rewritten = models.BooleanField(default=False, help_text="The labeler rewrote the model's reply.")
    original_text = models.TextField(blank=True, help_text="The model's reply, where the labeler rewrote it.")
    state = models.CharField(max_length=9, choices=State.choices, default=State.DONE)
    superseded = models.BooleanField(default=False, help_text="A reply the labeler regenerated.")
    model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="chat_messages"
    )
    sampling_params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True, help_text="Why the model could not answer.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["conversation", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "position"], condition=Q(superseded=False),
                                    name="one_current_message_per_position"),
            models.CheckConstraint(condition=Q(role="assistant") | Q(state="done"), name="user_message_is_done"),
        ]

    def __str__(self):
        return f"{self.role} #{self.position} of conversation #{self.conversation_id}"

    @property
    def model_text(self):
        """What the model wrote, before any rewrite."""
        return self.original_text if self.rewritten else self.text


class TurnSuggestion(models.Model):
    """A reply the model suggests for one assistant turn of a demonstration, where the labeler plays both sides.

    `turns` are the labeler's turns before it (after the prompt's); the chat worker writes it as it
    writes a chat's reply, and the demonstration records, per turn, which model suggested what and
    whether the labeler used it.
    """

    State = ChatMessage.State

    assignment = models.ForeignKey("Assignment", on_delete=models.CASCADE, related_name="suggestions")
    turns = models.JSONField(default=list, help_text="The labeler's turns before the suggested one.")
    text = models.TextField(blank=True)
    state = models.CharField(max_length=9, choices=State.choices, default=State.PENDING)
    model_version = models.ForeignKey("ModelVersion", on_delete=models.PROTECT, related_name="+")
    sampling_params = models.JSONField(default=dict, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=16, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"Suggestion for turn {self.turn} of {self.assignment}"

    @property
    def turn(self):
        """The suggested turn's number among the labeler's turns, from 1."""
        return len(self.turns) + 1
