"""REST views of the granular API: ingestions, runs and processed-file history.

Views translate HTTP to service calls and back; the rules live in services and selectors.
"""

from django.db import transaction
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from . import hooks

# The run schedule is the ingestion's `schedule`: its cron is checked here, the schedule is
# kept by refresh (`refresh.schedules`, registered as an ingestion field).
from .cron import ScheduleInvalidError, cron_parse, time_zones
from .engines import ENGINE_CHOICES
from .errors import PermissionDeniedError
from .models import (
    PUBLIC_ID_VALIDATOR,
    RESERVED_PUBLIC_IDS,
    ChangedFiles,
    GoneFiles,
    Ingestion,
    SourceFormat,
    validate_public_id,
)
from .pagination import StrictLimitOffsetPagination
from .selectors import (
    ingestion_get,
    ingestion_list,
    run_latest,
    runs_by_pk,
    table_state,
)
from .serializers import (
    CRON_PATTERN,
    SOURCE_URI_PATTERN,
    AmountField,
    DestinationInputSerializer,
    IngestionOutputSerializer,
    SourceInputSerializer,
    StrictSerializer,
    maintenance_enabled_field,
    options_by_format,
    reject_null_characters,
    retain_days_field,
    snapshot_retention_hours_field,
)
from .services import ExistingTable, ingestion_create, ingestion_delete, ingestion_update
from .sources.preview import source_check
from .tenancy import tenant_for_request

# The refreshes a schedule can fire (`refresh.schedules.REFRESH_ACTIONS`): the operations of
# the PRD's `refresh_schedule`.
REFRESH_SCHEDULE_OPERATIONS = ["full_refresh", "fresh_start"]
ERROR_SCHEMA = inline_serializer(
    name="Error",
    fields={
        "detail": serializers.CharField(),
        "error_code": serializers.CharField(),
        "help": serializers.CharField(required=False),
    },
)
COMMON_ERRORS = {
    401: OpenApiResponse(ERROR_SCHEMA, description="NOT_AUTHENTICATED / AUTHENTICATION_FAILED"),
    403: OpenApiResponse(ERROR_SCHEMA, description="INSUFFICIENT_PERMISSIONS"),
    404: OpenApiResponse(ERROR_SCHEMA, description="INGESTION_NOT_FOUND / RUN_NOT_FOUND"),
}


class TenantAPIView(APIView):
    # Resolves the caller's tenant and checks Django permissions against it. (A comment,
    # not a docstring: the schema would show a docstring as every endpoint's description.)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # An id with a NUL character names nothing, and PostgreSQL refuses it in a query.
        if any("\x00" in value for value in kwargs.values() if isinstance(value, str)):
            raise NotFound("Not found.")

    @property
    def tenant(self):
        return tenant_for_request(self.request)

    def require(self, permission: str, obj=None) -> None:
        if not self.request.user.has_perm(f"ingestions.{permission}", obj or self.tenant):
            raise PermissionDeniedError(
                f"Your role does not allow this action ({permission.replace('_', ' ')})."
            )

    def get_ingestion(self, ingestion_id: str, permission: str) -> Ingestion:
        # Not found before forbidden: another tenant's ingestion must look absent.
        ingestion = ingestion_get(tenant=self.tenant, ingestion_id=ingestion_id)
        self.require(permission, ingestion)
        return ingestion


def ingestion_payload(ingestions, *, with_tables: bool = True) -> list[dict]:
    """Serialize ingestions with their table state and last run, in a bounded query count."""
    ingestions = list(ingestions)
    last_runs = runs_by_pk(getattr(ingestion, "latest_run_pk", None) for ingestion in ingestions)
    context = {
        "last_runs": {
            ingestion.pk: last_runs.get(getattr(ingestion, "latest_run_pk", None))
            for ingestion in ingestions
        },
        "tables": {ingestion.pk: table_state(ingestion=ingestion) for ingestion in ingestions}
        if with_tables
        else {},
        "schedules": hooks.ingestion_field_values("schedule", ingestions),
    }
    return IngestionOutputSerializer(ingestions, many=True, context=context).data


def one_ingestion_payload(ingestion: Ingestion) -> dict:
    context = {
        "last_runs": {ingestion.pk: run_latest(ingestion=ingestion)},
        "tables": {ingestion.pk: table_state(ingestion=ingestion)},
        "schedules": hooks.ingestion_field_values("schedule", [ingestion]),
    }
    return IngestionOutputSerializer(ingestion, context=context).data


def query_flags(request, *names: str) -> dict[str, bool]:
    """The boolean query parameters among `names` that are present: true or false only."""
    flags = {}
    for name in names:
        value = request.query_params.get(name)
        if value is None:
            continue
        if value not in ("true", "false"):
            raise serializers.ValidationError({name: ["Use true or false."]})
        flags[name] = value == "true"
    return flags


class IngestionListCreateApi(TenantAPIView):
    Pagination = StrictLimitOffsetPagination

    pagination_class = Pagination  # read by the schema: the list is paginated

    class InputSerializer(StrictSerializer):
        openapi_extra = {
            "properties": {
                "id": {
                    "pattern": PUBLIC_ID_VALIDATOR.regex.pattern,
                    "not": {"enum": sorted(RESERVED_PUBLIC_IDS)},
                }
            }
        }

        id = serializers.CharField(required=False, validators=[validate_public_id])
        name = serializers.CharField(max_length=200)
        source = SourceInputSerializer()
        destination = DestinationInputSerializer()
        engine = serializers.ChoiceField(
            choices=ENGINE_CHOICES,
            default="iceberg",
            help_text="iceberg: the embedded engine (pyiceberg, in the worker). spark: Spark's "
            "executors read the files and write the same Iceberg tables (local[*], spark://, "
            "k8s://, yarn; Spark Connect is not supported).",
        )
        cost_per_gb_usd = AmountField(max_digits=10, decimal_places=4, required=False)
        protected = serializers.BooleanField(default=False)
        retain_days = retain_days_field(
            allow_null=True,
            help_text="Days a refresh operation keeps what it replaces, for undo (0: no undo; "
            "null: the server's default, 7).",
        )
        maintenance_enabled = maintenance_enabled_field(default=True)
        snapshot_retention_hours = snapshot_retention_hours_field()
        changed_files = serializers.ChoiceField(
            choices=ChangedFiles.choices,
            default=ChangedFiles.RELOAD,
            help_text="A file loaded before whose size or modification time changed: reload "
            "(its new rows replace its old ones, in one commit), warn (load nothing, flag it "
            "on the run and send file.changed) or ignore (its old rows stay).",
        )
        gone_files = serializers.ChoiceField(
            choices=GoneFiles.choices,
            default=GoneFiles.KEEP,
            help_text="Files of the history no longer in the source: keep their rows, or "
            "remove them on the next run (one commit; never more than half the history at "
            "once).",
        )
        existing_table = serializers.ChoiceField(
            choices=ExistingTable.choices,
            required=False,
            help_text="Only when the destination table exists already (an ingestion over it "
            "was deleted): adopt its rows (their files count as processed) or replace it.",
        )

    @extend_schema(
        operation_id="ingestions_list",
        responses={200: IngestionOutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request):
        self.require("view_ingestion")
        paginator = self.Pagination()
        page = paginator.paginate_queryset(ingestion_list(tenant=self.tenant), request, view=self)
        return paginator.get_paginated_response(ingestion_payload(page))

    @extend_schema(
        operation_id="ingestions_create",
        request=InputSerializer,
        responses={
            201: IngestionOutputSerializer,
            400: OpenApiResponse(ERROR_SCHEMA, description="VALIDATION_ERROR / SOURCE_NOT_ALLOWED"),
            409: OpenApiResponse(ERROR_SCHEMA, description="INGESTION_EXISTS / TABLE_EXISTS"),
            **COMMON_ERRORS,
        },
    )
    def post(self, request):
        self.require("add_ingestion")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        ingestion = ingestion_create(
            tenant=self.tenant,
            actor=request.user,
            public_id=data.get("id"),
            name=data["name"],
            source_uri=data["source"]["uri"],
            source_format=data["source"]["format"],
            source_pattern=data["source"].get("pattern", ""),
            source_options=data["source"].get("options", {}),
            destination_table=data["destination"]["table"],
            engine=data["engine"],
            cost_per_gb_usd=data.get("cost_per_gb_usd"),
            protected=data["protected"],
            retain_days=data.get("retain_days"),
            maintenance_enabled=data["maintenance_enabled"],
            snapshot_retention_hours=data.get("snapshot_retention_hours"),
            existing_table=data.get("existing_table"),
            changed_files=data["changed_files"],
            gone_files=data["gone_files"],
        )
        return Response(one_ingestion_payload(ingestion), status=status.HTTP_201_CREATED)


class SourceCheckApi(TenantAPIView):
    """What a source would give an ingestion, before one is created: the files its pattern
    matches (counted, the first names) and the first rows of the first file with the schema
    read from them. Nothing is saved."""

    @extend_schema(
        operation_id="ingestions_check_source",
        request=SourceInputSerializer,
        responses={
            200: OpenApiResponse(description="files, sample (columns, rows) or sample_error"),
            400: OpenApiResponse(
                ERROR_SCHEMA,
                description="VALIDATION_ERROR / SOURCE_NOT_ALLOWED / SOURCE_UNAVAILABLE",
            ),
            **COMMON_ERRORS,
        },
    )
    def post(self, request):
        self.require("add_ingestion")
        serializer = SourceInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            result = source_check(
                tenant=self.tenant,
                actor=request.user,
                uri=data["uri"],
                file_format=data["format"],
                pattern=data.get("pattern", ""),
                options=data.get("options", {}),
            )
        except ValueError as exc:  # the reader options
            raise serializers.ValidationError({"options": [str(exc)]}) from None
        return Response(result)


class IngestionDetailApi(TenantAPIView):
    class SourceUpdateSerializer(StrictSerializer):
        uri = serializers.CharField(max_length=1024, required=False)
        format = serializers.ChoiceField(choices=SourceFormat.choices, required=False)
        pattern = serializers.CharField(max_length=255, required=False, allow_blank=True)
        options = serializers.DictField(required=False, validators=[reject_null_characters])

    class ScheduleUpdateSerializer(StrictSerializer):
        cron = serializers.CharField(max_length=120, required=False)
        timezone = serializers.CharField(max_length=64, required=False)
        paused = serializers.BooleanField(required=False)

    class RefreshScheduleSerializer(ScheduleUpdateSerializer):
        # The operations are refresh's (`refresh.schedules.REFRESH_ACTIONS`, which checks
        # them again); named here for the schema only, and a test holds the two equal.
        operation = serializers.ChoiceField(choices=REFRESH_SCHEDULE_OPERATIONS)
        cron = serializers.CharField(max_length=120)

    class InputSerializer(StrictSerializer):
        openapi_extra = {
            "properties": {
                "source": {
                    "properties": {
                        "uri": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 1024,
                            "pattern": SOURCE_URI_PATTERN,
                        },
                        "format": {"type": "string", "enum": SourceFormat.values},
                        "pattern": {"type": "string", "maxLength": 255},
                        "options": {"type": "object"},
                    },
                    "additionalProperties": False,
                    "anyOf": options_by_format(absent=True),
                },
                # Refused: the destination table of an ingestion never changes.
                "destination": {"not": {}},
                "schedule": {
                    "properties": {
                        "cron": {"type": "string", "maxLength": 120, "pattern": CRON_PATTERN},
                        "timezone": {"type": "string", "enum": sorted(time_zones())},
                        "paused": {"type": "boolean"},
                    },
                    "additionalProperties": False,
                },
                "refresh_schedule": {
                    "properties": {
                        "operation": {"type": "string", "enum": REFRESH_SCHEDULE_OPERATIONS},
                        "cron": {"type": "string", "maxLength": 120, "pattern": CRON_PATTERN},
                        "timezone": {"type": "string", "enum": sorted(time_zones())},
                        "paused": {"type": "boolean"},
                    },
                    "required": ["operation", "cron"],
                    "additionalProperties": False,
                },
            }
        }

        name = serializers.CharField(max_length=200, required=False)
        source = serializers.DictField(required=False)
        cost_per_gb_usd = AmountField(max_digits=10, decimal_places=4, required=False)
        protected = serializers.BooleanField(required=False)
        retain_days = retain_days_field(
            allow_null=True,
            help_text="Days a refresh operation keeps what it replaces, for undo (0: no undo; "
            "null: the server's default, 7).",
        )
        maintenance_enabled = maintenance_enabled_field(required=False)
        snapshot_retention_hours = snapshot_retention_hours_field()
        changed_files = serializers.ChoiceField(
            choices=ChangedFiles.choices,
            required=False,
            help_text="A file loaded before whose size or modification time changed: reload "
            "(its new rows replace its old ones, in one commit), warn (load nothing, flag it "
            "on the run and send file.changed) or ignore (its old rows stay).",
        )
        gone_files = serializers.ChoiceField(
            choices=GoneFiles.choices,
            required=False,
            help_text="Files of the history no longer in the source: keep their rows, or "
            "remove them on the next run (one commit; never more than half the history at "
            "once).",
        )
        destination = serializers.DictField(required=False)
        schedule = serializers.DictField(
            required=False,
            allow_null=True,
            help_text='The run schedule: {"cron": "0 2 * * *", "timezone": "Europe/Berlin", '
            '"paused": false} (given fields change, others are kept); null removes it.',
        )
        refresh_schedule = serializers.DictField(
            required=False,
            help_text='The PRD\'s spelling of a scheduled refresh: {"operation": '
            '"full_refresh" | "fresh_start", "cron": "0 2 * * *", "timezone": "UTC", '
            '"paused": false} sets the ingestion\'s one schedule of that operation (created '
            "if it has none). Canonical: POST /api/v1/ingestions/{id}/schedules and PATCH "
            "/api/v1/schedules/{id}, which also take a condition; same rules (the "
            "operation's permission, firing as you, an admin's approval above the plan "
            "threshold). The response shows the schedule as refresh_schedule.",
        )

        def validate_refresh_schedule(self, value):
            schedule = IngestionDetailApi.RefreshScheduleSerializer(data=value)
            schedule.is_valid(raise_exception=True)
            data = schedule.validated_data
            try:  # checked here too, so that its errors sit under "refresh_schedule"
                cron_parse(cron=data["cron"], timezone=data.get("timezone", "UTC"))
            except ScheduleInvalidError as exc:
                raise serializers.ValidationError(exc.errors) from None
            return data

        def validate_schedule(self, value):
            if value is None:
                return None
            schedule = IngestionDetailApi.ScheduleUpdateSerializer(data=value)
            schedule.is_valid(raise_exception=True)
            data = schedule.validated_data
            if "cron" in data:  # checked here too, so that its errors sit under "schedule"
                try:
                    cron_parse(cron=data["cron"], timezone=data.get("timezone", "UTC"))
                except ScheduleInvalidError as exc:
                    raise serializers.ValidationError(exc.errors) from None
            return data

        def validate_destination(self, value):
            raise serializers.ValidationError(
                "The destination table cannot change; create a new ingestion instead."
            )

        def validate_source(self, value):
            source = IngestionDetailApi.SourceUpdateSerializer(data=value)
            source.is_valid(raise_exception=True)
            return source.validated_data

    @extend_schema(
        operation_id="ingestions_retrieve",
        responses={200: IngestionOutputSerializer, **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        return Response(one_ingestion_payload(ingestion))

    @extend_schema(
        operation_id="ingestions_update",
        request=InputSerializer,
        responses={
            200: IngestionOutputSerializer,
            400: OpenApiResponse(ERROR_SCHEMA, description="VALIDATION_ERROR / SOURCE_NOT_ALLOWED"),
            **COMMON_ERRORS,
        },
    )
    def patch(self, request, ingestion_id: str):
        # A body of only `refresh_schedule` changes no field of the ingestion: the schedule's
        # own permission decides (`schedule_set`), as at POST .../schedules.
        only_refresh_schedule = isinstance(request.data, dict) and set(request.data) == {
            "refresh_schedule"
        }
        ingestion = self.get_ingestion(
            ingestion_id, "view_ingestion" if only_refresh_schedule else "change_ingestion"
        )
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        source = data.pop("source", {})
        for key in ("uri", "format", "pattern", "options"):
            if key in source:
                data[f"source_{key}"] = source[key]
        has_schedule, schedule = "schedule" in data, data.pop("schedule", None)
        refresh_schedule = data.pop("refresh_schedule", None)
        # One request, one outcome: an invalid schedule leaves the other fields unchanged.
        with transaction.atomic():
            if not only_refresh_schedule:
                ingestion = ingestion_update(ingestion=ingestion, data=data, actor=request.user)
            if has_schedule:
                hooks.ingestion_field_write(
                    "schedule", ingestion=ingestion, actor=request.user, value=schedule
                )
            if refresh_schedule is not None:
                refresh_schedule = hooks.ingestion_field_write(
                    "refresh_schedule",
                    ingestion=ingestion,
                    actor=request.user,
                    value=refresh_schedule,
                )
        payload = one_ingestion_payload(ingestion)
        if refresh_schedule is not None:
            payload = {**payload, "refresh_schedule": refresh_schedule}
        return Response(payload)

    class PutInputSerializer(InputSerializer):
        # The same fields as PATCH's, under a name of its own: "InputRequest" is the create
        # view's component, and a PUT's request is not a PATCH's "PatchedInputRequest".
        pass

    @extend_schema(
        operation_id="ingestions_update_put",
        summary="The PRD's PUT: the same partial update as PATCH (canonical)",
        description="Accepted for the requirements' `PUT /api/v1/ingestions/{id} "
        '{"refresh_schedule": {...}}`: exactly PATCH /api/v1/ingestions/{id} (the fields '
        "given change, the others keep their value; nothing is replaced wholesale). PATCH is "
        "the canonical spelling.",
        request=PutInputSerializer,
        responses={
            200: IngestionOutputSerializer,
            400: OpenApiResponse(ERROR_SCHEMA, description="VALIDATION_ERROR / SOURCE_NOT_ALLOWED"),
            **COMMON_ERRORS,
        },
    )
    def put(self, request, ingestion_id: str):
        return self.patch(request, ingestion_id)

    class DeleteInputSerializer(StrictSerializer):
        confirm = serializers.BooleanField(default=False)
        drop_table = serializers.BooleanField(default=False)

    class DeleteOutputSerializer(serializers.Serializer):
        id = serializers.CharField()
        deleted = serializers.BooleanField()
        table = inline_serializer(
            name="DeletedIngestionTable",
            fields={
                "name": serializers.CharField(),
                "identifier": serializers.CharField(),
                "action": serializers.ChoiceField(["kept", "dropped"]),
                "existed": serializers.BooleanField(required=False),
                "help": serializers.CharField(required=False),
            },
        )

    @extend_schema(
        operation_id="ingestions_destroy",
        request=DeleteInputSerializer,
        parameters=[
            OpenApiParameter(
                "confirm",
                {"type": "boolean", "enum": [True]},
                required=True,
                description="Must be true (or the body's confirm).",
            ),
            OpenApiParameter("drop_table", bool, description="Same as the body's drop_table."),
        ],
        responses={
            200: DeleteOutputSerializer,
            400: OpenApiResponse(ERROR_SCHEMA, description="CONFIRMATION_REQUIRED"),
            409: OpenApiResponse(ERROR_SCHEMA, description="RUN_IN_PROGRESS"),
            423: OpenApiResponse(ERROR_SCHEMA, description="TABLE_PROTECTED"),
            **COMMON_ERRORS,
        },
    )
    def delete(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "delete_ingestion")
        # DELETE bodies are awkward for some clients: the query string works too.
        values = {**query_flags(request, "confirm", "drop_table"), **(request.data or {})}
        serializer = self.DeleteInputSerializer(
            data={key: values[key] for key in ("confirm", "drop_table") if key in values}
        )
        serializer.is_valid(raise_exception=True)
        outcome = ingestion_delete(
            ingestion=ingestion,
            actor=request.user,
            confirm=serializer.validated_data["confirm"],
            drop_table=serializer.validated_data["drop_table"],
        )
        return Response(outcome)
