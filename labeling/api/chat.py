"""Chats with the model over the API: start, send a turn, read the reply as it streams, stop, regenerate,
rewrite, end. The chat page uses the same endpoints."""

from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import api_view, content_negotiation_class, permission_classes
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from .. import selectors, services, streams
from ..models import ChatMessage, Conversation
from ..permissions import IsLabeler
from .schema import CONFLICT


class ChatMessageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    position = serializers.IntegerField()
    role = serializers.ChoiceField(choices=ChatMessage.Role.choices)
    text = serializers.CharField(help_text="Empty while a reply is pending; the text so far comes from `stream`.")
    state = serializers.ChoiceField(choices=ChatMessage.State.choices)
    finish_reason = serializers.CharField(help_text='"stop", "length" (cut at the token cap) or "abort" (stopped).')
    rewritten = serializers.BooleanField()
    original_text = serializers.CharField(help_text="The model's reply, where you rewrote it.")
    model_version = serializers.CharField(source="model_version.name", allow_null=True, default=None)
    error = serializers.CharField(help_text="Why the model could not answer; regenerate to try again.")
    stream = serializers.SerializerMethodField(help_text="Server-sent events of a reply as it is written.")

    def get_stream(self, message) -> str | None:
        if message.role != ChatMessage.Role.ASSISTANT:
            return None
        return reverse("api-chat-message-stream", args=[message.pk])


class ConversationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    assignment = serializers.IntegerField(source="assignment_id")
    state = serializers.ChoiceField(choices=Conversation.State.choices)
    system_prompt = serializers.CharField()
    max_turns = serializers.SerializerMethodField()
    messages = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)

    def get_max_turns(self, conversation) -> int:
        """Your turns allowed in one chat."""
        return settings.CHAT_MAX_TURNS

    @extend_schema_field(ChatMessageSerializer(many=True))
    def get_messages(self, conversation):
        """The turns as they stand: a regenerated reply's earlier versions are left out."""
        return ChatMessageSerializer(selectors.chat_messages(conversation), many=True).data


class TurnSerializer(serializers.Serializer):
    # As sent: the service says what is wrong with a turn that is not text, as with any other.
    text = serializers.JSONField(help_text="Your turn, as text.")
    after = serializers.IntegerField(
        allow_null=True, help_text="The id of the last message you saw (null before the first turn): a turn from a "
                                   "client that is behind is refused with 409.")


class RewriteSerializer(serializers.Serializer):
    text = serializers.JSONField(help_text="The reply as you would have it, as text.")


class EndSerializer(serializers.Serializer):
    time_spent_seconds = serializers.IntegerField(min_value=0, required=False, default=0)


class JsonWhenRefused(BaseContentNegotiation):
    """A stream answers server-sent events, and JSON when it refuses, whatever the client said it accepts (an
    EventSource accepts text/event-stream alone)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(request=None, responses={200: ConversationSerializer})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_start(request, pk):
    """The conversation of your chat task: opened on the first call, the same one after."""
    conversation = services.chat_start(assignment=selectors.assignment_of(request.user, pk), labeler=request.user)
    return Response(ConversationSerializer(conversation).data)


@extend_schema(responses=ConversationSerializer)
@api_view(["GET"])
@permission_classes([IsLabeler])
def chat_detail(request, pk):
    return Response(ConversationSerializer(selectors.conversation_of(request.user, pk)).data)


@extend_schema(request=TurnSerializer, responses={201: ChatMessageSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_send(request, pk):
    """Your next turn. The answer is the model's reply, pending: read it from its `stream`."""
    body = TurnSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    reply = services.chat_send(conversation=selectors.conversation_of(request.user, pk), labeler=request.user,
                               **body.validated_data)
    return Response(ChatMessageSerializer(reply).data, status=status.HTTP_201_CREATED)


@extend_schema(request=EndSerializer, responses={200: ConversationSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_end(request, pk):
    """End the chat and submit its task. Ending again returns the ended chat."""
    body = EndSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    conversation = services.chat_end(conversation=selectors.conversation_of(request.user, pk), labeler=request.user,
                                     **body.validated_data)
    return Response(ConversationSerializer(conversation).data)


@extend_schema(responses=ChatMessageSerializer)
@api_view(["GET"])
@permission_classes([IsLabeler])
def chat_message_detail(request, pk):
    return Response(ChatMessageSerializer(selectors.chat_message_of(request.user, pk)).data)


EVENT = {
    "type": "object",
    "description": "One server-sent event.",
    "properties": {
        "event": {"type": "string", "enum": ["text", "waiting", "end"]},
        "data": {"type": "string", "description": "A JSON object: {offset, text} for `text`; {message} for "
                                                  "`waiting`; {text, state, finish_reason, error, model_version} "
                                                  "for `end`."},
        "id": {"type": "string", "description": "The offset in the reply after this event."},
        "retry": {"type": "integer", "description": "Milliseconds to wait before reconnecting."},
    },
}
STREAM_SCHEMA = extend_schema(
    parameters=[OpenApiParameter("offset", int, description="Start from this character of the reply (default 0); "
                                                          "a Last-Event-ID header does the same.")],
    responses={(200, "text/event-stream"): OpenApiResponse(EVENT, description=(
        "Server-sent events: `text` {offset, text} for each new part (its id is the offset after it), `waiting` "
        "while no worker has taken the reply, and last `end` {text, state, finish_reason, error, model_version} "
        "with the stored reply. The connection closes after CHAT_STREAM_SECONDS; reconnect with the last id."))},
)


@STREAM_SCHEMA
@api_view(["GET"])
@content_negotiation_class(JsonWhenRefused)
@permission_classes([IsLabeler])
def chat_message_stream(request, pk):
    """The reply as the model writes it. The request holds no database connection while it waits."""
    return _event_stream(request, selectors.chat_message_of(request.user, pk))


def _event_stream(request, reply):
    offset = request.headers.get("Last-Event-ID") or request.query_params.get("offset") or 0
    try:
        offset = int(offset)
    except ValueError:
        return Response({"detail": f"offset must be a whole number of characters, not {offset!r}."},
                        status=status.HTTP_400_BAD_REQUEST)
    # Each open stream holds a web thread: one person's many tabs (or a script) must not take them all.
    opened = streams.OpenStreams(request.user)
    if not opened.take():
        return Response({"detail": f"You have {settings.CHAT_STREAMS_PER_USER} replies streaming already; close "
                                   "a tab, or wait for one to end."}, status=status.HTTP_429_TOO_MANY_REQUESTS)
    events = streams.reply_events(streams.ReplyStream(reply), streams.snapshot(reply), offset,
                                  seconds=settings.CHAT_STREAM_SECONDS)
    response = StreamingHttpResponse(opened.held_while(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx passes each event on at once
    return response


@extend_schema(request=None, responses={200: ChatMessageSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_stop(request, pk):
    """Stop the reply where it is. Stopping a finished reply changes nothing."""
    message = services.chat_stop(message=selectors.chat_message_of(request.user, pk), labeler=request.user)
    return Response(ChatMessageSerializer(message).data)


@extend_schema(request=None, responses={201: ChatMessageSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_regenerate(request, pk):
    """A new reply in place of the latest one, which is kept aside."""
    reply = services.chat_regenerate(message=selectors.chat_message_of(request.user, pk), labeler=request.user)
    return Response(ChatMessageSerializer(reply).data, status=status.HTTP_201_CREATED)


@extend_schema(request=RewriteSerializer, responses={200: ChatMessageSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_rewrite(request, pk):
    """Your version of the latest reply; the model's is kept as `original_text`."""
    body = RewriteSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    message = services.chat_rewrite(message=selectors.chat_message_of(request.user, pk), labeler=request.user,
                                    text=body.validated_data["text"])
    return Response(ChatMessageSerializer(message).data)


# Suggestions for a demonstration's turns

class TurnSuggestionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    turn = serializers.IntegerField(help_text="The suggested turn's number among your turns, from 1.")
    text = serializers.CharField(help_text="Empty while pending; the text so far comes from `stream`.")
    state = serializers.ChoiceField(choices=ChatMessage.State.choices)
    finish_reason = serializers.CharField()
    model_version = serializers.CharField(source="model_version.name")
    error = serializers.CharField()
    stream = serializers.SerializerMethodField()

    def get_stream(self, suggestion) -> str:
        return reverse("api-suggestion-stream", args=[suggestion.pk])


class SuggestionRequestSerializer(serializers.Serializer):
    # As sent: the service names the turn that is wrong, as for a submitted demonstration.
    turns = serializers.JSONField(help_text='Your turns so far, after the prompt\'s, ending with the user\'s (none '
                                            'for the first reply): [{"role": "assistant", "content": "..."}, ...].')


@extend_schema(request=SuggestionRequestSerializer, responses={201: TurnSuggestionSerializer, **CONFLICT})
@api_view(["POST"])
@permission_classes([IsLabeler])
def suggestion_request(request, pk):
    """A reply the model suggests for the next assistant turn of your demonstration, written by a worker: read it
    from its `stream`. Send the ids of those you use as `suggestions_used` with the demonstration."""
    body = SuggestionRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    suggestion = services.suggestion_request(assignment=selectors.assignment_of(request.user, pk),
                                             labeler=request.user, turns=body.validated_data["turns"])
    return Response(TurnSuggestionSerializer(suggestion).data, status=status.HTTP_201_CREATED)


@extend_schema(responses=TurnSuggestionSerializer)
@api_view(["GET"])
@permission_classes([IsLabeler])
def suggestion_detail(request, pk):
    return Response(TurnSuggestionSerializer(selectors.suggestion_of(request.user, pk)).data)


@STREAM_SCHEMA
@api_view(["GET"])
@content_negotiation_class(JsonWhenRefused)
@permission_classes([IsLabeler])
def suggestion_stream(request, pk):
    """The suggestion as the model writes it."""
    return _event_stream(request, selectors.suggestion_of(request.user, pk))
