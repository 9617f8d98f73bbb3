"""Chats with the model over the API: start, send a turn, read the reply as it streams, stop, regenerate,
rewrite, end. The chat page uses the same endpoints."""

from django.conf import settings
from django.http import StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import renderers, serializers, status
from rest_framework.decorators import api_view, permission_classes, renderer_classes
from rest_framework.response import Response

from .. import selectors, services, streams
from ..models import ChatMessage, Conversation
from ..permissions import IsLabeler


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


class EventStreamRenderer(renderers.BaseRenderer):
    """text/event-stream, for the stream endpoint; an error there is one `error` event holding its JSON."""

    media_type = "text/event-stream"
    format = "event-stream"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return streams.event("error", data).encode()


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


@extend_schema(request=TurnSerializer, responses={201: ChatMessageSerializer})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_send(request, pk):
    """Your next turn. The answer is the model's reply, pending: read it from its `stream`."""
    body = TurnSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    reply = services.chat_send(conversation=selectors.conversation_of(request.user, pk), labeler=request.user,
                               **body.validated_data)
    return Response(ChatMessageSerializer(reply).data, status=status.HTTP_201_CREATED)


@extend_schema(request=EndSerializer, responses=ConversationSerializer)
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


@extend_schema(
    parameters=[OpenApiParameter("offset", int, description="Start from this character of the reply (default 0); "
                                                          "a Last-Event-ID header does the same.")],
    responses={(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=(
        "Server-sent events: `text` {offset, text} for each new part (its id is the offset after it), `waiting` "
        "while no worker has taken the reply, and last `end` {text, state, finish_reason, error, model_version} "
        "with the stored reply. The connection closes after CHAT_STREAM_SECONDS; reconnect with the last id."))},
)
@api_view(["GET"])
@renderer_classes([renderers.JSONRenderer, EventStreamRenderer])
@permission_classes([IsLabeler])
def chat_message_stream(request, pk):
    """The reply as the model writes it. The request holds no database connection while it waits."""
    message = selectors.chat_message_of(request.user, pk)
    offset = request.headers.get("Last-Event-ID") or request.query_params.get("offset") or 0
    try:
        offset = int(offset)
    except ValueError:
        return Response({"detail": f"offset must be a whole number of characters, not {offset!r}."},
                        status=status.HTTP_400_BAD_REQUEST)
    events = streams.reply_events(streams.ReplyStream(message), streams.snapshot(message), offset,
                                  seconds=settings.CHAT_STREAM_SECONDS)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx passes each event on at once
    return response


@extend_schema(request=None, responses=ChatMessageSerializer)
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_stop(request, pk):
    """Stop the reply where it is. Stopping a finished reply changes nothing."""
    message = services.chat_stop(message=selectors.chat_message_of(request.user, pk), labeler=request.user)
    return Response(ChatMessageSerializer(message).data)


@extend_schema(request=None, responses={201: ChatMessageSerializer})
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_regenerate(request, pk):
    """A new reply in place of the latest one, which is kept aside."""
    reply = services.chat_regenerate(message=selectors.chat_message_of(request.user, pk), labeler=request.user)
    return Response(ChatMessageSerializer(reply).data, status=status.HTTP_201_CREATED)


@extend_schema(request=RewriteSerializer, responses=ChatMessageSerializer)
@api_view(["POST"])
@permission_classes([IsLabeler])
def chat_message_rewrite(request, pk):
    """Your version of the latest reply; the model's is kept as `original_text`."""
    body = RewriteSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    message = services.chat_rewrite(message=selectors.chat_message_of(request.user, pk), labeler=request.user,
                                    text=body.validated_data["text"])
    return Response(ChatMessageSerializer(message).data)
