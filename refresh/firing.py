"""Firing schedules: the worker's pass that fires each due slot once across workers, runs or
refreshes as the schedule's owner, and records (and audits) what each firing did; a standing
approval is checked, and voided, at the moment of firing; a schedule's condition is measured
then too, and a firing whose condition does not hold is skipped with its facts."""

import logging
from datetime import UTC, datetime
from decimal import Decimal

from auditlog.models import LogEntry
from cronsim import CronSim
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone as dj_timezone

from ingestions.cron import Cron
from ingestions.errors import (
    AutoloaderError,
    PermissionDeniedError,
    RefreshInProgressError,
    RunInProgressError,
    TableProtectedError,
)
from ingestions.models import Membership, RunTrigger
from ingestions.runs import run_request

from .conditional import ConditionVerdict, condition_measure
from .conditions import condition_parse
from .errors import DryRunRequiredError, PlanStaleError, RateLimitedError
from .models import FiringOutcome, Schedule, ScheduleAction, ScheduleFiring
from .preview import refresh_preview
from .schedules import (
    APPROVE_PERMISSION,
    ApprovalRequiredError,
    _audit,
    _changed,
    _state,
    cron_of,
)
from .services import refresh_execute

logger = logging.getLogger("refresh.schedules")

# Catch-up counts the skipped slots up to this many (then says "at least").
SKIPPED_COUNT_LIMIT = 100_000
# A firing refused for these reasons is `refused` (audited); busy ones are `skipped`.
REFUSALS = (
    PermissionDeniedError,
    TableProtectedError,
    RateLimitedError,
    DryRunRequiredError,
    PlanStaleError,
)
BUSY = (RunInProgressError, RefreshInProgressError)


def schedules_fire_due(*, now: datetime | None = None) -> list[ScheduleFiring]:
    """Fire every due schedule once (the worker's reaper calls it; several workers may).

    Returns:
        The firings this call made (a slot another worker fired is not among them).
    """
    now = now or dj_timezone.now()
    due = (
        Schedule.objects.filter(paused=False, next_fire_at__lte=now)
        .select_related("ingestion__tenant", "created_by")
        .order_by("next_fire_at", "id")
    )
    firings = []
    for schedule in list(due):  # read first: firing writes while the cursor would be open
        try:
            firing = _fire(schedule, now=now)
        except Exception:  # one broken schedule must not stop the others
            logger.exception("schedule %s could not fire", schedule.public_id)
            continue
        if firing is not None:
            firings.append(firing)
    return firings


def _fire(schedule: Schedule, *, now: datetime) -> ScheduleFiring | None:
    cron = cron_of(schedule)
    slot = cron.latest_at_or_before(now)
    skipped = _missed_before(cron, first=schedule.next_fire_at, slot=slot)
    try:
        with transaction.atomic():
            # The claim: the database refuses a second firing of this slot.
            with transaction.atomic():
                firing = ScheduleFiring.objects.create(
                    schedule=schedule, slot=slot, skipped_slots=skipped
                )
            advanced = Schedule.objects.filter(
                pk=schedule.pk,
                paused=False,
                next_fire_at=schedule.next_fire_at,
                cron=schedule.cron,
                timezone=schedule.timezone,
            ).update(
                next_fire_at=cron.next_after(now),
                last_fired_at=now,
                last_slot=slot,
                last_firing=firing,
            )
            if not advanced:  # paused, changed or fired meanwhile: not this worker's slot
                raise _Superseded
            if schedule.action == ScheduleAction.RUN:
                _fire_run(firing)
    except (IntegrityError, _Superseded):
        return None
    if schedule.action != ScheduleAction.RUN:
        _fire_refresh(firing)
    logger.info(
        "schedule %s fired for %s: %s%s",
        schedule.public_id,
        slot.isoformat(),
        firing.outcome,
        f" ({skipped} missed slots skipped)" if skipped else "",
    )
    return firing


class _Superseded(Exception):
    """The schedule was paused, changed or deleted between the due query and the claim, or
    between the claim and the start of its refresh."""


def _missed_before(cron: Cron, *, first: datetime, slot: datetime) -> int:
    """How many slots from `first` (a due slot) come before `slot`: the ones catch-up skips."""
    missed = 0
    moments = CronSim(cron.expression, first.astimezone(cron.zone))
    moment = first
    while moment < slot and missed < SKIPPED_COUNT_LIMIT:
        missed += 1
        moment = next(moments).astimezone(UTC)
    return missed


def _fire_run(firing: ScheduleFiring) -> None:
    """Queue the run in the claim's transaction: the firing and its run commit together."""
    ingestion = firing.schedule.ingestion
    try:
        firing.run = run_request(ingestion=ingestion, actor=None, trigger=RunTrigger.SCHEDULE)
        firing.outcome = FiringOutcome.FIRED
    except BUSY as exc:
        _settle(firing, FiringOutcome.SKIPPED, exc)
    except AutoloaderError as exc:
        _settle(firing, FiringOutcome.FAILED, exc)
    firing.save(update_fields=["run", "outcome", "reason", "detail"])
    _audit_firing(firing)


def _fire_refresh(firing: ScheduleFiring) -> None:
    """Execute the refresh as its schedule's owner: below the plan threshold directly, above
    it under a standing approval covering the estimate (with a fresh plan of its own)."""
    try:
        schedule, void_reason = _schedule_at_firing(firing)
    except _Superseded as exc:
        if not ScheduleFiring.objects.filter(pk=firing.pk).exists():
            return  # the schedule was deleted, and its firings with it
        firing.outcome, firing.reason, firing.detail = (
            FiringOutcome.SKIPPED,
            "SCHEDULE_CHANGED",
            str(exc),
        )
        firing.save(update_fields=["outcome", "reason", "detail"])
        _audit_firing(firing)
        return
    firing.schedule = schedule
    ingestion, kind, owner = schedule.ingestion, schedule.action, schedule.created_by
    try:
        if owner is None or not owner.is_active:
            raise PermissionDeniedError(
                "The person who set this schedule no longer has an account: set it again."
            )
        verdict = _condition_measured(firing, owner=owner) if schedule.condition else None
        if verdict is not None and not verdict.holds:
            firing.save(update_fields=["outcome", "reason", "detail", "facts"])
            _audit_firing(firing)
            return
        try:
            firing.operation = refresh_execute(
                ingestion=ingestion, kind=kind, actor=owner, confirm=True
            )
        except DryRunRequiredError:
            plan = (
                verdict.plan
                if verdict is not None
                else refresh_preview(ingestion=ingestion, kind=kind, actor=owner, gate=None)
            )
            cost = Decimal(str(plan.impact.estimated_cost_usd))
            approved = schedule.approved_max_cost_usd
            if approved is None or cost > approved:
                threshold = settings.REFRESH_PLAN_REQUIRED_ABOVE_USD
                if void_reason:
                    why = f", and its approval is void: {void_reason}."
                elif approved is None:
                    why = ", and no admin approved this schedule."
                else:
                    why = f" and the approved maximum of ${approved:,.2f}."
                raise ApprovalRequiredError(
                    f"Estimated at ${cost:,.2f}, above the ${threshold:,.0f} threshold{why}",
                    estimated_cost_usd=float(cost),
                ) from None
            firing.operation = refresh_execute(
                ingestion=ingestion, kind=kind, actor=owner, confirm=True, plan_id=plan.plan_id
            )
        firing.outcome = FiringOutcome.FIRED
    except BUSY as exc:
        _settle(firing, FiringOutcome.SKIPPED, exc)
    except (*REFUSALS, ApprovalRequiredError) as exc:
        _settle(firing, FiringOutcome.REFUSED, exc)
    except AutoloaderError as exc:
        _settle(firing, FiringOutcome.FAILED, exc)
    firing.save(update_fields=["operation", "outcome", "reason", "detail", "facts"])
    _audit_firing(firing)


def _condition_measured(firing: ScheduleFiring, *, owner) -> ConditionVerdict:
    """Measure the schedule's condition on a preview made now (as its owner; not counted
    against the preview rates, as the firing's own plan is not). Records the facts on the
    firing; when the condition does not hold, the firing is settled as skipped."""
    schedule = firing.schedule
    verdict = condition_measure(
        ingestion=schedule.ingestion,
        kind=schedule.action,
        actor=owner,
        condition=condition_parse(schedule.condition),
        gate=None,
    )
    firing.facts = verdict.facts
    if not verdict.holds:
        firing.outcome, firing.reason, firing.detail = (
            FiringOutcome.SKIPPED,
            "CONDITION_NOT_MET",
            f"{verdict.summary()} Nothing ran.",
        )
    return verdict


def _schedule_at_firing(firing: ScheduleFiring) -> tuple[Schedule, str | None]:
    """The schedule re-read under a row lock as its refresh starts, its approval checked.

    A schedule paused or changed since it was read for this firing does not fire. A standing
    approval holds only while its approver may still approve in the schedule's tenant (a
    member, active, with APPROVE_PERMISSION): otherwise it is void, cleared and audited here,
    before anything executes.

    Returns:
        The fresh schedule, and why its approval was voided (None when it was not).

    Raises:
        _Superseded: the schedule was deleted, paused or its expression changed.
    """
    claimed = firing.schedule
    with transaction.atomic():
        schedule = (
            Schedule.objects.select_for_update(of=("self",))
            .select_related("ingestion__tenant", "created_by", "approved_by")
            .filter(pk=claimed.pk)
            .first()
        )
        if schedule is None:
            raise _Superseded("The schedule was deleted before this firing started.")
        if schedule.paused:
            raise _Superseded("The schedule was paused before this firing started: nothing ran.")
        if (schedule.cron, schedule.timezone) != (claimed.cron, claimed.timezone):
            raise _Superseded("The schedule was changed before this firing started: nothing ran.")
        void_reason = None
        if schedule.approved_max_cost_usd is not None:
            void_reason = approval_void_reason(schedule)
        if void_reason:
            _approval_void(schedule, reason=void_reason, firing=firing)
    return schedule, void_reason


def approval_void_reason(schedule: Schedule) -> str | None:
    """Why the schedule's standing approval no longer holds, or None while its approver may
    still approve scheduled refreshes in the schedule's tenant."""
    approver = schedule.approved_by
    if approver is None:
        return "the account that approved it no longer exists"
    if not approver.is_active:
        return f"{approver.username}, who approved it, is deactivated"
    # A fresh user object (no cached roles): the role the approver has now.
    if approver.has_perm(APPROVE_PERMISSION, schedule.ingestion):
        return None
    role = (
        Membership.objects.filter(user=approver, tenant_id=schedule.ingestion.tenant_id)
        .values_list("role", flat=True)
        .first()
    )
    if role is None:
        return f"{approver.username}, who approved it, is no longer a member of this tenant"
    return f"{approver.username}, who approved it, is now {role} here and may not approve"


def _approval_void(schedule: Schedule, *, reason: str, firing: ScheduleFiring) -> None:
    """Clear a void approval (in the caller's transaction, under its row lock) and audit it."""
    before = _state(schedule)
    approver = getattr(schedule.approved_by, "username", None)
    schedule.approved_by = schedule.approved_at = schedule.approved_max_cost_usd = None
    schedule.save(
        update_fields=["approved_by", "approved_at", "approved_max_cost_usd", "updated_at"]
    )
    _audit(
        schedule,
        actor=None,
        action="schedule_approval_voided",
        changes=_changed(before, schedule),
        data={"approved_by": approver, "reason": reason, "slot": firing.slot.isoformat()},
    )
    logger.warning("schedule %s: approval void (%s)", schedule.public_id, reason)


def _settle(firing: ScheduleFiring, outcome: str, exc: AutoloaderError) -> None:
    firing.outcome, firing.reason, firing.detail = outcome, exc.error_code, str(exc)


def _audit_firing(firing: ScheduleFiring) -> None:
    """Who fired is the system (no actor); the data names the slot and what happened."""
    schedule = firing.schedule
    refused = firing.outcome == FiringOutcome.REFUSED
    _audit(
        schedule,
        actor=None,
        action="schedule_refused" if refused else "schedule_fired",
        changes={
            "schedule": [None, f"{schedule.action} {firing.slot.isoformat()}: {firing.outcome}"]
        },
        log_action=LogEntry.Action.ACCESS if refused else LogEntry.Action.UPDATE,
        data={
            "outcome": "refused" if refused else firing.outcome,
            "slot": firing.slot.isoformat(),
            "reason": firing.reason or None,
            "detail": firing.detail or None,
            "skipped_slots": firing.skipped_slots,
            "facts": firing.facts or None,
            "run_id": firing.run.public_id if firing.run_id else None,
            "operation_id": firing.operation.public_id if firing.operation_id else None,
            "fires_as": getattr(schedule.created_by, "username", None),
        },
    )
