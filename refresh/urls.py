"""URLs of refresh operations (mounted under /api/v1/ with the granular API)."""

from django.urls import path

from . import api, batches_api, operations_api, phase2_api, schedules_api

urlpatterns = [
    path(
        "ingestions/<str:ingestion_id>/full-refresh",
        api.FullRefreshApi.as_view(),
        name="api-full-refresh",
    ),
    path(
        "ingestions/<str:ingestion_id>/fresh-start",
        api.FreshStartApi.as_view(),
        name="api-fresh-start",
    ),
    path("ingestions/<str:ingestion_id>/table", api.DropTableApi.as_view(), name="api-drop-table"),
    path(
        "ingestions/<str:ingestion_id>/processed-files",
        api.ProcessedFilesApi.as_view(),
        name="api-processed-files",
    ),
    path(
        "ingestions/<str:ingestion_id>/refresh-operations",
        operations_api.IngestionOperationsApi.as_view(),
        name="api-ingestion-operations",
    ),
    path(
        "refresh-operations/<str:operation_id>",
        operations_api.OperationDetailApi.as_view(),
        name="api-operation",
    ),
    path(
        "refresh-operations/<str:operation_id>/publish",
        operations_api.OperationPublishApi.as_view(),
        name="api-operation-publish",
    ),
    path(
        "refresh-operations/<str:operation_id>/discard",
        operations_api.OperationDiscardApi.as_view(),
        name="api-operation-discard",
    ),
    path(
        "refresh-operations/<str:operation_id>/undo",
        operations_api.OperationUndoApi.as_view(),
        name="api-operation-undo",
    ),
    path(
        "refresh-operations/<str:operation_id>/resume",
        operations_api.OperationResumeApi.as_view(),
        name="api-operation-resume",
    ),
    path(
        "ingestions/<str:ingestion_id>/schedules",
        schedules_api.IngestionSchedulesApi.as_view(),
        name="api-ingestion-schedules",
    ),
    path(
        "schedules/<str:schedule_id>",
        schedules_api.ScheduleDetailApi.as_view(),
        name="api-schedule",
    ),
    path("refresh-batches", batches_api.RefreshBatchListApi.as_view(), name="api-refresh-batches"),
    path(
        "refresh-batches/<str:batch_id>",
        batches_api.RefreshBatchDetailApi.as_view(),
        name="api-refresh-batch",
    ),
    # The requirements' phase-2 shapes (`phase2_api`): the first two are second doors.
    path("batch-refresh", phase2_api.BatchRefreshApi.as_view(), name="api-batch-refresh"),
    path(
        "ingestions/<str:ingestion_id>/refresh-range",
        phase2_api.RefreshRangeApi.as_view(),
        name="api-refresh-range",
    ),
    path(
        "ingestions/<str:ingestion_id>/refresh-if",
        phase2_api.RefreshIfApi.as_view(),
        name="api-refresh-if",
    ),
    path(
        "schedules/<str:schedule_id>/approve",
        schedules_api.ScheduleApproveApi.as_view(),
        name="api-schedule-approve",
    ),
]
