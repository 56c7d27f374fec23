"""REST views of batch refreshes (`refresh.batches`): dry-run, execute, list and follow a
batch of ingestions refreshed together."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from ingestions.api import COMMON_ERRORS, TenantAPIView
from ingestions.serializers import StrictSerializer

from .api import CONFIRM_OR_DRY_RUN, REFRESH_ERRORS
from .batches import (
    BATCH_KINDS,
    MAX_BATCH_MEMBERS,
    batch_execute,
    batch_get,
    batch_operations,
    batch_preview,
)
from .errors import RefreshApiDisabledError
from .presenters import batch_payload


class RefreshBatchInputSerializer(StrictSerializer):
    openapi_extra = {**CONFIRM_OR_DRY_RUN, "properties": {"ingestion_ids": {"uniqueItems": True}}}

    ingestion_ids = serializers.ListField(
        child=serializers.CharField(max_length=63), min_length=1, max_length=MAX_BATCH_MEMBERS
    )
    operation = serializers.ChoiceField(choices=[kind.value for kind in BATCH_KINDS])
    confirm = serializers.JSONField(
        required=False, allow_null=True, help_text="Must be the JSON boolean true to execute."
    )
    dry_run = serializers.BooleanField(default=False)
    plan_id = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=63,
        help_text="The batch dry-run's plan_id: its members' plans, for members whose cost "
        "needs one.",
    )


class RefreshBatchListApi(TenantAPIView):
    """Refresh several ingestions together: one preview, one confirmation, and their new
    tables published only when every one of them has loaded (a failure publishes none)."""

    @extend_schema(
        operation_id="refresh_batches_create",
        description="The canonical spelling; POST /api/v1/batch-refresh (the requirements' "
        "phase-2 shape) is the same endpoint under another name.",
        request=RefreshBatchInputSerializer,
        responses={
            200: OpenApiResponse(description="dry_run: each member's plan and the totals"),
            202: OpenApiResponse(description="the batch, loading"),
            **REFRESH_ERRORS,
        },
    )
    def post(self, request):
        if not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        serializer = RefreshBatchInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        options = {
            "tenant": self.tenant,
            "ingestion_ids": data["ingestion_ids"],
            "kind": data["operation"],
            "actor": request.user,
        }
        if data["dry_run"]:
            batch, plans = batch_preview(**options)
            return Response(batch_payload(batch, {}, plans=plans))
        batch = batch_execute(**options, confirm=data.get("confirm"), plan_id=data.get("plan_id"))
        return Response(
            batch_payload(batch, batch_operations(batch)),
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/refresh-batches/{batch.public_id}"},
        )


class RefreshBatchDetailApi(TenantAPIView):
    @extend_schema(
        operation_id="refresh_batches_retrieve",
        responses={200: OpenApiResponse(description="the batch and its members"), **COMMON_ERRORS},
    )
    def get(self, request, batch_id: str):
        self.require("view_ingestion")
        batch = batch_get(tenant=self.tenant, batch_id=batch_id)
        return Response(batch_payload(batch, batch_operations(batch)))
