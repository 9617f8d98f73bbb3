from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views, work

router = SimpleRouter()
router.register("imports", views.ImportJobViewSet, basename="api-import")
router.register("exports", views.ExportViewSet, basename="api-export")
router.register("model-versions", views.ModelVersionViewSet, basename="api-model-version")
router.register("training-runs", views.TrainingRunViewSet, basename="api-training-run")

urlpatterns = [
    path("prompts/", views.PromptListCreate.as_view(), name="api-prompts"),
    path("stats/", views.statistics, name="api-stats"),
    path("sampler/", views.sampler, name="api-sampler"),
    path("work/next/", work.work_next, name="api-work-next"),
    path("work/mine/", work.MyWork.as_view(), name="api-my-work"),
    path("work/assignments/<int:pk>/", work.assignment_detail, name="api-assignment"),
    path("work/assignments/<int:pk>/submit/", work.assignment_submit, name="api-assignment-submit"),
    path("work/assignments/<int:pk>/skip/", work.assignment_skip, name="api-assignment-skip"),
    *router.urls,
]
