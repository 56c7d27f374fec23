"""REST views of schedules (`refresh.schedules`): an ingestion's schedules, one schedule
(pause, resume, delete), and the standing approval of a costly scheduled refresh."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from ingestions.api import COMMON_ERRORS, ERROR_SCHEMA, TenantAPIView
from ingestions.cron import time_zones
from ingestions.serializers import CRON_PATTERN, AmountField, StrictSerializer

from .conditions import FACTS, MAX_CONDITION_LENGTH, OPTIONAL_CONDITION_PATTERN
from .models import ScheduleAction
from .schedules import (
    REFRESH_ACTIONS,
    schedule_approve,
    schedule_clear,
    schedule_get,
    schedule_list,
    schedule_payload,
    schedule_set,
)

SCHEDULE_SCHEMA = inline_serializer(
    name="Schedule",
    fields={
        "id": serializers.CharField(),
        "ingestion_id": serializers.CharField(),
        "action": serializers.ChoiceField(ScheduleAction.choices),
        "cron": serializers.CharField(),
        "timezone": serializers.CharField(),
        "description": serializers.CharField(),
        "paused": serializers.BooleanField(),
        "condition": serializers.CharField(
            allow_null=True,
            help_text="A scheduled refresh fires only when this holds at its slot; null: always.",
        ),
        "next_fire_times": serializers.ListField(
            child=serializers.DateTimeField(),
            help_text="The next 3 slots in the schedule's time zone; empty while paused.",
        ),
        "last_fired_at": serializers.DateTimeField(allow_null=True),
        "last_firing": serializers.DictField(
            allow_null=True,
            help_text="slot, outcome (fired, skipped, refused, failed, pending), reason "
            "(CONDITION_NOT_MET when a condition did not hold), skipped_slots (missed slots not "
            "caught up), facts (a conditional schedule's facts at the firing), run_id, "
            "operation_id.",
        ),
        "approval": serializers.DictField(
            allow_null=True, help_text="max_cost_usd, approved_by, approved_at."
        ),
        "created_by": serializers.CharField(
            allow_null=True, help_text="Whose authority a scheduled refresh fires with."
        ),
        "created_at": serializers.DateTimeField(),
        "updated_at": serializers.DateTimeField(),
    },
)
SCHEDULE_ERRORS = {
    400: OpenApiResponse(ERROR_SCHEMA, description="VALIDATION_ERROR / INVALID_CONDITION"),
    **COMMON_ERRORS,
}


class ScheduleInputSerializer(StrictSerializer):
    openapi_extra = {
        "properties": {
            "cron": {"pattern": CRON_PATTERN},
            "timezone": {"enum": sorted(time_zones())},
            "condition": {
                "pattern": OPTIONAL_CONDITION_PATTERN,
                "maxLength": MAX_CONDITION_LENGTH,
            },
        }
    }

    cron = serializers.CharField(
        max_length=120, help_text="Five fields: minute hour day-of-month month day-of-week."
    )
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="IANA name.")
    paused = serializers.BooleanField(default=False)
    condition = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,  # the condition language reads it (and refuses a blank one)
        help_text="A scheduled refresh fires only when this holds at its slot, measured on "
        "the refresh's preview, e.g. 'changed_files > 0'; otherwise the firing is skipped "
        f"with the facts. Facts: {', '.join(FACTS)}. Compare with == != < <= > >=, combine "
        'with and, or, not and parentheses. "" removes it.',
    )


class IngestionSchedulesApi(TenantAPIView):
    class CreateInputSerializer(ScheduleInputSerializer):
        action = serializers.ChoiceField(
            choices=REFRESH_ACTIONS,
            help_text="The refresh to fire. The run schedule is the ingestion's `schedule` "
            "(PATCH /api/v1/ingestions/{id}).",
        )

    @extend_schema(
        operation_id="ingestions_schedules_list",
        summary="The ingestion's schedules: its run schedule and its scheduled refreshes",
        responses={200: SCHEDULE_SCHEMA.__class__(many=True), **COMMON_ERRORS},
    )
    def get(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        return Response([schedule_payload(item) for item in schedule_list(ingestion=ingestion)])

    @extend_schema(
        operation_id="ingestions_schedules_create",
        summary="Schedule a refresh (fired by the worker, as you, from the next slot)",
        request=CreateInputSerializer,
        responses={201: SCHEDULE_SCHEMA, **SCHEDULE_ERRORS},
    )
    def post(self, request, ingestion_id: str):
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        serializer = self.CreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_set(
            ingestion=ingestion, actor=request.user, **serializer.validated_data
        )
        return Response(schedule_payload(schedule), status=status.HTTP_201_CREATED)


class ScheduleDetailApi(TenantAPIView):
    class UpdateInputSerializer(ScheduleInputSerializer):
        cron = serializers.CharField(max_length=120, required=False)
        timezone = serializers.CharField(max_length=64, required=False)
        paused = serializers.BooleanField(required=False)

    @extend_schema(
        operation_id="schedules_retrieve", responses={200: SCHEDULE_SCHEMA, **COMMON_ERRORS}
    )
    def get(self, request, schedule_id: str):
        schedule = schedule_get(tenant=self.tenant, schedule_id=schedule_id)
        self.require("view_ingestion", schedule.ingestion)
        return Response(schedule_payload(schedule))

    @extend_schema(
        operation_id="schedules_update",
        summary="Change the expression or time zone, pause or resume",
        request=UpdateInputSerializer,
        responses={200: SCHEDULE_SCHEMA, **SCHEDULE_ERRORS},
    )
    def patch(self, request, schedule_id: str):
        schedule = schedule_get(tenant=self.tenant, schedule_id=schedule_id)
        self.require("view_ingestion", schedule.ingestion)
        serializer = self.UpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_set(
            ingestion=schedule.ingestion,
            actor=request.user,
            action=schedule.action,
            schedule=schedule,
            **serializer.validated_data,
        )
        return Response(schedule_payload(schedule))

    @extend_schema(
        operation_id="schedules_destroy",
        request=None,
        responses={204: None, **COMMON_ERRORS},
    )
    def delete(self, request, schedule_id: str):
        schedule = schedule_get(tenant=self.tenant, schedule_id=schedule_id)
        self.require("view_ingestion", schedule.ingestion)
        schedule_clear(schedule=schedule, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScheduleApproveApi(TenantAPIView):
    class ApproveInputSerializer(StrictSerializer):
        max_cost_usd = AmountField(
            max_digits=12,
            decimal_places=2,
            help_text="Firings estimated above the plan threshold execute up to this cost.",
        )

    @extend_schema(
        operation_id="schedules_approve",
        summary="Record an admin's standing approval of a scheduled refresh, up to a cost",
        request=ApproveInputSerializer,
        responses={200: SCHEDULE_SCHEMA, **SCHEDULE_ERRORS},
    )
    def post(self, request, schedule_id: str):
        schedule = schedule_get(tenant=self.tenant, schedule_id=schedule_id)
        self.require("view_ingestion", schedule.ingestion)
        serializer = self.ApproveInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        schedule = schedule_approve(
            schedule=schedule,
            actor=request.user,
            max_cost_usd=serializer.validated_data["max_cost_usd"],
        )
        return Response(schedule_payload(schedule))
