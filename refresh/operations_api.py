"""REST views of refresh operations once they exist: the record, resume, publish or
discard (a zero-downtime refresh whose run had failures), undo, and an ingestion's list.

Views parse, call the services (`refresh.services`, `refresh.sync`, `refresh.undo`), and
present; every rule lives in the services.
"""

from django.conf import settings
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from ingestions.api import COMMON_ERRORS, TenantAPIView, query_flags
from ingestions.pagination import StrictLimitOffsetPagination
from ingestions.serializers import StrictSerializer

from .api import CONFIRM_OR_DRY_RUN, OPERATION_SCHEMA, REFRESH_ERRORS, operation_response
from .errors import RefreshApiDisabledError
from .presenters import operation_payload
from .selectors import operation_get, operation_list
from .services import refresh_resume
from .sync import operation_as_of_run, refresh_decide
from .undo import refresh_undo, undo_preview

UNDO_PREVIEW_SCHEMA = inline_serializer(
    name="RefreshUndoPreviewResponse",
    fields={
        "dry_run": serializers.BooleanField(default=True),
        "operation_id": serializers.CharField(),
        "undoable": serializers.BooleanField(),
        "blocked_by": serializers.DictField(allow_null=True),
        "restores": serializers.DictField(help_text="What comes back."),
        "discards": serializers.DictField(help_text="What is lost: rows loaded since."),
        "retained_until": serializers.DateTimeField(allow_null=True),
        "retained_bytes": serializers.IntegerField(),
    },
)


class OperationDetailApi(TenantAPIView):
    @extend_schema(
        operation_id="refresh_operations_retrieve",
        responses={200: OPERATION_SCHEMA, **COMMON_ERRORS},
    )
    def get(self, request, operation_id: str):
        operation = operation_get(tenant=self.tenant, operation_id=operation_id)
        self.require("view_ingestion")
        payload = operation_payload(operation_as_of_run(operation=operation))
        return Response(payload, headers={"X-Operation-ID": operation.public_id})


class OperationResumeApi(TenantAPIView):
    @extend_schema(
        operation_id="refresh_operations_resume",
        summary="Finish the remaining steps of a partial failure",
        request=None,
        responses={202: OPERATION_SCHEMA, 200: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, operation_id: str):
        if not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        operation = operation_get(tenant=self.tenant, operation_id=operation_id)
        operation = refresh_resume(operation=operation, actor=request.user)
        return operation_response(operation)


class DecisionInputSerializer(StrictSerializer):
    openapi_extra = {"required": ["confirm"], "properties": {"confirm": {"enum": [True]}}}

    confirm = serializers.JSONField(
        required=False, allow_null=True, help_text="Must be the JSON boolean true."
    )


class OperationDecisionApi(TenantAPIView):
    """Publish or discard what a zero-downtime refresh loaded when some files failed."""

    publish: bool

    def post(self, request, operation_id: str):
        if not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        operation = operation_get(tenant=self.tenant, operation_id=operation_id)
        serializer = DecisionInputSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        confirm = serializer.validated_data.get("confirm") is True or query_flags(
            request, "confirm"
        ).get("confirm", False)
        operation = refresh_decide(
            operation=operation, actor=request.user, publish=self.publish, confirm=confirm
        )
        return Response(
            operation_payload(operation), headers={"X-Operation-ID": operation.public_id}
        )


class OperationPublishApi(OperationDecisionApi):
    publish = True

    @extend_schema(
        operation_id="refresh_operations_publish",
        summary="Publish what an atomic refresh loaded although some files failed",
        request=DecisionInputSerializer,
        responses={200: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, operation_id: str):
        return super().post(request, operation_id)


class OperationDiscardApi(OperationDecisionApi):
    publish = False

    @extend_schema(
        operation_id="refresh_operations_discard",
        summary="Discard what an atomic refresh loaded; the table stays as it was",
        request=DecisionInputSerializer,
        responses={200: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, operation_id: str):
        return super().post(request, operation_id)


class UndoInputSerializer(StrictSerializer):
    openapi_extra = CONFIRM_OR_DRY_RUN

    confirm = serializers.JSONField(
        required=False, allow_null=True, help_text="Must be the JSON boolean true to undo."
    )
    dry_run = serializers.BooleanField(default=False)


class OperationUndoApi(TenantAPIView):
    @extend_schema(
        operation_id="refresh_operations_undo",
        summary="Undo an operation: the table and its file history back as they were before it",
        description="With dry_run=true, says what comes back, what is lost (rows loaded "
        "since) and what blocks the undo, changing nothing. With confirm=true, undoes it. "
        "Same permission as the operation; idempotent: an undone operation is returned as "
        "it is.",
        request=UndoInputSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="RefreshUndoResponse",
                serializers=[UNDO_PREVIEW_SCHEMA, OPERATION_SCHEMA],
                resource_type_field_name=None,
            ),
            **REFRESH_ERRORS,
        },
    )
    def post(self, request, operation_id: str):
        if not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        operation = operation_get(tenant=self.tenant, operation_id=operation_id)
        serializer = UndoInputSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        data, query = serializer.validated_data, query_flags(request, "confirm", "dry_run")
        if data.get("dry_run") or query.get("dry_run"):
            plan = undo_preview(operation=operation, actor=request.user)
            return Response(
                {"dry_run": True, **plan.as_response()},
                headers={"X-Operation-ID": operation.public_id},
            )
        confirm = data.get("confirm") is True or query.get("confirm", False)
        operation = refresh_undo(operation=operation, actor=request.user, confirm=confirm)
        return Response(
            operation_payload(operation), headers={"X-Operation-ID": operation.public_id}
        )


class IngestionOperationsApi(TenantAPIView):
    class Pagination(StrictLimitOffsetPagination):
        default_limit = 20
        max_limit = 200

    pagination_class = Pagination  # read by the schema: the list is paginated

    @extend_schema(
        operation_id="ingestions_refresh_operations_list",
        # The same component as the single operation's, as a list.
        responses={200: OPERATION_SCHEMA.__class__(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        paginator = self.Pagination()
        page = paginator.paginate_queryset(operation_list(ingestion=ingestion), request, view=self)
        return paginator.get_paginated_response([operation_payload(op) for op in page])
