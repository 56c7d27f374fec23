"""REST views around an ingestion's table and storage: the tenant's storage locations, the
verification of a table against its source, the maintenance the worker ran."""

from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers
from rest_framework.response import Response

# The form of a source URI (`ingestions.locations`): an absolute path, file:// or s3://, no
# control character, query string or fragment. Where it may point is the tenant's locations.
from .api import COMMON_ERRORS, ERROR_SCHEMA, TenantAPIView

# The run schedule is the ingestion's `schedule`: its cron is checked here, the schedule is
# kept by refresh (`refresh.schedules`, registered as an ingestion field).
from .locations import location_list
from .maintenance import maintenance_list
from .models import (
    MaintenanceAction,
)
from .pagination import StrictLimitOffsetPagination
from .verify import ingestion_verify


class LocationListApi(TenantAPIView):
    """The storage locations granted to the caller's tenant: where its sources may lie."""

    class OutputSerializer(serializers.Serializer):
        uri = serializers.CharField()
        name = serializers.CharField()
        scheme = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        operation_id="locations_list",
        responses={200: OutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request):
        self.require("view_ingestion")
        return Response(self.OutputSerializer(location_list(tenant=self.tenant), many=True).data)


class IngestionVerifyApi(TenantAPIView):
    """The table against its history and its source, per file (`ingestions.verify`)."""

    @extend_schema(
        operation_id="ingestions_verify",
        summary="Verify the table against its source and its history (read-only)",
        description="Per file: rows in the table against the rows the history recorded; "
        "files changed since they loaded, gone from the source or never loaded; rows whose "
        "_source_file the history does not know. `consistent` is true when the table holds "
        "exactly what the history says. Lists the source (rate-limited like a dry-run) and "
        "scans the table's _source_file column once; changes nothing.",
        request=None,
        responses={
            200: OpenApiResponse(description="the verification report"),
            400: OpenApiResponse(
                ERROR_SCHEMA, description="SOURCE_UNAVAILABLE / SOURCE_LISTING_LIMIT"
            ),
            429: OpenApiResponse(ERROR_SCHEMA, description="RATE_LIMITED (Retry-After)"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        return Response(ingestion_verify(ingestion=ingestion, actor=request.user).as_response())


class IngestionMaintenanceApi(TenantAPIView):
    """The maintenance the worker ran on the ingestion's table, newest first."""

    Pagination = StrictLimitOffsetPagination

    pagination_class = Pagination  # read by the schema: the list is paginated

    # Named apart from the other views' `OutputSerializer`: the schema names components by class.
    class MaintenanceOutputSerializer(serializers.Serializer):
        action = serializers.ChoiceField(choices=MaintenanceAction.choices)
        table = serializers.CharField(source="table_name")
        started_at = serializers.DateTimeField()
        finished_at = serializers.DateTimeField(allow_null=True)
        snapshots_expired = serializers.IntegerField()
        files_removed = serializers.IntegerField()
        files_compacted = serializers.IntegerField()
        files_written = serializers.IntegerField()
        bytes_freed = serializers.IntegerField()
        snapshot_id = serializers.IntegerField(allow_null=True)
        error = serializers.CharField()

    @extend_schema(
        operation_id="ingestions_maintenance_list",
        responses={200: MaintenanceOutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        paginator = self.Pagination()
        actions = maintenance_list(ingestion=ingestion)
        page = paginator.paginate_queryset(actions, request, view=self)
        payload = self.MaintenanceOutputSerializer(page, many=True).data
        return paginator.get_paginated_response(payload)
