from django.urls import path

from . import views

urlpatterns = [
    path("", views.start, name="start"),
    path("no-role/", views.no_role, name="no-role"),
    path("join/<str:token>/", views.join, name="join"),
    path("apply/", views.apply, name="apply"),
    path("work/screening/", views.screening, name="screening"),
    path("work/guidelines/acknowledge/", views.guidelines_acknowledge, name="guidelines-acknowledge"),
    path("review/", views.review_queue, name="review-queue"),
    path("review/<int:pk>/", views.review, name="review"),
    path("account/token/", views.api_token, name="api-token"),
    path("work/", views.labeler_home, name="labeler-home"),
    path("work/next/", views.work_next, name="work-next"),
    path("work/tasks/<int:pk>/", views.assignment, name="assignment"),
    path("work/tasks/<int:pk>/skip/", views.assignment_skip, name="assignment-skip"),
    path("work/mine/", views.my_work, name="my-work"),
    path("work/mine/<int:pk>/", views.my_work_detail, name="my-work-detail"),
    path("research/", views.research_home, name="research-home"),
    path("research/imports/", views.imports, name="imports"),
    path("research/imports/<int:pk>/", views.import_detail, name="import-detail"),
    path("research/imports/<int:pk>/progress/", views.import_progress, name="import-progress"),
    path("research/exports/", views.exports, name="exports"),
    path("research/exports/<int:pk>/", views.export_detail, name="export-detail"),
    path("research/exports/<int:pk>/progress/", views.export_progress, name="export-progress"),
    path("research/exports/<int:pk>/download/", views.export_download, name="export-download"),
    path("research/training/", views.training_runs, name="training-runs"),
    path("research/training/<int:pk>/", views.training_run, name="training-run"),
    path("research/training/<int:pk>/progress/", views.training_run_progress, name="training-run-progress"),
    path("research/training/<int:pk>/cancel/", views.training_run_cancel, name="training-run-cancel"),
    path("research/models/", views.model_versions, name="model-versions"),
]
