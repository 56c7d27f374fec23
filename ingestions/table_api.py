"""REST views around an ingestion's table and storage: the tenant's storage locations, the
verification of a table against its source, the maintenance the worker ran."""

from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.response import Response

# The form of a source URI (`ingestions.locations`): an absolute path, file:// or s3://, no
# control character, query string or fragment. Where it may point is the tenant's locations.
from .api import COMMON_ERRORS, ERROR_SCHEMA, TenantAPIView

# The run schedule is the ingestion's `schedule`: its cron is checked here, the schedule is
# kept by refresh (`refresh.schedules`, registered as an ingestion field).
from .locations import location_list
from .maintenance import maintenance_list
from .models import MaintenanceAction, VerifyStage, VerifyStatus
from .pagination import StrictLimitOffsetPagination
from .verify import ingestion_verify
from .verify_jobs import RETRY_HELP, verify_job_get, verify_job_list, verify_job_start


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


# `async` is a Python keyword: the request's serializer is built with `type`.
VerifyInputSerializer = type(
    "Verify",  # the schema's component: "VerifyRequest"
    (serializers.Serializer,),
    {
        "async": serializers.BooleanField(
            required=False,
            default=False,
            help_text="Run the verification in the worker: 202 with the job and a Location "
            "to follow (GET .../verifies/{job_id}). Same as the header Prefer: respond-async.",
        )
    },
)


class VerifyJobOutputSerializer(serializers.Serializer):
    job_id = serializers.CharField(source="public_id")
    ingestion_id = serializers.CharField(source="ingestion.public_id")
    status = serializers.ChoiceField(choices=VerifyStatus.choices)
    stage = serializers.ChoiceField(choices=VerifyStage.choices)
    stage_label = serializers.CharField(source="get_stage_display")
    done = serializers.IntegerField(
        help_text="Units of the stage done (history entries, data files)"
    )
    total = serializers.IntegerField(
        allow_null=True, help_text="null while the stage's size is unknown"
    )
    fraction = serializers.FloatField(allow_null=True, help_text="done / total, 0..1")
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.SerializerMethodField()
    report = serializers.JSONField(
        allow_null=True,
        help_text="The verification report (as the synchronous verify's) once SUCCESS",
    )

    @extend_schema_field(
        inline_serializer(
            name="VerifyJobError",
            fields={
                "detail": serializers.CharField(),
                "error_code": serializers.CharField(),
                "help": serializers.CharField(),
            },
            allow_null=True,
        )
    )
    def get_error(self, job) -> dict | None:
        if not job.error_code:
            return None
        return {"detail": job.error, "error_code": job.error_code, "help": RETRY_HELP}


class VerifyJobStartedSerializer(VerifyJobOutputSerializer):
    """A started job (202): the job, and whether it was already under way."""

    already_running = serializers.BooleanField()


class IngestionVerifyApi(TenantAPIView):
    """The table against its history and its source, per file (`ingestions.verify`)."""

    @extend_schema(
        operation_id="ingestions_verify",
        summary="Verify the table against its source and its history (read-only)",
        description="Per file: rows in the table against the rows the history recorded; "
        "files changed since they loaded, gone from the source or never loaded; rows whose "
        "_source_file the history does not know. `consistent` is true when the table holds "
        "exactly what the history says. Lists the source (rate-limited like a dry-run) and "
        "scans the table's _source_file column once; changes nothing.\n\n"
        "Without a body this answers 200 with the report when done (synchronous). With "
        '`{"async": true}` or the header `Prefer: respond-async` it answers 202 at once with '
        "a job the worker runs, and a `Location` to follow its progress and read its report "
        "(GET /ingestions/{id}/verifies/{job_id}). One job at a time per ingestion: while one "
        "is queued or running, a new start answers 202 with that job (`already_running`: "
        "true) and costs no rate slot.",
        request=VerifyInputSerializer,
        parameters=[
            OpenApiParameter(
                "Prefer",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description='respond-async: run in the worker (202), as with {"async": true}',
            ),
            OpenApiParameter(
                "Location",
                str,
                OpenApiParameter.HEADER,
                response=[202],
                description="The job: GET it for its progress and report",
            ),
        ],
        responses={
            200: OpenApiResponse(description="the verification report"),
            202: OpenApiResponse(
                VerifyJobStartedSerializer,
                description="the job (new, or the one already under way); header Location",
            ),
            400: OpenApiResponse(
                ERROR_SCHEMA,
                description="SOURCE_UNAVAILABLE / SOURCE_LISTING_LIMIT / VALIDATION_ERROR",
            ),
            429: OpenApiResponse(ERROR_SCHEMA, description="RATE_LIMITED (Retry-After)"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        form = VerifyInputSerializer(data=request.data)  # no body: an empty form
        form.is_valid(raise_exception=True)
        wants_async = "respond-async" in request.headers.get("Prefer", "").lower()
        if not (form.validated_data["async"] or wants_async):
            return Response(ingestion_verify(ingestion=ingestion, actor=request.user).as_response())
        job, created = verify_job_start(ingestion=ingestion, actor=request.user)
        payload = {**VerifyJobOutputSerializer(job).data, "already_running": not created}
        location = reverse("api-verify-job", args=[ingestion.public_id, job.public_id])
        headers = {"Location": request.build_absolute_uri(location)}
        if wants_async:
            headers["Preference-Applied"] = "respond-async"
        return Response(payload, status=status.HTTP_202_ACCEPTED, headers=headers)


class VerifyJobListApi(TenantAPIView):
    """The ingestion's verification jobs, newest first, without their reports."""

    Pagination = StrictLimitOffsetPagination

    pagination_class = Pagination  # read by the schema: the list is paginated

    class VerifyJobSummarySerializer(VerifyJobOutputSerializer):
        report = None  # read one job for its report
        consistent = serializers.SerializerMethodField()

        def get_consistent(self, job) -> bool | None:
            return job.report["consistent"] if job.report else None

    @extend_schema(
        operation_id="ingestions_verify_jobs_list",
        summary="The ingestion's verification jobs, newest first",
        description="Each job's status and progress, and `consistent` once it succeeded; "
        "read one job (GET .../verifies/{job_id}) for its report. Reads only.",
        responses={200: VerifyJobSummarySerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        paginator = self.Pagination()
        page = paginator.paginate_queryset(verify_job_list(ingestion=ingestion), request, view=self)
        payload = self.VerifyJobSummarySerializer(page, many=True).data
        return paginator.get_paginated_response(payload)


class VerifyJobDetailApi(TenantAPIView):
    """One verification job: its progress while it runs, then its report or its error."""

    @extend_schema(
        operation_id="ingestions_verify_job",
        summary="A verification job's progress and, when done, its report",
        description="stage (queued, listing, history, scanning, done) with done/total units "
        "of that stage, written by the worker as it goes; `report` once SUCCESS (the same "
        "report as the synchronous verify), `error` with how to retry once FAILED. Another "
        "tenant's job, or a job of another ingestion, is 404. Reads only.",
        responses={
            200: VerifyJobOutputSerializer,
            **COMMON_ERRORS,
        },
    )
    def get(self, request, ingestion_id: str, job_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        job = verify_job_get(ingestion=ingestion, job_id=job_id)
        return Response(VerifyJobOutputSerializer(job).data)


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
