"""URLs of the granular REST API (mounted under /api/v1/)."""

from django.urls import path

from . import api, failed_files_api, runs_api, table_api

urlpatterns = [
    path("ingestions", api.IngestionListCreateApi.as_view(), name="api-ingestions"),
    # Before "ingestions/<id>", which would take "check-source" for an id.
    path("ingestions/check-source", api.SourceCheckApi.as_view(), name="api-source-check"),
    path("ingestions/<str:ingestion_id>", api.IngestionDetailApi.as_view(), name="api-ingestion"),
    path(
        "ingestions/<str:ingestion_id>/run",
        runs_api.IngestionRunApi.as_view(),
        name="api-ingestion-run",
    ),
    path(
        "ingestions/<str:ingestion_id>/runs",
        runs_api.IngestionRunsApi.as_view(),
        name="api-ingestion-runs",
    ),
    path(
        "ingestions/<str:ingestion_id>/verify",
        table_api.IngestionVerifyApi.as_view(),
        name="api-ingestion-verify",
    ),
    path(
        "ingestions/<str:ingestion_id>/verifies",
        table_api.VerifyJobListApi.as_view(),
        name="api-verify-jobs",
    ),
    path(
        "ingestions/<str:ingestion_id>/verifies/<str:job_id>",
        table_api.VerifyJobDetailApi.as_view(),
        name="api-verify-job",
    ),
    path(
        "ingestions/<str:ingestion_id>/maintenance",
        table_api.IngestionMaintenanceApi.as_view(),
        name="api-ingestion-maintenance",
    ),
    path(
        "ingestions/<str:ingestion_id>/failed-files",
        failed_files_api.IngestionFailedFilesApi.as_view(),
        name="api-ingestion-failed-files",
    ),
    path(
        "ingestions/<str:ingestion_id>/failed-files/<int:failure_id>/<slug:action>",
        failed_files_api.FailedFileActionApi.as_view(),
        name="api-failed-file-action",
    ),
    path("locations", table_api.LocationListApi.as_view(), name="api-locations"),
    path("runs/<str:run_id>", runs_api.RunDetailApi.as_view(), name="api-run"),
    path("runs/<str:run_id>/cancel", runs_api.RunCancelApi.as_view(), name="api-run-cancel"),
]
