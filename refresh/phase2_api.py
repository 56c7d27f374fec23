"""REST views of the requirements' phase-2 shapes ("Future Enhancements"), accepted as written.

Three are second doors to existing services, with the same rules and refusals:

- `POST /api/v1/batch-refresh` is `POST /api/v1/refresh-batches` (`refresh.batches`);
- `POST /api/v1/ingestions/{id}/refresh-range` is a selective full refresh whose scope is a
  modification-time range of whole UTC days (`ingestions.scope`);
- `PUT /api/v1/ingestions/{id}` with `refresh_schedule` lives with the ingestion's views
  (`ingestions.api`, written by `refresh.schedules.refresh_schedule_write`).

The fourth is new: `POST /api/v1/ingestions/{id}/refresh-if`, a refresh that runs only when
a condition holds (`refresh.conditional`).
"""

import re
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from ingestions.api import TenantAPIView

from .api import (
    CONFIRM_OR_DRY_RUN,
    DRY_RUN_OR_OPERATION_SCHEMA,
    IDEMPOTENCY_PARAMETER,
    OPERATION_SCHEMA,
    REFRESH_ERRORS,
    FullRefreshApi,
    RefreshInputSerializer,
    idempotency_key,
    idempotent,
    operation_response,
)
from .batches_api import RefreshBatchInputSerializer, RefreshBatchListApi
from .conditional import CONDITIONAL_KINDS, refresh_if
from .conditions import CONDITION_PATTERN, FACTS, MAX_CONDITION_LENGTH
from .errors import RefreshApiDisabledError
from .presenters import preview_payload

# --- batch-refresh -----------------------------------------------------------------------


class BatchRefreshApi(RefreshBatchListApi):
    @extend_schema(
        operation_id="batch_refresh_create",
        summary="The PRD's spelling of POST /api/v1/refresh-batches (canonical)",
        description="Accepted as the requirements write it: the same request, rules, refusals "
        "and responses as POST /api/v1/refresh-batches, which is canonical (one preview, "
        "one confirmation, every member's rate slot taken at once, new tables published "
        "only when every member loaded). The batch is then read at "
        "GET /api/v1/refresh-batches/{batch_id} (the Location header).",
        request=RefreshBatchInputSerializer,
        responses={
            200: OpenApiResponse(description="dry_run: each member's plan and the totals"),
            202: OpenApiResponse(description="the batch, loading"),
            **REFRESH_ERRORS,
        },
    )
    def post(self, request):
        return super().post(request)


# --- refresh-range -----------------------------------------------------------------------

# A calendar day the server takes (1970 to 2099); the schema's pattern leaves out 29 February.
_DAY = r"(0[1-9]|1[0-9]|2[0-8])"
DATE_PATTERN = (
    r"^(19[7-9][0-9]|20[0-9][0-9])-"
    rf"((0[13578]|1[02])-({_DAY[1:-1]}|29|30|31)|(0[469]|11)-({_DAY[1:-1]}|29|30)|02-{_DAY})$"
)
_SERVER_DATE = re.compile(r"^(19[7-9][0-9]|20[0-9][0-9])-[0-9]{2}-[0-9]{2}$")
# The bound before the first day: a scope's modified_after is exclusive.
ONE_MICROSECOND = timedelta(microseconds=1)


def range_scope(start: date, end: date) -> dict:
    """The scope of the days `start` to `end`, both included, in UTC: files modified from
    `start` 00:00:00 up to (not including) the day after `end` 00:00:00."""
    first = datetime.combine(start, time.min, tzinfo=UTC)
    after_last = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
    return {"modified_after": first - ONE_MICROSECOND, "modified_before": after_last}


class RefreshRangeInputSerializer(RefreshInputSerializer):
    openapi_extra = {
        **CONFIRM_OR_DRY_RUN,
        "properties": {
            "start_date": {"pattern": DATE_PATTERN},
            "end_date": {"pattern": DATE_PATTERN},
        },
    }

    start_date = serializers.CharField(
        help_text="The first day (YYYY-MM-DD, a UTC day, included): files modified from its "
        "00:00:00 UTC."
    )
    end_date = serializers.CharField(
        help_text="The last day (YYYY-MM-DD, a UTC day, included): files modified before the "
        "next day's 00:00:00 UTC. The same as start_date for one day; given before "
        "start_date, the two are swapped (the same days)."
    )
    operation = serializers.ChoiceField(
        choices=["reprocess"],
        default="reprocess",
        help_text="reprocess: reload those files, replacing their rows (the only operation).",
    )

    def _day(self, value: str, field: str) -> date:
        try:
            if not _SERVER_DATE.match(value):
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            raise serializers.ValidationError(
                {field: ["A date YYYY-MM-DD between 1970-01-01 and 2099-12-31."]}
            ) from None

    def validate(self, attrs):
        start = self._day(attrs["start_date"], "start_date")
        end = self._day(attrs["end_date"], "end_date")
        # The days between the two, whichever comes first: the schema cannot say that one
        # date must follow the other, so the server does not ask it (the preview shows them).
        return {**attrs, "scope": range_scope(min(start, end), max(start, end))}


class RefreshRangeApi(FullRefreshApi):
    input_serializer = RefreshRangeInputSerializer

    @extend_schema(
        operation_id="ingestions_refresh_range",
        summary="The PRD's selective refresh by date: a full refresh scoped to files modified "
        "on those days (canonical: full-refresh with a scope)",
        description="Accepted as the requirements write it. Days are whole UTC days (an "
        "ingestion has no time zone of its own) and both are included: start_date "
        "2025-01-01 and end_date 2025-01-31 reload every source file whose modification "
        "time is from 2025-01-01T00:00:00Z up to (not including) 2025-02-01T00:00:00Z, and "
        "replace their rows (and the rows of history files of those days no longer in the "
        "source) in one commit when the run ends. It is exactly POST "
        "/api/v1/ingestions/{id}/full-refresh with "
        '{"scope": {"modified_after": "2024-12-31T23:59:59.999999Z", "modified_before": '
        '"2025-02-01T00:00:00Z"}} (canonical; modified_after is exclusive, hence the last '
        "microsecond of the day before): the same dry-run, confirmation, plan, protection, "
        "rate and idempotency rules.",
        request=RefreshRangeInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=[
            # A preview only: executing refuses a range in which no file was modified.
            OpenApiExample(
                "January, previewed",
                value={
                    "start_date": "2025-01-01",
                    "end_date": "2025-01-31",
                    "operation": "reprocess",
                    "dry_run": True,
                },
                request_only=True,
            ),
        ],
        responses={200: DRY_RUN_OR_OPERATION_SCHEMA, 202: OPERATION_SCHEMA, **REFRESH_ERRORS},
    )
    def post(self, request, ingestion_id: str):
        return self.execute(request, ingestion_id)


# --- refresh-if --------------------------------------------------------------------------

CONDITION_HELP = (
    "Runs only when this holds now, measured on the preview's listing. Facts: "
    + "; ".join(f"{name}: {meaning}" for name, meaning in FACTS.items())
    + ". Compare with == != < <= > >= (numbers: integers or decimals), combine with and, or, "
    "not and parentheses; nothing else (no strings, calls, attributes). At most "
    f"{MAX_CONDITION_LENGTH} characters. The schema's pattern describes the conditions "
    "without parentheses; parenthesized ones are accepted too."
)
CONDITION_SCHEMA = inline_serializer(
    name="ConditionVerdict",
    fields={
        "expression": serializers.CharField(),
        "holds": serializers.BooleanField(),
        "facts": serializers.DictField(child=serializers.FloatField()),
        "explanation": serializers.ListField(
            child=serializers.DictField(),
            help_text="Each comparison with the values compared and its result.",
        ),
    },
)
REFRESH_IF_SCHEMA = inline_serializer(
    name="RefreshIfResponse",
    fields={
        "status": serializers.CharField(
            help_text="skipped (the condition did not hold), dry_run, or the operation's "
            "status (accepted...) when it ran."
        ),
        "ran": serializers.BooleanField(),
        "message": serializers.CharField(),
        "ingestion_id": serializers.CharField(),
        "condition": CONDITION_SCHEMA,
        "operation_id": serializers.CharField(required=False),
        "plan_id": serializers.CharField(required=False),
    },
)


class RefreshIfInputSerializer(RefreshInputSerializer):
    openapi_extra = {
        **CONFIRM_OR_DRY_RUN,
        "properties": {
            "condition": {"pattern": CONDITION_PATTERN, "maxLength": MAX_CONDITION_LENGTH}
        },
    }

    # Options of a plain refresh that a conditional one does not take (it runs with the
    # defaults): the fewer doors, the fewer rules to keep in step.
    auto_run = None
    mode = None
    on_partial_failure = None
    retain_days = None

    condition = serializers.CharField(trim_whitespace=False, help_text=CONDITION_HELP)
    operation = serializers.ChoiceField(choices=[kind.value for kind in CONDITIONAL_KINDS])


class RefreshIfApi(TenantAPIView):
    @extend_schema(
        operation_id="ingestions_refresh_if",
        summary="Refresh only if a condition over the ingestion's facts holds now",
        description="The requirements' conditional refresh. The condition is measured on the "
        "listing of the refresh's own preview (one listing), and the answer says whether "
        "it ran and why, with the facts' values. When it holds, the refresh is exactly "
        "POST /api/v1/ingestions/{id}/full-refresh (or fresh-start) with confirm=true and "
        "plan_id (needed above the cost threshold, from a dry-run); when it does not, "
        "nothing starts and no rate slot is used. A call that executes is refused as the "
        "refresh would be (permission, confirm, protection, a run in progress) before "
        "anything is listed. dry_run=true previews and says whether it would run. With an "
        "Idempotency-Key, a retried execution replays the first answer (ran or skipped) "
        "instead of measuring the facts again.",
        request=RefreshIfInputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        examples=[
            OpenApiExample(
                "Only when files changed",
                value={
                    "condition": "changed_files > 0 or new_files >= 100",
                    "operation": "full_refresh",
                    "confirm": True,
                },
                request_only=True,
            ),
            OpenApiExample(
                "The PRD's example",
                value={
                    "condition": "file_count > 100",
                    "operation": "full_refresh",
                    "confirm": True,
                },
                request_only=True,
            ),
        ],
        responses={
            200: REFRESH_IF_SCHEMA,
            202: OPERATION_SCHEMA,
            **REFRESH_ERRORS,
            400: OpenApiResponse(
                REFRESH_ERRORS[400].response,
                description="INVALID_CONDITION (with facts: each fact and its meaning) / "
                "CONFIRMATION_REQUIRED / DRY_RUN_REQUIRED / VALIDATION_ERROR",
            ),
        },
    )
    def post(self, request, ingestion_id: str):
        if not settings.ENABLE_REFRESH_OPERATIONS_API:
            raise RefreshApiDisabledError("The refresh operations API is disabled.")
        ingestion = self.get_ingestion(ingestion_id, "view_ingestion")
        serializer = RefreshIfInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        idempotency_key(request)
        if data["dry_run"]:
            return self.answer(request, ingestion, data)
        # An execution with a key answers once: a retry replays the first answer, ran or
        # skipped, instead of measuring the facts again.
        return idempotent(
            request,
            body=request.data.dict() if hasattr(request.data, "dict") else dict(request.data),
            answer=lambda: self.answer(request, ingestion, data),
        )

    def answer(self, request, ingestion, data) -> Response:
        outcome = refresh_if(
            ingestion=ingestion,
            kind=data["operation"],
            actor=request.user,
            condition=data["condition"],
            confirm=data.get("confirm"),
            dry_run=data["dry_run"],
            plan_id=data.get("plan_id"),
        )
        verdict = outcome.verdict
        condition = verdict.as_response()
        if outcome.operation is not None:
            response = operation_response(outcome.operation)
            response.data = {**response.data, "ran": True, "condition": condition}
            return response
        if data["dry_run"]:
            would = "would run" if verdict.holds else "would not run"
            return Response(
                {
                    **preview_payload(verdict.plan),
                    "ran": False,
                    "message": f"Preview (not executed): the refresh {would}. {verdict.summary()}",
                    "condition": condition,
                }
            )
        return Response(
            {
                "status": "skipped",
                "ran": False,
                "message": f"{verdict.summary()} Nothing ran.",
                "ingestion_id": ingestion.public_id,
                "operation_type": data["operation"],
                "plan_id": verdict.plan.plan_id,
                "condition": condition,
            },
            status=status.HTTP_200_OK,
        )
