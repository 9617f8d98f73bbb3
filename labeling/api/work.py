"""The labeler's flow over the API: next task, submit, skip, my work. Every endpoint is scoped to the caller."""

from django.core.exceptions import ValidationError
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from .. import selectors, services
from ..models import Assignment, Task
from ..permissions import IsLabeler


class CompletionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class SuggestionSerializer(serializers.Serializer):
    text = serializers.CharField()
    model_version = serializers.CharField()


class AssignmentSerializer(serializers.Serializer):
    """Plain fields rather than a ModelSerializer: this runs on every next and submit."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(source="task.kind", choices=Task.Kind.choices)
    state = serializers.ChoiceField(choices=Assignment.State.choices)
    prompt = serializers.SerializerMethodField()
    completions = serializers.SerializerMethodField()
    params = serializers.JSONField(source="task.params")
    leased_at = serializers.DateTimeField()
    lease_expires_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    skip_reason = serializers.ChoiceField(choices=Assignment.SkipReason.choices, allow_blank=True)
    time_spent_seconds = serializers.IntegerField()
    suggestion = serializers.SerializerMethodField()
    conversation = serializers.SerializerMethodField()

    def get_prompt(self, assignment) -> dict | None:
        prompt = assignment.task.prompt
        if prompt is None:
            return None
        return {"id": prompt.pk, "text": prompt.text, "turns": prompt.turns, "language": prompt.language}

    @extend_schema_field(CompletionSerializer(many=True))
    def get_completions(self, assignment):
        """In the order shown to this labeler; other labelers see another order."""
        return [{"id": c.pk, "text": c.text} for c in selectors.completions_in_order(assignment)]

    @extend_schema_field(SuggestionSerializer(allow_null=True))
    def get_suggestion(self, assignment):
        """For demonstrations: a reply by the active policy to start from; send `used_model_suggestion` if you do."""
        if assignment.task.kind != Task.Kind.WRITE_DEMONSTRATION:
            return None
        suggestion = selectors.model_suggestion(assignment.task.prompt)
        if suggestion is None:
            return None
        return {"text": suggestion.text, "model_version": suggestion.model_version.name}


    def get_conversation(self, assignment) -> int | None:
        """For chats: the conversation's id once started (POST .../chat/ starts it; POST /api/work/chats/<id>/end/
        ends and submits it)."""
        if assignment.task.kind != Task.Kind.CHAT:
            return None
        conversation = getattr(assignment, "conversation", None)
        return conversation.pk if conversation else None

    def to_representation(self, assignment):
        """The fields above, written out in their order: DRF's walk through them, field object by field object, cost
        as much as the lease's queries. A test holds this to DRF's own rendering of the same fields."""
        task, moment = assignment.task, _MOMENT.to_representation
        return {
            "id": assignment.pk,
            "kind": task.kind,
            "state": assignment.state,
            "prompt": self.get_prompt(assignment),
            "completions": self.get_completions(assignment),
            "params": task.params,
            "leased_at": moment(assignment.leased_at),
            "lease_expires_at": moment(assignment.lease_expires_at),
            "submitted_at": moment(assignment.submitted_at),
            "skip_reason": assignment.skip_reason,
            "time_spent_seconds": assignment.time_spent_seconds,
            "suggestion": self.get_suggestion(assignment),
            "conversation": self.get_conversation(assignment),
        }


_MOMENT = serializers.DateTimeField()  # renders a moment as the API does everywhere: ISO 8601 in TIME_ZONE


class SubmitSerializer(serializers.Serializer):
    """The answer; which fields it needs depends on the task's kind."""

    time_spent_seconds = serializers.IntegerField(min_value=0, required=False, default=0)
    # write_prompt
    style = serializers.ChoiceField(choices=["plain", "few_shot", "user_based"], required=False)
    text = serializers.CharField(required=False, trim_whitespace=False)
    # write_prompt and annotate_prompt
    use_case = serializers.CharField(required=False, allow_blank=True)
    language = serializers.CharField(required=False)
    # write_demonstration
    # Values pass through as sent: the service judges each turn and names the one that is wrong.
    turns = serializers.ListField(child=serializers.DictField(), required=False,
                                  help_text='The turns after the prompt, ending with the assistant\'s: '
                                            '[{"role": "assistant", "content": "..."}, ...].')
    used_model_suggestion = serializers.BooleanField(required=False, default=False)
    suggestions_used = serializers.ListField(child=serializers.IntegerField(), required=False,
                                             help_text="The ids of the suggestions for your turns that you used.")
    # rank_completions
    groups = serializers.JSONField(required=False, help_text="Completion ids as ordered groups of ties, best first.")
    ratings = serializers.JSONField(required=False, help_text='{"<completion id>": {"rating": 1-7, flag: bool}}')
    none_acceptable = serializers.BooleanField(required=False, default=False)
    # annotate_prompt
    flags = serializers.DictField(child=serializers.BooleanField(), required=False)
    contains_personal_data = serializers.BooleanField(required=False, default=False)


# The service for each kind, and the answer fields it takes (the first ones are required).
SUBMITTERS = {
    Task.Kind.WRITE_PROMPT: (services.prompt_write, ["style", "text"], ["use_case", "language"]),
    Task.Kind.WRITE_DEMONSTRATION: (
        services.demonstration_write, ["turns"], ["used_model_suggestion", "suggestions_used"]
    ),
    Task.Kind.RANK_COMPLETIONS: (services.ranking_submit, ["groups", "ratings"], ["none_acceptable"]),
    Task.Kind.ANNOTATE_PROMPT: (
        services.annotation_submit, ["use_case", "language"], ["flags", "contains_personal_data"]
    ),
}


class SkipSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=Assignment.SkipReason.choices)


@extend_schema(request=None, responses={200: AssignmentSerializer, 204: None})
@api_view(["POST"])
@permission_classes([IsLabeler])
def work_next(request):
    """Your live lease, or a new one on the next task for you; 204 when nothing waits."""
    assignment = services.task_lease_next(labeler=request.user)
    if assignment is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    return Response(AssignmentSerializer(assignment).data)


@extend_schema(responses=AssignmentSerializer)
@api_view(["GET"])
@permission_classes([IsLabeler])
def assignment_detail(request, pk):
    return Response(AssignmentSerializer(selectors.assignment_of(request.user, pk)).data)


@extend_schema(request=SubmitSerializer, responses=AssignmentSerializer)
@api_view(["POST"])
@permission_classes([IsLabeler])
def assignment_submit(request, pk):
    """Submit the answer. Submitting again returns the first result and stores nothing new."""
    assignment = selectors.assignment_to_answer(request.user, pk)
    body = SubmitSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    if assignment.task_kind == Task.Kind.CHAT:
        raise ValidationError("A chat is submitted by ending it: POST /api/work/chats/<conversation id>/end/.")
    submit, required, optional = SUBMITTERS[assignment.task_kind]
    missing = [name for name in required if name not in body.validated_data]
    if missing:
        raise serializers.ValidationError({name: "This field is required for this kind of task." for name in missing})
    answer = {name: body.validated_data[name] for name in required + optional if name in body.validated_data}
    if "flags" in optional:
        answer.setdefault("flags", {})
    assignment = submit(assignment=assignment, labeler=request.user,
                        time_spent_seconds=body.validated_data["time_spent_seconds"], **answer)
    return Response(AssignmentSerializer(assignment).data)


@extend_schema(request=SkipSerializer, responses=AssignmentSerializer)
@api_view(["POST"])
@permission_classes([IsLabeler])
def assignment_skip(request, pk):
    assignment = selectors.assignment_to_answer(request.user, pk)
    body = SkipSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    assignment = services.assignment_skip(assignment=assignment, labeler=request.user,
                                          reason=body.validated_data["reason"])
    return Response(AssignmentSerializer(assignment).data)


class MyWork(generics.ListAPIView):
    """Your submitted and skipped work, newest first."""

    permission_classes = [IsLabeler]
    serializer_class = AssignmentSerializer

    def get_queryset(self):
        return selectors.work_of(self.request.user)

