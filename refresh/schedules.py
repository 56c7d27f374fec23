"""Schedules: runs and refresh operations fired by the worker from a cron expression.

A schedule is a five-field cron expression read in an IANA time zone (`Europe/Berlin`),
and an action: `run` (the ingestion's run schedule, one per ingestion, the `schedule` of
the ingestion API) or a refresh (`full_refresh`, `fresh_start`: any number).

Rules, all here:

- **Slots.** A slot is an instant the expression names in its time zone, stored in UTC.
  Daylight saving time follows cronsim (like Debian's cron): a time skipped when clocks go
  forward fires at the first instant after the gap (Europe/Berlin's 02:30 fires at 03:00 on
  the spring-forward day); a time that occurs twice when clocks go back fires once, at its
  first occurrence. Every-N-minutes expressions keep firing through both.
- **At most one firing per slot**, whatever the number of workers: a firing is the insert
  of a `ScheduleFiring` row, unique per (schedule, slot), so the database refuses the
  second. A run's firing and its run are committed together; a refresh executes after its
  firing is committed (it takes minutes and has its own durable record), so a worker killed
  in between leaves the firing `pending` and that slot unfired.
- **Missed slots** (the worker was down): on catch-up the schedule fires once, for the
  latest missed slot; the older ones are skipped and counted on the firing
  (`skipped_slots`), never fired N times.
- **Bounds.** No expression may fire more often than every
  `AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS` (checked over its next firings).
- **Conditions.** A refresh schedule may carry a condition (`refresh.conditions`, checked
  when it is set): at each slot the refresh is previewed and fires only if the condition
  holds on that listing; otherwise the firing is `skipped` (CONDITION_NOT_MET) with the
  facts. A run schedule has none (a run loads only what is new anyway).
- **Pause/resume.** A paused schedule has no next slot; resuming computes it from now (the
  slots passed while paused are not caught up).
- **Authority.** A run schedule fires as the system (setting it needs `change_ingestion`).
  A refresh schedule needs the permission of its kind to set, and fires with the authority
  of `created_by`, the person who last set it, checked again at every firing: protection,
  permissions, rate limits and the plan rule apply as to that person's own call. Above
  `REFRESH_PLAN_REQUIRED_ABOVE_USD` a firing executes only under a standing approval that an
  admin (`refresh.approve_schedule`) recorded with a maximum cost covering the estimate;
  else it is refused and audited. Changing the expression or the action drops the approval.
  The approval holds only while its approver may still approve in the schedule's tenant:
  checked at every firing (the schedule re-read under a row lock), a void approval is
  cleared and audited (`schedule_approval_voided`) before anything executes.
"""

import logging
from datetime import datetime
from decimal import Decimal

from auditlog.models import LogEntry
from django.db import IntegrityError, transaction
from django.utils import timezone as dj_timezone

from ingestions.audit import record_change
from ingestions.cron import Cron, ScheduleInvalidError, cron_parse
from ingestions.errors import (
    AutoloaderError,
    PermissionDeniedError,
)
from ingestions.models import Ingestion

from .conditions import condition_normalized
from .models import Schedule, ScheduleAction
from .specs import spec_of

logger = logging.getLogger(__name__)

APPROVE_PERMISSION = "refresh.approve_schedule"
RUN_SCHEDULE_PERMISSION = "ingestions.change_ingestion"
NEXT_FIRE_TIMES = 3
REFRESH_ACTIONS = (ScheduleAction.FULL_REFRESH, ScheduleAction.FRESH_START)


class ScheduleNotFoundError(AutoloaderError):
    """No schedule with this id is visible to the caller's tenant."""

    error_code = "NOT_FOUND"
    status_code = 404
    help = "List an ingestion's schedules with GET /api/v1/ingestions/{id}/schedules."


class ApprovalRequiredError(AutoloaderError):
    """The scheduled refresh costs more than the plan threshold and no standing approval
    covers it."""

    error_code = "APPROVAL_REQUIRED"
    help = (
        "An admin approves the schedule with a maximum cost: POST /api/v1/schedules/{id}/approve."
    )


# --- cron --------------------------------------------------------------------------------


def cron_of(schedule: Schedule) -> Cron:
    """A stored schedule's expression (validated when it was set)."""
    return Cron(expression=schedule.cron, timezone=schedule.timezone)


# --- selectors ---------------------------------------------------------------------------

# What `schedule_payload` reads, fetched with the schedule.
PAYLOAD_RELATED = (
    "ingestion",
    "created_by",
    "approved_by",
    "last_firing__run",
    "last_firing__operation",
)


def schedule_list(*, ingestion: Ingestion):
    """The ingestion's schedules, the run schedule first, with what a payload shows."""
    return (
        Schedule.objects.filter(ingestion=ingestion)
        .select_related(*PAYLOAD_RELATED)
        .order_by("-action", "created_at", "id")
        # "run" sorts after the refresh actions: reversed, it comes first.
    )


def schedule_get(*, tenant, schedule_id: str) -> Schedule:
    """The tenant's schedule `schedule_id`; another tenant's is not found.

    Raises:
        ScheduleNotFoundError: no such schedule in the tenant.
    """
    schedule = (
        Schedule.objects.filter(public_id=schedule_id, ingestion__tenant=tenant)
        .select_related("ingestion__tenant", *PAYLOAD_RELATED)
        .first()
    )
    if schedule is None:
        raise ScheduleNotFoundError(f"No schedule {schedule_id!r}.")
    return schedule


def run_schedule_payloads(ingestions) -> dict[int, dict]:
    """The run schedule of each of `ingestions` that has one, as the ingestion's API shows it
    (its `schedule` field, registered with `ingestions.hooks`)."""
    return {
        pk: schedule_payload(schedule)
        for pk, schedule in run_schedules_by_ingestion(ingestions).items()
    }


def run_schedule_write(*, ingestion: Ingestion, actor, value: dict | None) -> None:
    """Set (the given fields of) the ingestion's run schedule, or remove it with None."""
    if value is None:
        run_schedule_clear(ingestion=ingestion, actor=actor)
    else:
        schedule_set(ingestion=ingestion, actor=actor, **value)


def refresh_schedule_write(*, ingestion: Ingestion, actor, value: dict) -> dict:
    """The PRD's `refresh_schedule` of `PUT/PATCH /api/v1/ingestions/{id}`: set the
    ingestion's scheduled refresh of `value["operation"]` (the canonical door is
    `POST /api/v1/ingestions/{id}/schedules`; this one calls the same `schedule_set`).

    Idempotent, as a PUT must be: the ingestion's one schedule of that operation is changed
    (given fields change, others keep their value), or created when it has none.

    Returns:
        The schedule's payload.

    Raises:
        ScheduleInvalidError: an unknown operation, or several schedules of it (which one
            is meant cannot be told: change it by its id).
        And whatever `schedule_set` raises.
    """
    value = dict(value)
    action = value.pop("operation", None)
    if action not in REFRESH_ACTIONS:
        raise ScheduleInvalidError(
            {"refresh_schedule": [f"operation: one of {', '.join(REFRESH_ACTIONS)}."]}
        )
    existing = list(Schedule.objects.filter(ingestion=ingestion, action=action)[:2])
    if len(existing) > 1:
        raise ScheduleInvalidError(
            {
                "refresh_schedule": [
                    f"This ingestion has several {action} schedules: change one by its id "
                    "(PATCH /api/v1/schedules/{id}; GET /api/v1/ingestions/{id}/schedules "
                    "lists them)."
                ]
            }
        )
    schedule = schedule_set(
        ingestion=ingestion,
        actor=actor,
        action=action,
        schedule=existing[0] if existing else None,
        **value,
    )
    return schedule_payload(schedule)


def run_schedules_by_ingestion(ingestions) -> dict[int, Schedule]:
    """The run schedules of `ingestions` in one query: {ingestion pk: schedule}."""
    pks = [ingestion.pk for ingestion in ingestions]
    schedules = Schedule.objects.filter(ingestion__in=pks, action=ScheduleAction.RUN)
    return {
        schedule.ingestion_id: schedule for schedule in schedules.select_related(*PAYLOAD_RELATED)
    }


# --- services ----------------------------------------------------------------------------


def schedule_permission(action: str) -> str:
    """The permission that sets, changes, pauses or deletes a schedule of `action`."""
    if action == ScheduleAction.RUN:
        return RUN_SCHEDULE_PERMISSION
    return spec_of(action).permission


def _require(actor, permission: str, ingestion: Ingestion, what: str) -> None:
    if not actor.has_perm(permission, ingestion):
        raise PermissionDeniedError(f"Your role does not allow {what} on this ingestion.")


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def schedule_set(
    *,
    ingestion: Ingestion,
    actor,
    action: str = ScheduleAction.RUN,
    cron: str | None = None,
    timezone: str | None = None,
    paused: bool | None = None,
    condition: str | None = None,
    schedule: Schedule | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Create or change a schedule; what is not given keeps its value ("" clears a
    condition).

    The `run` action has one schedule per ingestion: setting it again changes it. A refresh
    action creates a new schedule unless `schedule` names the one to change. Whoever sets
    the expression becomes the person a refresh fires as (`created_by`).

    Raises:
        PermissionDeniedError: the actor's role does not allow schedules of `action`.
        ScheduleInvalidError: an invalid expression, time zone or action, or a condition on
            a run schedule.
        ConditionInvalidError: the condition is not one of the condition language.
    """
    if action not in ScheduleAction.values:
        raise ScheduleInvalidError({"action": [f"Use one of {', '.join(ScheduleAction.values)}."]})
    _require(actor, schedule_permission(action), ingestion, f"{action.replace('_', ' ')} schedules")
    now = now or dj_timezone.now()
    if schedule is None and action == ScheduleAction.RUN:
        schedule = Schedule.objects.filter(ingestion=ingestion, action=action).first()
    if schedule is None and cron is None:
        raise ScheduleInvalidError({"cron": ["This field is required."]})
    creating = schedule is None
    before = {} if creating else _state(schedule)
    schedule = schedule or Schedule(ingestion=ingestion, action=action)
    parsed = cron_parse(
        cron=schedule.cron if cron is None else cron,
        timezone=(timezone or schedule.timezone or "UTC"),
    )
    timing_changed = creating or (parsed.expression, parsed.timezone) != (
        schedule.cron,
        schedule.timezone,
    )
    schedule.cron, schedule.timezone = parsed.expression, parsed.timezone
    if paused is not None:
        schedule.paused = paused
    if condition is not None:
        if condition.strip() and action == ScheduleAction.RUN:
            raise ScheduleInvalidError(
                {"condition": ["A run schedule has no condition: a run loads only new files."]}
            )
        schedule.condition = condition_normalized(condition)
    if timing_changed:
        schedule.created_by = _user(actor)
        # An approval covered what it saw: another expression is another decision.
        schedule.approved_by = schedule.approved_at = schedule.approved_max_cost_usd = None
    if timing_changed or "paused" in _changed(before, schedule):
        schedule.next_fire_at = None if schedule.paused else parsed.next_after(now)
    with transaction.atomic():
        try:
            with transaction.atomic():
                schedule.save()
        except IntegrityError:  # two requests created the run schedule at once
            raise ScheduleInvalidError(
                {"schedule": ["This ingestion's run schedule was just set: try again."]}
            ) from None
        changes = _changed(before, schedule)
        if changes:
            _audit(
                schedule,
                actor=actor,
                action="schedule_set" if creating else _update_action(changes),
                changes=changes,
                log_action=LogEntry.Action.CREATE if creating else LogEntry.Action.UPDATE,
            )
    return schedule


def _update_action(changes: dict) -> str:
    if set(changes) == {"paused"}:
        return "schedule_paused" if changes["paused"][1] else "schedule_resumed"
    return "schedule_updated"


def schedule_pause(*, schedule: Schedule, actor) -> Schedule:
    """Stop firing until resumed. Raises PermissionDeniedError as `schedule_set`."""
    return schedule_set(
        ingestion=schedule.ingestion,
        actor=actor,
        action=schedule.action,
        paused=True,
        schedule=schedule,
    )


def schedule_resume(*, schedule: Schedule, actor, now: datetime | None = None) -> Schedule:
    """Fire again from the next slot after now (slots passed while paused are not caught up)."""
    return schedule_set(
        ingestion=schedule.ingestion,
        actor=actor,
        action=schedule.action,
        paused=False,
        schedule=schedule,
        now=now,
    )


def schedule_clear(*, schedule: Schedule, actor) -> None:
    """Delete the schedule (its firings go with it; the runs and operations stay).

    Raises:
        PermissionDeniedError: the actor's role does not allow schedules of its action.
    """
    _require(actor, schedule_permission(schedule.action), schedule.ingestion, "this schedule")
    with transaction.atomic():
        _audit(
            schedule,
            actor=actor,
            action="schedule_deleted",
            changes={"schedule": [f"{schedule.action}: {schedule.cron} {schedule.timezone}", None]},
            log_action=LogEntry.Action.DELETE,
        )
        schedule.delete()


def run_schedule_clear(*, ingestion: Ingestion, actor) -> None:
    """Delete the ingestion's run schedule, if it has one (`"schedule": null`)."""
    schedule = Schedule.objects.filter(ingestion=ingestion, action=ScheduleAction.RUN).first()
    if schedule is not None:
        schedule_clear(schedule=schedule, actor=actor)


def schedule_approve(*, schedule: Schedule, actor, max_cost_usd) -> Schedule:
    """Record an admin's standing approval of a scheduled refresh: firings estimated above
    the plan threshold execute while their estimate is at most `max_cost_usd`.

    Raises:
        PermissionDeniedError: the actor is not an admin of the ingestion's tenant.
        ScheduleInvalidError: a run schedule (it needs no approval) or a negative cost.
    """
    _require(actor, APPROVE_PERMISSION, schedule.ingestion, "approving scheduled refreshes")
    if schedule.action == ScheduleAction.RUN:
        raise ScheduleInvalidError({"action": ["A run schedule needs no approval."]})
    max_cost = Decimal(str(max_cost_usd)).quantize(Decimal("0.01"))
    if max_cost < 0:
        raise ScheduleInvalidError({"max_cost_usd": ["Must be zero or more."]})
    before = _state(schedule)
    schedule.approved_by = _user(actor)
    schedule.approved_at = dj_timezone.now()
    schedule.approved_max_cost_usd = max_cost
    with transaction.atomic():
        schedule.save(
            update_fields=["approved_by", "approved_at", "approved_max_cost_usd", "updated_at"]
        )
        _audit(
            schedule,
            actor=actor,
            action="schedule_approved",
            changes=_changed(before, schedule),
            data={"max_cost_usd": float(max_cost)},
        )
    return schedule


def _state(schedule: Schedule) -> dict:
    approved = schedule.approved_max_cost_usd
    return {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "paused": schedule.paused,
        "condition": schedule.condition,
        "approved_max_cost_usd": None if approved is None else float(approved),
    }


def _changed(before: dict, schedule: Schedule) -> dict:
    after = _state(schedule)
    return {
        key: [before.get(key), value] for key, value in after.items() if before.get(key) != value
    }


def _audit(schedule: Schedule, *, actor, action: str, changes: dict, **options) -> LogEntry:
    """Schedule entries sit on the ingestion, so its audit trail shows them."""
    ingestion = schedule.ingestion
    data = {
        "ingestion_id": ingestion.public_id,
        "schedule_id": schedule.public_id,
        "schedule_action": schedule.action,
        **options.pop("data", {}),
    }
    return record_change(
        actor=actor,
        obj=ingestion,
        tenant=ingestion.tenant,
        action=action,
        changes=changes,
        object_repr=f"{ingestion.public_id} ({ingestion.destination_table})",
        data=data,
        **options,
    )


# --- presenting --------------------------------------------------------------------------


def schedule_payload(schedule: Schedule, *, now: datetime | None = None) -> dict:
    """A schedule as the API shows it: next firing times in its time zone (none when
    paused), its last firing and its approval."""
    now = now or dj_timezone.now()
    cron = cron_of(schedule)
    approved = schedule.approved_max_cost_usd
    last = schedule.last_firing
    return {
        "id": schedule.public_id,
        "ingestion_id": schedule.ingestion.public_id,
        "action": schedule.action,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "description": cron.describe(),
        "paused": schedule.paused,
        "condition": schedule.condition or None,
        "next_fire_times": []
        if schedule.paused
        else [moment.isoformat() for moment in cron.following(now, NEXT_FIRE_TIMES)],
        "last_fired_at": schedule.last_fired_at,
        "last_firing": None
        if last is None
        else {
            "slot": last.slot,
            "outcome": last.outcome,
            "reason": last.reason or None,
            "detail": last.detail or None,
            "skipped_slots": last.skipped_slots,
            "facts": last.facts or None,
            "run_id": last.run.public_id if last.run_id else None,
            "operation_id": last.operation.public_id if last.operation_id else None,
        },
        "approval": None
        if approved is None
        else {
            "max_cost_usd": float(approved),
            "approved_by": getattr(schedule.approved_by, "username", None),
            "approved_at": schedule.approved_at,
        },
        "created_by": getattr(schedule.created_by, "username", None),
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }
