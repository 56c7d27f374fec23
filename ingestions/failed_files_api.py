"""REST views of an ingestion's failed files: list them, quarantine, release, retry."""

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from .api import (
    COMMON_ERRORS,
    ERROR_SCHEMA,
    TenantAPIView,
)
from .pagination import StrictLimitOffsetPagination
from .quarantine import (
    failure_get,
    failure_list,
    failure_quarantine,
    failure_release,
    failure_retry,
)
from .serializers import (
    RunOutputSerializer,
)


class FailedFileOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    path = serializers.CharField()
    size_bytes = serializers.IntegerField()
    attempts = serializers.IntegerField(help_text="Runs in a row that failed to load the file.")
    error = serializers.CharField()
    first_failed_at = serializers.DateTimeField()
    last_failed_at = serializers.DateTimeField()
    last_run_id = serializers.CharField(source="last_run.public_id", allow_null=True)
    quarantined = serializers.BooleanField()
    quarantined_at = serializers.DateTimeField(allow_null=True)
    quarantined_by = serializers.SerializerMethodField(
        help_text="Who quarantined it; null with quarantined_at set: the worker, automatically."
    )

    def get_quarantined_by(self, failure) -> str | None:
        return failure.quarantined_by.username if failure.quarantined_by else None


class IngestionFailedFilesApi(TenantAPIView):
    """The files that failed to load and have not loaded since, quarantined or not.

    A quarantined file is left out of every run and refresh preview until it is released.
    """

    Pagination = StrictLimitOffsetPagination

    pagination_class = Pagination  # read by the schema: the list is paginated

    @extend_schema(
        operation_id="ingestions_failed_files_list",
        parameters=[
            OpenApiParameter(
                "quarantined", bool, description="Only quarantined (true) or only not (false)."
            )
        ],
        responses={200: FailedFileOutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_run")
        value = request.query_params.get("quarantined")
        if value not in (None, "", "true", "false"):
            raise ValidationError({"quarantined": ["Use true or false."]})
        failures = failure_list(
            ingestion=ingestion, quarantined=None if not value else value == "true"
        )
        paginator = self.Pagination()
        page = paginator.paginate_queryset(failures, request, view=self)
        return paginator.get_paginated_response(FailedFileOutputSerializer(page, many=True).data)


class FailedFileActionApi(TenantAPIView):
    """quarantine: set the file aside; release: let the next run try it again (from zero
    attempts); retry: release it if quarantined and queue a run now."""

    ACTIONS = ("quarantine", "release", "retry")

    @extend_schema(
        operation_id="ingestions_failed_files_action",
        request=None,
        responses={
            200: FailedFileOutputSerializer,
            202: RunOutputSerializer,
            409: OpenApiResponse(ERROR_SCHEMA, description="FAILED_FILE_STATE / RUN_IN_PROGRESS"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, ingestion_id: str, failure_id: int, action: str):
        if action not in self.ACTIONS:
            raise NotFound("Not found.")
        ingestion = self.get_ingestion(ingestion_id, "run_ingestion")
        failure = failure_get(ingestion=ingestion, failure_id=failure_id)
        if action == "quarantine":
            failure = failure_quarantine(failure=failure, actor=request.user)
            return Response(FailedFileOutputSerializer(failure).data)
        if action == "release":
            failure_release(failure=failure, actor=request.user)
            failure.quarantined_at, failure.quarantined_by, failure.attempts = None, None, 0
            return Response(FailedFileOutputSerializer(failure).data)
        run = failure_retry(failure=failure, actor=request.user)
        return Response(RunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED)
