"""Refresh operations: execute step by step with durable records, resume.

Used by the REST API and the console alike; neither re-implements a rule. Every step's
outcome is stored the moment it ends (DESIGN §5.2), so a failure half-way leaves a record
saying what was done and the exact call that finishes the job. The preview and the checks
an operation passes first are in `refresh.preview`; the steps themselves in `refresh.steps`.
"""

import logging

from django.db import IntegrityError, transaction

from ingestions import hooks
from ingestions.engines import load_engine
from ingestions.errors import (
    RefreshInProgressError,
)
from ingestions.models import Ingestion, OnPartialFailure, Run
from ingestions.runs import ingestion_lock

from .actors import _require, _user
from .errors import (
    ConfirmationRequiredError,
    OperationNotResumableError,
)
from .limits import CEILINGS, SlotReservation, rate_limit_check, rate_limit_slot
from .models import (
    OperationKind,
    OperationStatus,
    RefreshOperation,
    RefreshStep,
    StepStatus,
)
from .planning import Plan, plan_operation
from .preview import (
    check_plan,
    check_scope_matches,
    effective_mode,
    effective_retain_days,
    in_flight_error,
    refuse_if_busy,
    refuse_if_protected,
    scope_of,
    with_retention,
)
from .specs import spec_of
from .steps import expire_interrupted, run_steps

logger = logging.getLogger(__name__)


def refresh_execute(
    *,
    ingestion: Ingestion,
    kind: str,
    actor,
    confirm: bool,
    auto_run: bool = True,
    plan_id: str | None = None,
    mode: str | None = None,
    on_partial_failure: str = OnPartialFailure.DECIDE,
    retain_days: int | None = None,
    scope: dict | None = None,
    batch_id: str | None = None,
    reserved_slots: SlotReservation | None = None,
    engine=None,
) -> RefreshOperation:
    """Execute `kind` on `ingestion`: each step persisted as it ends; never raises mid-way.

    A full refresh or fresh start is zero-downtime by default (`mode` "atomic"): its steps
    drop and clear nothing at once; its run builds the new version beside the live table and
    publishes it, with the history, when it ends (`operation_sync` follows it). "drop_first"
    drops and clears immediately, as the PRD's sample does.

    A step that fails stops the sequence; the operation then ends `partial_failure` (or
    `failed` if nothing was done) with the failing step's error, and `refresh_resume`
    finishes it.

    What the operation replaces is kept for `retain_days` (default: the ingestion's, then
    `REFRESH_RETAIN_DAYS`; 0 keeps nothing) so that `refresh_undo` can bring it back.

    The call takes one of the actor's rate limit slots of `kind`, or, for a batch's member,
    one of the slots the batch took for all its members at once (`reserved_slots`).

    With `scope` (`ingestions.scope.Scope`'s JSON), a full refresh is selective: its run
    reloads only the files in the scope, and publishing replaces only their rows (by
    `_source_file`) and their history entries, in one commit.

    Raises:
        ValidationError: the scope is malformed.
        ScopeNotApplicableError: a scope on another kind, on drop_first, or on no table.
        PermissionDeniedError: the actor's role does not allow `kind` (audited).
        ConfirmationRequiredError: `confirm` is not exactly True.
        TableProtectedError: the ingestion is protected.
        DryRunRequiredError: above the cost threshold without a valid recent `plan_id`.
        PlanStaleError: the impact grew materially since that plan.
        RunInProgressError: a run is queued or running.
        RefreshInProgressError: another refresh of this ingestion is in flight.
        RateLimitedError: the actor used up the rate of `kind` (executions only count).
    """
    kind = OperationKind(kind)
    _require(actor, spec_of(kind).permission, ingestion, kind=kind)
    if confirm is not True:
        raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
    refuse_if_protected(ingestion, actor=actor, kind=kind, doing=spec_of(kind).label.lower())
    # Refused from here on (plan, a run in progress...), the call gives its slots back. The
    # table's own slot is taken where the operation is recorded (`_start`), under the
    # ingestion's lock: concurrent callers on one table meet 409 there, not each other's
    # passing slots. Its used-up window is refused now, before the listing.
    if reserved_slots is not None:
        slot = reserved_slots.use(ingestion=ingestion, kind=kind)
    else:
        rate_limit_check(actor=actor, ingestion=ingestion, kind=kind, only=("table",))
        slot = rate_limit_slot(actor=actor, ingestion=ingestion, kind=kind, only=CEILINGS)
    with slot:
        engine = engine or load_engine(ingestion.engine)
        mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
        parsed = scope_of(scope, kind=kind, mode=mode, ingestion=ingestion, engine=engine)
        plan = plan_operation(
            ingestion=ingestion, kind=kind, engine=engine, mode=mode, scope=parsed
        )
        request = {
            "confirm": True,
            "auto_run": auto_run,
            "dry_run": False,
            "plan_id": plan_id,
            "mode": mode,
            "on_partial_failure": OnPartialFailure(on_partial_failure).value,
            "retain_days": effective_retain_days(
                ingestion=ingestion, retain_days=retain_days, engine=engine
            ),
        }
        if parsed is not None:
            check_scope_matches(plan)
            request["scope"] = parsed.as_json()
        if batch_id:
            # A batch's member: its version is published by the batch (`refresh.batches`).
            request["batch_id"] = batch_id
        with_retention(plan, retain_days=request["retain_days"])
        operation = _start(
            ingestion=ingestion,
            kind=kind,
            actor=actor,
            plan=plan,
            request=request,
            table_slot=reserved_slots is None,
        )
    run_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
    return operation


def refresh_resume(*, operation: RefreshOperation, actor, engine=None) -> RefreshOperation:
    """Finish an operation that stopped on a failed step: the remaining steps run again.

    Single-flight: the resume is claimed under the ingestion's lock by moving the operation
    to `in_progress` (one caller wins, counted in `attempts`). A caller that finds it in
    progress is answered 409 REFRESH_IN_PROGRESS (naming it); one that finds it resumed
    since it read it (more attempts) gets it as it stands, like a retry would.

    Raises:
        PermissionDeniedError: the actor's role does not allow the operation's kind.
        OperationNotResumableError: it is not waiting to be finished, or a newer operation
            on the same ingestion superseded it.
        RefreshInProgressError: another caller is resuming it (or another refresh runs).
        TableProtectedError, RunInProgressError: as for execution.
    """
    ingestion = operation.ingestion
    if ingestion is None:
        raise OperationNotResumableError("The ingestion of this operation was deleted.")
    kind = OperationKind(operation.kind)
    _require(actor, spec_of(kind).permission, ingestion, kind=kind)
    refuse_if_protected(ingestion, actor=actor, kind=kind)
    seen_attempts = operation.attempts
    with transaction.atomic():
        ingestion_lock(ingestion)
        expire_interrupted(ingestion)
        operation.refresh_from_db()
        if operation.status == OperationStatus.IN_PROGRESS:
            raise RefreshInProgressError(
                f"Operation {operation.public_id} is being resumed by another request.",
                current_operation_id=operation.public_id,
            )
        if operation.attempts > seen_attempts:
            return operation  # resumed by another caller meanwhile: the settled result
        if operation.status not in (OperationStatus.PARTIAL_FAILURE, OperationStatus.FAILED):
            raise OperationNotResumableError(
                f"Operation {operation.public_id} is {operation.status}: nothing to resume."
            )
        newer = RefreshOperation.objects.filter(
            ingestion=ingestion, created_at__gt=operation.created_at
        ).exists()
        if newer:
            raise OperationNotResumableError(
                f"A newer operation on {ingestion.public_id} superseded {operation.public_id}."
            )
        refuse_if_busy(ingestion)
        # Inside the transaction: a refusal from here on rolls the slot back with it.
        with rate_limit_slot(actor=actor, ingestion=ingestion, kind="resume"):
            _restart_if_loaded_since(operation, ingestion=ingestion)
            operation.status = OperationStatus.IN_PROGRESS
            operation.attempts += 1
            operation.finished_at = None
            try:
                with transaction.atomic():
                    operation.save(
                        update_fields=["status", "attempts", "finished_at", "updated_at"]
                    )
            except IntegrityError:
                raise in_flight_error(ingestion) from None
    run_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
    return operation


def _restart_if_loaded_since(operation: RefreshOperation, *, ingestion: Ingestion) -> None:
    """A full refresh resumed after another run loaded rows starts again from the drop.

    Clearing the history then reloading every file is only exact on an empty table: rows a
    run added meanwhile (into the dropped-and-recreated table) would be loaded twice.
    """
    if operation.kind != OperationKind.FULL_REFRESH:
        return
    loaded_since = (
        Run.objects.filter(ingestion=ingestion, created_at__gt=operation.created_at)
        .exclude(pk=operation.run_id)
        .exists()
    )
    if loaded_since:
        operation.steps.update(
            status=StepStatus.PENDING,
            details={},
            error="",
            error_code="",
            started_at=None,
            finished_at=None,
        )
        operation.notes = [
            *operation.notes,
            "Resumed from the first step: a run loaded data after the operation started",
        ]
        operation.save(update_fields=["notes", "updated_at"])


def _start(
    *, ingestion: Ingestion, kind: str, actor, plan: Plan, request: dict, table_slot: bool
) -> RefreshOperation:
    """Check the plan and the ingestion's state, then record the operation, atomically:
    with `table_slot`, taking a slot of the table's rate of `kind` (rolled back with the
    rest when anything here refuses)."""
    with transaction.atomic():
        ingestion_lock(ingestion)
        expire_interrupted(ingestion)
        plan_record = check_plan(
            ingestion=ingestion, kind=kind, plan=plan, plan_id=request["plan_id"]
        )
        refuse_if_busy(ingestion)
        if table_slot:
            with rate_limit_slot(actor=actor, ingestion=ingestion, kind=kind, only=("table",)):
                pass  # kept: the transaction commits it with the operation, or rolls it back
        try:
            with transaction.atomic():
                operation = RefreshOperation.objects.create(
                    tenant_id=ingestion.tenant_id,
                    ingestion=ingestion,
                    ingestion_public_id=ingestion.public_id,
                    table_name=ingestion.destination_table,
                    kind=kind,
                    requested_by=_user(actor),
                    request=request,
                    impact=plan.as_record(),
                    warnings=plan.warnings,
                    notes=plan.notes,
                    plan=plan_record,
                    retain_days=request["retain_days"],
                )
        except IntegrityError:
            raise in_flight_error(ingestion) from None
        RefreshStep.objects.bulk_create(
            RefreshStep(operation=operation, position=position, name=name)
            for position, name in enumerate(plan.steps, start=1)
        )
        hooks.publish("refresh.started", operation=operation)
    logger.info("refresh %s (%s) started on %s", operation.public_id, kind, ingestion.public_id)
    return operation
