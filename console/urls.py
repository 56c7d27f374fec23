"""Root URLs: console pages, admin, the REST API and its docs, health.

Console URL names, view names and templates run in parallel: `ingestion-detail` is
`views.ingestion_detail` rendering `ingestion_detail.html` (and its `partials/`).
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from refresh.metrics import metrics_view

from . import (
    api_errors,
    batches,
    failed_files,
    health,
    ingestion_changes,
    operations,
    schedules,
    selective,
    tokens,
    verify,
    views,
    webhooks,
)

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tenant/", views.tenant_switch, name="tenant-switch"),
    path("ingestions/", views.ingestion_list, name="ingestion-list"),
    path("ingestions/new/", ingestion_changes.ingestion_create, name="ingestion-create"),
    path("ingestions/check-source/", ingestion_changes.source_check, name="source-check"),
    path("ingestions/<str:ingestion_id>/", views.ingestion_detail, name="ingestion-detail"),
    path("ingestions/<str:ingestion_id>/run/", views.ingestion_run, name="ingestion-run"),
    path("ingestions/<str:ingestion_id>/table/", views.ingestion_table, name="ingestion-table"),
    path("ingestions/<str:ingestion_id>/verify/", verify.verify, name="ingestion-verify"),
    path(
        "ingestions/<str:ingestion_id>/verifies/<str:job_id>/",
        verify.verify_job,
        name="verify-job",
    ),
    path(
        "ingestions/<str:ingestion_id>/history/",
        views.ingestion_history,
        name="ingestion-history",
    ),
    path(
        "ingestions/<str:ingestion_id>/edit/",
        ingestion_changes.ingestion_edit,
        name="ingestion-edit",
    ),
    path(
        "ingestions/<str:ingestion_id>/delete/",
        ingestion_changes.ingestion_delete,
        name="ingestion-delete",
    ),
    path(
        "ingestions/<str:ingestion_id>/protect/",
        ingestion_changes.ingestion_protect,
        name="ingestion-protect",
    ),
    path(
        "ingestions/<str:ingestion_id>/failed-files/<int:failure_id>/<slug:action>/",
        failed_files.failed_file_action,
        name="failed-file-action",
    ),
    path(
        "ingestions/<str:ingestion_id>/schedules/",
        schedules.ingestion_schedules,
        name="ingestion-schedules",
    ),
    path(
        "ingestions/<str:ingestion_id>/schedules/run/",
        schedules.schedule_run_set,
        name="schedule-run-set",
    ),
    path(
        "ingestions/<str:ingestion_id>/schedules/add/", schedules.schedule_add, name="schedule-add"
    ),
    path(
        "ingestions/<str:ingestion_id>/schedules/facts/",
        schedules.schedule_facts,
        name="schedule-facts",
    ),
    path(
        "schedules/<str:schedule_id>/<slug:action>/",
        schedules.schedule_action,
        name="schedule-action",
    ),
    # Before the generic operation route: a full refresh with a scope, chosen in the console.
    path(
        "ingestions/<str:ingestion_id>/selective-refresh/",
        selective.selective_refresh,
        name="selective-refresh",
    ),
    path(
        "ingestions/<str:ingestion_id>/<slug:action>/",
        operations.ingestion_operation,
        name="ingestion-operation",
    ),
    path("runs/<str:run_id>/", views.run_detail, name="run-detail"),
    path("runs/<str:run_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("operations/<str:operation_id>/", operations.operation_detail, name="operation-detail"),
    path(
        "operations/<str:operation_id>/resume/",
        operations.operation_resume,
        name="operation-resume",
    ),
    path(
        "operations/<str:operation_id>/publish/",
        operations.operation_publish,
        name="operation-publish",
    ),
    path(
        "operations/<str:operation_id>/discard/",
        operations.operation_discard,
        name="operation-discard",
    ),
    path("operations/<str:operation_id>/undo/", operations.operation_undo, name="operation-undo"),
    path("refresh-batches/new/", batches.batch_new, name="batch-new"),
    path("refresh-batches/<str:batch_id>/", batches.batch_detail, name="batch-detail"),
    path("audit/", views.audit, name="audit"),
    path("tokens/", tokens.token_list, name="token-list"),
    path("tokens/<int:token_id>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("webhooks/", webhooks.webhook_list, name="webhook-list"),
    path("webhooks/<str:webhook_id>/", webhooks.webhook_detail, name="webhook-detail"),
    path("webhooks/<str:webhook_id>/test/", webhooks.webhook_test, name="webhook-test"),
    path("webhooks/<str:webhook_id>/delete/", webhooks.webhook_delete, name="webhook-delete"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("api/v1/", include("ingestions.urls")),
    path("api/v1/", include("refresh.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", views.ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: any other path under /api/ is the API's JSON 404, not Django's HTML page.
    re_path(r"^api/", api_errors.ApiNotFoundView.as_view(), name="api-not-found"),
]
