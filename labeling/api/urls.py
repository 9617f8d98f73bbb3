from django.urls import path
from rest_framework.routers import SimpleRouter

from . import chat, evaluations, views, work

router = SimpleRouter()
router.register("imports", views.ImportJobViewSet, basename="api-import")
router.register("exports", views.ExportViewSet, basename="api-export")
router.register("model-versions", views.ModelVersionViewSet, basename="api-model-version")
router.register("training-runs", views.TrainingRunViewSet, basename="api-training-run")
router.register("evaluations", evaluations.EvaluationViewSet, basename="api-evaluation")

urlpatterns = [
    path("prompts/", views.PromptListCreate.as_view(), name="api-prompts"),
    path("stats/", views.statistics, name="api-stats"),
    path("sampler/", views.sampler, name="api-sampler"),
    path("work/next/", work.work_next, name="api-work-next"),
    path("work/mine/", work.MyWork.as_view(), name="api-my-work"),
    path("work/assignments/<int:pk>/", work.assignment_detail, name="api-assignment"),
    path("work/assignments/<int:pk>/submit/", work.assignment_submit, name="api-assignment-submit"),
    path("work/assignments/<int:pk>/skip/", work.assignment_skip, name="api-assignment-skip"),
    path("work/assignments/<int:pk>/chat/", chat.chat_start, name="api-chat-start"),
    path("work/chats/<int:pk>/", chat.chat_detail, name="api-chat"),
    path("work/chats/<int:pk>/turns/", chat.chat_send, name="api-chat-send"),
    path("work/chats/<int:pk>/end/", chat.chat_end, name="api-chat-end"),
    path("work/chat-messages/<int:pk>/", chat.chat_message_detail, name="api-chat-message"),
    path("work/chat-messages/<int:pk>/stream/", chat.chat_message_stream, name="api-chat-message-stream"),
    path("work/chat-messages/<int:pk>/stop/", chat.chat_message_stop, name="api-chat-message-stop"),
    path("work/chat-messages/<int:pk>/regenerate/", chat.chat_message_regenerate, name="api-chat-message-regenerate"),
    path("work/chat-messages/<int:pk>/rewrite/", chat.chat_message_rewrite, name="api-chat-message-rewrite"),
    path("work/assignments/<int:pk>/suggestions/", chat.suggestion_request, name="api-suggestion-request"),
    path("work/suggestions/<int:pk>/", chat.suggestion_detail, name="api-suggestion"),
    path("work/suggestions/<int:pk>/stream/", chat.suggestion_stream, name="api-suggestion-stream"),
    *router.urls,
]
