from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("imports", views.ImportJobViewSet, basename="api-import")

urlpatterns = [
    path("prompts/", views.PromptListCreate.as_view(), name="api-prompts"),
    *router.urls,
]
