"""REST views of the PRD's four refresh endpoints: full refresh, fresh start, drop table, clear
history (each a dry-run or an execution, idempotent by key). The operations they create have
their own module (`operations_api`), as have schedules and batches (`schedules_api`,
`batches_api`).

Views parse, call the services (`refresh.preview`, `refresh.services`), and present;
every rule lives in the services.
"""

import json
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from ingestions.api import COMMON_ERRORS, ERROR_SCHEMA, TenantAPIView, query_flags
from ingestions.models import OnPartialFailure
from ingestions.pagination import StrictCursorPagination
from ingestions.scope import MAX_SCOPE_FILES, Scope
from ingestions.selectors import processed_file_list
from ingestions.serializers import (
    ProcessedFileOutputSerializer,
    StrictSerializer,
    retain_days_field,
)

from .errors import RefreshApiDisabledError
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import fingerprint, idempotency_begin, idempotency_complete, idempotency_release
from .models import IdempotencyRecord, OperationKind, OperationStatus, RefreshMode
from .presenters import operation_payload, preview_payload
from .preview import refresh_preview
from .services import refresh_execute

HTTP_STATUS_BY_OPERATION_STATUS = {
    OperationStatus.ACCEPTED: status.HTTP_202_ACCEPTED,
    OperationStatus.SUCCESS: status.HTTP_200_OK,
    OperationStatus.PARTIAL_FAILURE: status.HTTP_500_INTERNAL_SERVER_ERROR,
    OperationStatus.FAILED: status.HTTP_500_INTERNAL_SERVER_ERROR,
    OperationStatus.IN_PROGRESS: status.HTTP_202_ACCEPTED,
    # What a zero-downtime operation becomes once its run ended (on a replayed request).
    OperationStatus.PUBLISHED: status.HTTP_200_OK,
    OperationStatus.AWAITING_DECISION: status.HTTP_200_OK,
    OperationStatus.DISCARDED: status.HTTP_200_OK,
    OperationStatus.CANCELLED: status.HTTP_200_OK,
    OperationStatus.UNDONE: status.HTTP_200_OK,
}

# Beside the PRD's `impact` (whose fields are fixed): the duration in seconds and its basis.
ESTIMATE_SCHEMA = inline_serializer(
    name="RefreshDurationEstimate",
    fields={
        "estimated_duration_seconds": serializers.FloatField(allow_null=True),
        "source": serializers.ChoiceField(["measured", "default"], allow_null=True),
        "basis": serializers.CharField(allow_null=True),
        # Part of the seconds: the worker's Spark application has to start first (0: no).
        "engine_startup_seconds": serializers.FloatField(allow_null=True),
    },
    required=False,
)
OPERATION_SCHEMA = inline_serializer(
    name="RefreshOperationResponse",
    fields={
        "status": serializers.ChoiceField([value for value, _ in OperationStatus.choices]),
        "message": serializers.CharField(),
        "operation_id": serializers.CharField(),
        "operation_type": serializers.CharField(),
        "label": serializers.CharField(
            help_text='What it was, for people: "Full refresh", or "Selective refresh · 3 '
            'files" for a full refresh with a scope.'
        ),
        "ingestion_id": serializers.CharField(),
        "run_id": serializers.CharField(allow_null=True),
        "timestamp": serializers.DateTimeField(),
        "operations": serializers.ListField(child=serializers.DictField()),
        "impact": serializers.DictField(),
        "estimate": ESTIMATE_SCHEMA,
        "warnings": serializers.ListField(child=serializers.CharField()),
        "notes": serializers.ListField(child=serializers.CharField()),
        "details": serializers.DictField(required=False),
        "recovery": serializers.DictField(required=False),
        "error_code": serializers.CharField(required=False),
        "phase": serializers.CharField(
            required=False,
            help_text="Where the work stands: queued, running, publishing while its run "
            "loads; then the status (published, awaiting_decision, undone...).",
        ),
        "run": serializers.DictField(required=False, help_text="Its run, summarized."),
        "retention": serializers.DictField(
            required=False, help_text="What is kept for undo, until when, and how to undo."
        ),
        "undo": serializers.DictField(required=False, help_text="When and how it was undone."),
    },
)
DRY_RUN_SCHEMA = inline_serializer(
    name="RefreshDryRunResponse",
    fields={
        "status": serializers.CharField(default="dry_run"),
        "message": serializers.CharField(),
        "ingestion_id": serializers.CharField(),
        "plan_id": serializers.CharField(),
        "plan_required": serializers.BooleanField(),
        "timestamp": serializers.DateTimeField(),
        "would_perform": serializers.ListField(child=serializers.DictField()),
        "impact": serializers.DictField(),
        "estimate": ESTIMATE_SCHEMA,
        "warnings": serializers.ListField(child=serializers.CharField()),
        "notes": serializers.ListField(child=serializers.CharField()),
        "retention": serializers.DictField(
            help_text="retain_days, undoable, kept_until and storage_kept_bytes: how long the "
            "operation stays undoable and the storage held for it meanwhile."
        ),
        "quota": serializers.DictField(
            allow_null=True,
            help_text="Where the caller stands for one more execution: limit, used, remaining "
            "and resets_at of the binding limit (the fewest left), applies_to (table: this "
            "kind's rate on this table; user or tenant: the ceiling of destructive operations "
            "over every table), its setting and description, and every limit in `limits`; "
            "null when nothing limits the kind.",
        ),
        "end_state": serializers.DictField(
            help_text="What the table holds once it is done: rows (null while they depend on "
            "files not loaded yet), rows_kept, files, history_files, table_exists, empty, "
            "sentence.",
        ),
        "next_steps": serializers.DictField(),
    },
)
# A 200 is a dry-run's preview, or an operation that triggered no run (auto_run=false,
# drop table, clear history): the two shapes are told apart by their required fields.
DRY_RUN_OR_OPERATION_SCHEMA = PolymorphicProxySerializer(
    component_name="RefreshDryRunOrOperationResponse",
    serializers=[DRY_RUN_SCHEMA, OPERATION_SCHEMA],
    resource_type_field_name=None,
)
REFRESH_ERRORS = {
    400: OpenApiResponse(
        ERROR_SCHEMA, description="CONFIRMATION_REQUIRED / DRY_RUN_REQUIRED / VALIDATION_ERROR"
    ),
    409: OpenApiResponse(
        ERROR_SCHEMA,
        description="RUN_IN_PROGRESS (current_run_id, X-Current-Run-ID) / REFRESH_IN_PROGRESS"
        " / PLAN_STALE",
    ),
    422: OpenApiResponse(ERROR_SCHEMA, description="IDEMPOTENCY_KEY_REUSED"),
    423: OpenApiResponse(ERROR_SCHEMA, description="TABLE_PROTECTED"),
    429: OpenApiResponse(ERROR_SCHEMA, description="RATE_LIMITED (Retry-After)"),
    500: OpenApiResponse(
        OPERATION_SCHEMA,
        description="partial_failure / failed, with recovery (CLUSTER_UNAVAILABLE, SPARK_ERROR)",
    ),
    503: OpenApiResponse(ERROR_SCHEMA, description="REFRESH_API_DISABLED"),
    **COMMON_ERRORS,
}
IDEMPOTENCY_KEY_MAX_LENGTH = IdempotencyRecord._meta.get_field("key").max_length
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH},
    OpenApiParameter.HEADER,
    description="Replays the first response for the same key and body within 24 h.",
)
# Executing needs confirm=true, previewing dry_run=true: one of the two, in the body or (for
# clients that cannot send a body, as with DELETE) in the query string.
CONFIRM_OR_DRY_RUN = {
    "anyOf": [
        {"required": ["confirm"], "properties": {"confirm": {"enum": [True]}}},
        {"required": ["dry_run"], "properties": {"dry_run": {"enum": [True]}}},
    ]
}
# A DELETE has no body: its confirm and dry_run are query parameters, described as one
# exploded object (`?confirm=true`, `?dry_run=true`) since the schema needs one of them.
DELETE_PARAMETERS = [
    OpenApiParameter(
        "confirmation",
        {
            "type": "object",
            "properties": {"confirm": {"type": "boolean"}, "dry_run": {"type": "boolean"}},
            "additionalProperties": False,
            **CONFIRM_OR_DRY_RUN,
        },
        OpenApiParameter.QUERY,
        required=True,
        style="form",
        explode=True,
        description="?confirm=true executes; ?dry_run=true previews and changes nothing.",
    )
]
# A selective full refresh's scope (`ingestions.scope.Scope.parse`): relative paths of
# segments that never are "..", and times the database can hold, with their offset.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}"
_MOMENT = {
    "type": "string",
    "pattern": r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])T([01]\d|2[0-3]):[0-5]\d"
    r":[0-5]\d(\.\d{1,6})?(Z|[+-](0\d|1[0-3]):[0-5]\d)$",
}
SCOPE_SCHEMA = {
    "nullable": True,
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "prefix": {
                    "type": "string",
                    "pattern": rf"^{_SEGMENT}(/{_SEGMENT})*/?$",
                    "maxLength": 1024,
                }
            },
            "required": ["prefix"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"modified_after": _MOMENT, "modified_before": _MOMENT},
            # Both bounds are accepted too, the first before the second.
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "files": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "pattern": rf"^{_SEGMENT}(/{_SEGMENT})*$",
                        "maxLength": 1024,
                    },
                    "minItems": 1,
                    "maxItems": MAX_SCOPE_FILES,
                }
            },
            "required": ["files"],
            "additionalProperties": False,
        },
    ],
}


class RefreshInputSerializer(StrictSerializer):
    openapi_extra = CONFIRM_OR_DRY_RUN

    # `confirm` is checked by the service: only the JSON boolean true confirms.
    confirm = serializers.JSONField(
        required=False, allow_null=True, help_text="Must be the JSON boolean true to execute."
    )
    auto_run = serializers.BooleanField(default=True)
    dry_run = serializers.BooleanField(default=False)
    plan_id = serializers.CharField(required=False, allow_null=True, max_length=63)
    mode = serializers.ChoiceField(
        choices=RefreshMode.choices,
        required=False,
        help_text="atomic (default): no downtime, the new table is published when its run "
        "ends; drop_first: drop at once (frees storage now).",
    )
    on_partial_failure = serializers.ChoiceField(
        choices=OnPartialFailure.choices,
        default=OnPartialFailure.DECIDE,
        help_text="When some files fail in an atomic refresh: wait for a decision (default), "
        "publish what loaded, or discard it.",
    )
    retain_days = retain_days_field(
        help_text="Days what the operation replaces is kept for undo (0: no undo). Default: "
        "the ingestion's retain_days, else the server's (7).",
    )


class FullRefreshInputSerializer(RefreshInputSerializer):
    openapi_extra = {**CONFIRM_OR_DRY_RUN, "properties": {"scope": SCOPE_SCHEMA}}

    scope = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text='A selective full refresh: {"prefix": "2025-06/"}, {"modified_after": '
        '"<ISO-8601>", "modified_before": "<ISO-8601>"} (either or both) or {"files": '
        "[relative paths]} (at most 10,000). Only the rows of those files (by _source_file) "
        "and their history entries are replaced, by a reload of the files, in one commit; "
        "everything else is untouched. Needs mode atomic and a table with rows.",
    )

    def validate_scope(self, value):
        try:
            scope = Scope.parse(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict["scope"]) from None
        return scope.as_json() if scope is not None else None


class RefreshApiView(TenantAPIView):
    """One refresh operation kind behind one endpoint."""

    kind: str
    input_serializer = RefreshInputSerializer
    # The convenience endpoints are behind ENABLE_REFRESH_OPERATIONS_API; the granular
    # ones that share this code (clearing the history) stay available when it is off.
    behind_feature_flag = True

    def execute(self, request, ingestion_id: str) -> Response:
        if self.behind_feature_flag and not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        body = request.data.dict() if hasattr(request.data, "dict") else request.data
        body = {} if body in (None, "") else body
        serializer = self.input_serializer(data=body)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        query = request.query_params
        # Checked before the dry-run branch: a header the execution would refuse is refused
        # on the dry-run too, so a client's dry-run-then-execute never fails half-way.
        idempotency_key(request)
        flags = query_flags(request, "confirm", "dry_run")
        dry_run = data.get("dry_run", False) or flags.get("dry_run", False)
        if dry_run:
            plan = refresh_preview(
                ingestion=ingestion,
                kind=self.kind,
                actor=request.user,
                mode=data.get("mode"),
                auto_run=data.get("auto_run", True),
                scope=data.get("scope"),
            )
            return Response(preview_payload(plan))

        confirm = data.get("confirm") is True or flags.get("confirm", False)

        def execute() -> Response:
            operation = refresh_execute(
                ingestion=ingestion,
                kind=self.kind,
                actor=request.user,
                confirm=confirm,
                auto_run=data.get("auto_run", True),
                plan_id=data.get("plan_id"),
                mode=data.get("mode"),
                on_partial_failure=data.get("on_partial_failure", OnPartialFailure.DECIDE),
                retain_days=data.get("retain_days"),
                scope=data.get("scope"),
            )
            return operation_response(operation)

        return idempotent(request, body={**body, **query.dict()}, answer=execute)


def idempotency_key(request) -> str | None:
    """The request's `Idempotency-Key`, refused (400) when longer than can be kept. Checked
    on dry-runs too: a header the execution would refuse is refused on the preview, so a
    client's dry-run-then-execute never fails half-way."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise serializers.ValidationError(
            {IDEMPOTENCY_HEADER: [f"At most {IDEMPOTENCY_KEY_MAX_LENGTH} characters."]}
        )
    return key


def idempotent(request, *, body: dict, answer: Callable[[], Response]) -> Response:
    """`answer()` once per `Idempotency-Key` (when the request has one): the same key and
    body within the TTL replay the first response, byte for byte; another body with the key
    is a 422, a retry while the first is answering a 409. A refusal (an exception) keeps
    nothing, so the client may retry with the key."""
    key = idempotency_key(request)
    if not key:
        return answer()
    request_fingerprint = fingerprint(method=request.method, path=request.path, body=body)
    replay = idempotency_begin(user=request.user, key=key, request_fingerprint=request_fingerprint)
    if replay is not None:
        return Response(
            replay.response,
            status=replay.status_code,
            headers={**replay.headers, "Idempotent-Replayed": "true"},
        )
    try:
        response = answer()
    except BaseException:
        idempotency_release(user=request.user, key=key)
        raise
    idempotency_complete(
        user=request.user,
        key=key,
        status_code=response.status_code,
        # Stored as rendered, so the replay is byte-for-byte the same JSON.
        body=json.loads(JSONRenderer().render(response.data)),
        headers={name: response[name] for name in ("X-Operation-ID",) if response.has_header(name)},
    )
    return response


def operation_response(operation) -> Response:
    payload = operation_payload(operation)
    return Response(
        payload,
        status=HTTP_STATUS_BY_OPERATION_STATUS[operation.status],
        headers={"X-Operation-ID": operation.public_id},
    )


EXAMPLES = [
    OpenApiExample("Execute", value={"confirm": True, "auto_run": True}, request_only=True),
    OpenApiExample("Dry run", value={"dry_run": True}, request_only=True),
    OpenApiExample(
        "Large operation with its plan",
        value={"confirm": True, "plan_id": "plan-0123456789ab"},
        request_only=True,
    ),
]


class FullRefreshApi(RefreshApiView):
    kind = OperationKind.FULL_REFRESH
    input_serializer = FullRefreshInputSerializer

    @extend_schema(
        operation_id="ingestions_full_refresh",
        summary="Reload every file (or those of a scope) into a new version, published when "
        "the run ends",
        request=FullRefreshInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=EXAMPLES,
        responses={200: DRY_RUN_OR_OPERATION_SCHEMA, 202: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, ingestion_id: str):
        return self.execute(request, ingestion_id)


class FreshStartApi(RefreshApiView):
    kind = OperationKind.FRESH_START

    @extend_schema(
        operation_id="ingestions_fresh_start",
        summary="A new table of only the new files, published when the run ends",
        request=RefreshInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=EXAMPLES,
        responses={200: DRY_RUN_OR_OPERATION_SCHEMA, 202: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, ingestion_id: str):
        return self.execute(request, ingestion_id)


class DropTableInputSerializer(RefreshInputSerializer):
    # Dropping the table alone never triggers a run, so nothing is staged either.
    auto_run = None
    mode = None
    on_partial_failure = None


class DropTableApi(RefreshApiView):
    kind = OperationKind.DROP_TABLE
    input_serializer = DropTableInputSerializer

    @extend_schema(
        operation_id="ingestions_drop_table",
        summary="Drop the table only (idempotent); history and runs untouched",
        request=DropTableInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, *DELETE_PARAMETERS],
        responses={200: DRY_RUN_OR_OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def delete(self, request, ingestion_id: str):
        return self.execute(request, ingestion_id)


class ProcessedFilesApi(RefreshApiView):
    kind = OperationKind.CLEAR_PROCESSED_FILES
    input_serializer = DropTableInputSerializer
    behind_feature_flag = False

    class Pagination(StrictCursorPagination):
        ordering = "id"
        page_size = 100
        max_page_size = 1000

    pagination_class = Pagination  # read by the schema: the list is paginated

    @extend_schema(
        operation_id="ingestions_processed_files_list",
        responses={200: ProcessedFileOutputSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_processedfile")
        paginator = self.Pagination()
        page = paginator.paginate_queryset(
            processed_file_list(ingestion=ingestion), request, view=self
        )
        return paginator.get_paginated_response(ProcessedFileOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="ingestions_processed_files_clear",
        summary="Clear the processed-file history (the next run reloads every file)",
        request=DropTableInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, *DELETE_PARAMETERS],
        responses={200: DRY_RUN_OR_OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def delete(self, request, ingestion_id: str):
        return self.execute(request, ingestion_id)
