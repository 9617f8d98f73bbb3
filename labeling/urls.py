from django.urls import path

from . import views

urlpatterns = [
    path("", views.start, name="start"),
    path("no-role/", views.no_role, name="no-role"),
    path("work/", views.labeler_home, name="labeler-home"),
    path("research/", views.research_home, name="research-home"),
    path("research/imports/", views.imports, name="imports"),
    path("research/imports/<int:pk>/", views.import_detail, name="import-detail"),
    path("research/imports/<int:pk>/progress/", views.import_progress, name="import-progress"),
]
