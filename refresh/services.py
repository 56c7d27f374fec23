"""Refresh operations: preview (dry-run), execute step by step with durable records, resume.

Used by the REST API and the console alike; neither re-implements a rule. Every step's
outcome is stored the moment it ends (DESIGN §5.2), so a failure half-way leaves a record
saying what was done and the exact call that finishes the job.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import (
    AutoloaderError,
    EngineUnavailableError,
    PermissionDeniedError,
    RefreshInProgressError,
    RunInProgressError,
)
from ingestions.models import Ingestion, OnPartialFailure, PublishState, Run, RunStatus, RunTrigger
from ingestions.runs import (
    ingestion_lock,
    refuse_while_awaiting_decision,
    run_request,
    staged_discard,
    staged_publish,
)
from ingestions.selectors import processed_file_summary, run_active
from ingestions.services import history_delete

from . import audit
from .errors import (
    ConfirmationRequiredError,
    DryRunRequiredError,
    OperationNotDecidableError,
    OperationNotResumableError,
    PlanStaleError,
    TableProtectedError,
)
from .limits import rate_limit_slot
from .models import (
    OperationKind,
    OperationStatus,
    RefreshMode,
    RefreshOperation,
    RefreshPlan,
    RefreshStep,
    StepName,
    StepStatus,
)
from .planning import Plan, gigabytes, plan_operation

logger = logging.getLogger(__name__)

PERMISSION_BY_KIND = {
    OperationKind.FULL_REFRESH: "ingestions.full_refresh_ingestion",
    OperationKind.FRESH_START: "ingestions.fresh_start_ingestion",
    OperationKind.DROP_TABLE: "ingestions.drop_table_ingestion",
    OperationKind.CLEAR_PROCESSED_FILES: "ingestions.clear_history_ingestion",
}
PREVIEW_PERMISSION = "ingestions.view_ingestion"
RUN_TRIGGER_BY_KIND = {
    OperationKind.FULL_REFRESH: RunTrigger.FULL_REFRESH,
    OperationKind.FRESH_START: RunTrigger.FRESH_START,
}


# --- preview ---------------------------------------------------------------------------


def refresh_preview(
    *,
    ingestion: Ingestion,
    kind: str,
    actor,
    mode: str | None = None,
    auto_run: bool = True,
    engine=None,
) -> Plan:
    """Dry-run: what `kind` would do, with its impact. Changes no table, history or run.

    It records the plan (impact and time) so that a large operation can present its
    `plan_id` when it executes.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
    """
    _require(actor, PREVIEW_PERMISSION, ingestion, kind=kind)
    engine = engine or load_engine(ingestion.engine)
    mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
    plan = plan_operation(ingestion=ingestion, kind=kind, engine=engine, mode=mode)
    record = RefreshPlan.objects.create(
        ingestion=ingestion, kind=kind, impact=plan.as_record(), created_by=_user(actor)
    )
    plan.plan_id = record.public_id
    plan.plan_required = plan.impact.estimated_cost_usd > settings.REFRESH_PLAN_REQUIRED_ABOVE_USD
    return plan


# --- execution -------------------------------------------------------------------------


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

    Raises:
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
    _require(actor, PERMISSION_BY_KIND[kind], ingestion, kind=kind)
    if confirm is not True:
        raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
    if ingestion.protected:
        audit.record_refusal(actor=actor, ingestion=ingestion, kind=kind, reason="TABLE_PROTECTED")
        raise TableProtectedError(
            f"Ingestion {ingestion.public_id} is protected: {kind.label.lower()} is refused."
        )
    # Refused from here on (plan, a run in progress...), the call gives its slot back.
    with rate_limit_slot(user=actor, kind=kind):
        engine = engine or load_engine(ingestion.engine)
        mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
        plan = plan_operation(ingestion=ingestion, kind=kind, engine=engine, mode=mode)
        request = {
            "confirm": True,
            "auto_run": auto_run,
            "dry_run": False,
            "plan_id": plan_id,
            "mode": mode,
            "on_partial_failure": OnPartialFailure(on_partial_failure).value,
        }
        operation = _start(ingestion=ingestion, kind=kind, actor=actor, plan=plan, request=request)
    _run_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
    return operation


def refresh_resume(*, operation: RefreshOperation, actor, engine=None) -> RefreshOperation:
    """Finish an operation that stopped on a failed step: the remaining steps run again.

    Raises:
        PermissionDeniedError: the actor's role does not allow the operation's kind.
        OperationNotResumableError: it is not waiting to be finished, or a newer operation
            on the same ingestion superseded it.
        TableProtectedError, RunInProgressError, RefreshInProgressError: as for execution.
    """
    ingestion = operation.ingestion
    if ingestion is None:
        raise OperationNotResumableError("The ingestion of this operation was deleted.")
    kind = OperationKind(operation.kind)
    _require(actor, PERMISSION_BY_KIND[kind], ingestion, kind=kind)
    if ingestion.protected:
        audit.record_refusal(actor=actor, ingestion=ingestion, kind=kind, reason="TABLE_PROTECTED")
        raise TableProtectedError(f"Ingestion {ingestion.public_id} is protected.")
    with rate_limit_slot(user=actor, kind="resume"), transaction.atomic():
        ingestion_lock(ingestion)
        _expire_interrupted(ingestion)
        operation.refresh_from_db()
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
        _refuse_if_busy(ingestion)
        _restart_if_loaded_since(operation, ingestion=ingestion)
        operation.status = OperationStatus.IN_PROGRESS
        operation.attempts += 1
        operation.finished_at = None
        try:
            operation.save(update_fields=["status", "attempts", "finished_at", "updated_at"])
        except IntegrityError:
            raise _in_flight_error(ingestion) from None
    _run_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
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
    *, ingestion: Ingestion, kind: str, actor, plan: Plan, request: dict
) -> RefreshOperation:
    """Check the plan and the ingestion's state, then record the operation, atomically."""
    with transaction.atomic():
        ingestion_lock(ingestion)
        _expire_interrupted(ingestion)
        plan_record = _check_plan(
            ingestion=ingestion, kind=kind, plan=plan, plan_id=request["plan_id"]
        )
        _refuse_if_busy(ingestion)
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
                )
        except IntegrityError:
            raise _in_flight_error(ingestion) from None
        RefreshStep.objects.bulk_create(
            RefreshStep(operation=operation, position=position, name=name)
            for position, name in enumerate(plan.steps, start=1)
        )
    logger.info("refresh %s (%s) started on %s", operation.public_id, kind, ingestion.public_id)
    return operation


def _refuse_if_busy(ingestion: Ingestion) -> None:
    active = run_active(ingestion=ingestion)
    if active is not None:
        raise RunInProgressError(
            "Cannot refresh while ingestion is running", current_run_id=active.public_id
        )
    refuse_while_awaiting_decision(ingestion)
    if RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS
    ).exists():
        raise _in_flight_error(ingestion)


def _in_flight_error(ingestion: Ingestion) -> RefreshInProgressError:
    current = RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS
    ).first()
    return RefreshInProgressError(
        "Another refresh operation is in progress on this ingestion",
        current_operation_id=current.public_id if current else "",
    )


def _expire_interrupted(ingestion: Ingestion) -> None:
    """An operation left in progress by a process that died becomes resumable."""
    stale_before = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    for operation in RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS, updated_at__lt=stale_before
    ):
        operation.steps.filter(status=StepStatus.PENDING, started_at__isnull=False).update(
            status=StepStatus.FAILED,
            error="Interrupted: the process executing this step stopped.",
            error_code="INTERRUPTED",
            finished_at=timezone.now(),
        )
        _finish(
            operation, actor=None, default_error=("INTERRUPTED", "The operation was interrupted.")
        )
        logger.warning("refresh %s was interrupted; it can be resumed", operation.public_id)


def _check_plan(*, ingestion: Ingestion, kind: str, plan: Plan, plan_id: str | None):
    """Above the threshold, a recent unused dry-run of this same operation must be presented."""
    cost = plan.impact.estimated_cost_usd
    threshold = settings.REFRESH_PLAN_REQUIRED_ABOVE_USD
    if not plan_id:
        if cost > threshold:
            raise DryRunRequiredError(
                f"Operation estimated at ${cost:,.2f} (above ${threshold:,.0f}). Run with "
                "dry_run=true first to review, then send its plan_id with confirm=true."
            )
        return None
    fresh_after = timezone.now() - timedelta(seconds=settings.REFRESH_PLAN_TTL_SECONDS)
    record = RefreshPlan.objects.filter(
        public_id=plan_id, ingestion=ingestion, kind=kind, created_at__gte=fresh_after
    ).first()
    if record is None or record.used_at is not None:
        raise DryRunRequiredError(
            f"plan_id {plan_id!r} is not a dry-run of {kind} on {ingestion.public_id} made in "
            f"the last {settings.REFRESH_PLAN_TTL_SECONDS // 60} minutes (or it was used "
            "already). Run the dry-run again."
        )
    growth = settings.REFRESH_PLAN_MAX_GROWTH
    planned_files = record.impact.get("files_to_process", 0)
    planned_bytes = record.impact.get("bytes_to_process", 0)
    if plan.impact.files_to_process > planned_files * (1 + growth) or (
        plan.impact.bytes_to_process > planned_bytes * (1 + growth)
    ):
        raise PlanStaleError(
            f"The impact grew since the dry-run: {planned_files:,} -> "
            f"{plan.impact.files_to_process:,} files, {gigabytes(planned_bytes)} -> "
            f"{plan.impact.estimated_data_size_gb} GB."
        )
    record.used_at = timezone.now()
    record.save(update_fields=["used_at"])
    return record


def effective_mode(*, kind: str, mode: str | None, auto_run: bool, engine) -> str:
    """The mode an operation runs in: zero-downtime ("atomic") unless it was asked to drop
    first, triggers no run to publish with (auto_run false), or its engine cannot stage."""
    if kind not in STAGED_KINDS:
        return ""
    if not auto_run or not engine.can_stage:
        return RefreshMode.DROP_FIRST.value
    return RefreshMode(mode or settings.REFRESH_DEFAULT_MODE).value


def _run_steps(operation: RefreshOperation, *, ingestion: Ingestion, actor, engine) -> None:
    auto_run = operation.request.get("auto_run", True)
    actions = (
        STAGED_STEP_ACTIONS if operation.request.get("mode") == RefreshMode.ATOMIC else STEP_ACTIONS
    )
    started = timezone.now()
    for step in operation.steps.exclude(status__in=[StepStatus.SUCCESS, StepStatus.SKIPPED]):
        step.started_at = timezone.now()
        step.error = step.error_code = ""
        if step.name == StepName.RUN_TRIGGERED and not auto_run:
            step.status = StepStatus.SKIPPED
            step.details = {"reason": "auto_run is false: no run triggered"}
        else:
            step.save(update_fields=["started_at", "error", "error_code"])
            try:
                engine = engine or load_engine(ingestion.engine)
                step.details = actions[step.name](
                    ingestion=ingestion, operation=operation, actor=actor, engine=engine
                )
                step.status = StepStatus.SUCCESS
            except Exception as exc:  # recorded, never lost: the operation says what failed
                step.status = StepStatus.FAILED
                step.error_code = _step_error_code(step.name, exc)
                step.error = str(exc) or type(exc).__name__
                if not isinstance(exc, AutoloaderError):
                    logger.exception("refresh %s step %s failed", operation.public_id, step.name)
        step.finished_at = timezone.now()
        step.save()
        if step.status == StepStatus.FAILED:
            break
    _finish(operation, actor=actor, started=started)


def _finish(
    operation: RefreshOperation,
    *,
    actor,
    started=None,
    default_error: tuple[str, str] | None = None,
) -> None:
    steps = list(operation.steps.all())
    failed = next((step for step in steps if step.status == StepStatus.FAILED), None)
    done = [step for step in steps if step.status == StepStatus.SUCCESS]
    if failed is None and default_error is None:
        run_step = next((s for s in steps if s.name == StepName.RUN_TRIGGERED), None)
        triggered = run_step is not None and run_step.status == StepStatus.SUCCESS
        operation.status = OperationStatus.ACCEPTED if triggered else OperationStatus.SUCCESS
        operation.error = operation.error_code = ""
    else:
        # Zero-downtime steps before the run change nothing: if the run was not triggered,
        # nothing was done at all.
        changed_something = done and operation.request.get("mode") != RefreshMode.ATOMIC
        operation.status = (
            OperationStatus.PARTIAL_FAILURE if changed_something else OperationStatus.FAILED
        )
        operation.error_code, operation.error = (
            (failed.error_code, failed.error) if failed else default_error
        )
    operation.finished_at = timezone.now()
    operation.save(
        update_fields=["status", "error", "error_code", "finished_at", "updated_at", "run"]
    )
    audit.record_operation(
        operation,
        actor=actor,
        duration_seconds=(operation.finished_at - started).total_seconds() if started else None,
    )
    logger.info("refresh %s ended %s", operation.public_id, operation.status)


def _step_error_code(step_name: str, exc: Exception) -> str:
    if isinstance(exc, EngineUnavailableError):
        return "CLUSTER_UNAVAILABLE"
    if step_name == StepName.TABLE_DROPPED:
        # The PRD's code for a failed drop, kept whatever the engine for clients that match it.
        return "SPARK_ERROR"
    if isinstance(exc, AutoloaderError):
        return exc.error_code
    return "INTERNAL_ERROR"


# --- the steps -------------------------------------------------------------------------


def _drop_table(*, ingestion: Ingestion, engine, **_) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    existed = engine.drop_table(ingestion.table_identifier)
    details = {"table_name": ingestion.destination_table, "table_existed": existed}
    if existed:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _clear_history(*, ingestion: Ingestion, **_) -> dict:
    summary = processed_file_summary(ingestion=ingestion)
    with transaction.atomic():
        cleared = history_delete(ingestion=ingestion)
    return {
        "files_cleared": cleared,
        "oldest_file": summary["oldest"],
        "newest_file": summary["newest"],
    }


def _trigger_run(*, ingestion: Ingestion, operation: RefreshOperation, actor, engine) -> dict:
    engine.ping()  # the run would fail at once on an unreachable engine: say so now
    run = run_request(
        ingestion=ingestion,
        actor=actor,
        trigger=RUN_TRIGGER_BY_KIND.get(operation.kind, RunTrigger.API),
        for_refresh_operation=True,
    )
    operation.run = run
    return {"run_id": run.public_id, "run_url": f"/api/v1/runs/{run.public_id}"}


STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _drop_table,
    StepName.PROCESSED_FILES_CLEARED: _clear_history,
    StepName.RUN_TRIGGERED: _trigger_run,
}


# Zero-downtime ("atomic") steps: the PRD's names and order, but nothing is dropped or
# cleared at once. The run builds the new version beside the live table; publishing it
# replaces the table (and the history) in one step when the run ends.


def _replace_table_at_publish(*, ingestion: Ingestion, engine, **_) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    details = {
        "table_name": ingestion.destination_table,
        "table_existed": info.exists,
        "replaced_at_publish": True,
    }
    if info.exists:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _replace_history_at_publish(*, ingestion: Ingestion, **_) -> dict:
    summary = processed_file_summary(ingestion=ingestion)
    return {
        "files_cleared": summary["count"],
        "oldest_file": summary["oldest"],
        "newest_file": summary["newest"],
        "cleared_at_publish": True,
    }


def _trigger_staged_run(
    *, ingestion: Ingestion, operation: RefreshOperation, actor, engine
) -> dict:
    engine.ping()
    run = run_request(
        ingestion=ingestion,
        actor=actor,
        trigger=RUN_TRIGGER_BY_KIND[operation.kind],
        for_refresh_operation=True,
        stage_name=stage_name_for(operation),
        stage_replaces_history=operation.kind == OperationKind.FULL_REFRESH,
        on_partial_failure=operation.request.get("on_partial_failure", OnPartialFailure.DECIDE),
    )
    operation.run = run
    return {
        "run_id": run.public_id,
        "run_url": f"/api/v1/runs/{run.public_id}",
        "publishes_when_run_ends": True,
    }


def stage_name_for(operation: RefreshOperation) -> str:
    """The branch (or staging table suffix) of an operation's new version."""
    return "autoloader_" + operation.public_id.replace("-", "_")


STAGED_STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _replace_table_at_publish,
    StepName.PROCESSED_FILES_CLEARED: _replace_history_at_publish,
    StepName.RUN_TRIGGERED: _trigger_staged_run,
}
STAGED_KINDS = (OperationKind.FULL_REFRESH, OperationKind.FRESH_START)


# --- following a zero-downtime operation to its outcome --------------------------------

# What the staged run's state makes of an "accepted" operation.
STATUS_BY_PUBLISH_STATE = {
    PublishState.PUBLISHED: OperationStatus.PUBLISHED,
    PublishState.AWAITING_DECISION: OperationStatus.AWAITING_DECISION,
    PublishState.DISCARDED: OperationStatus.DISCARDED,
}


def operation_sync(*, operation: RefreshOperation) -> RefreshOperation:
    """Bring a zero-downtime operation's status up to its run's outcome (audited once).

    "accepted" (the PRD's synchronous answer) becomes "published", "awaiting_decision",
    "discarded", "failed" or "cancelled" as its run ends; other operations are left as
    they are. Cheap when nothing changed: callers use it on every read.
    """
    run = operation.run
    if run is None or not run.stage_name or operation.status in FINAL_STATUSES:
        return operation
    run.refresh_from_db(fields=["status", "publish_state", "error", "finished_at"])
    if run.status == RunStatus.FAILED:
        status, error_code, error = OperationStatus.FAILED, "RUN_FAILED", run.error
    elif run.status == RunStatus.CANCELLED:
        status, error_code, error = OperationStatus.CANCELLED, "RUN_CANCELLED", run.error
    elif run.publish_state in STATUS_BY_PUBLISH_STATE:
        status, error_code, error = STATUS_BY_PUBLISH_STATE[run.publish_state], "", ""
        if status == OperationStatus.AWAITING_DECISION:
            error_code, error = "PARTIAL_SUCCESS", run.error
    else:
        return operation  # still loading
    if status == operation.status:
        return operation
    changed = RefreshOperation.objects.filter(pk=operation.pk, status=operation.status).update(
        status=status, error_code=error_code, error=error, finished_at=timezone.now()
    )
    operation.refresh_from_db()
    if changed:
        audit.record_operation(operation, actor=None, duration_seconds=None)
        logger.info("refresh %s is %s", operation.public_id, operation.status)
    return operation


# An operation in one of these states changes no more (but for undo, later).
FINAL_STATUSES = (
    OperationStatus.PUBLISHED,
    OperationStatus.DISCARDED,
    OperationStatus.CANCELLED,
    OperationStatus.FAILED,
    OperationStatus.PARTIAL_FAILURE,
    OperationStatus.SUCCESS,
)


def refresh_decide(
    *, operation: RefreshOperation, actor, publish: bool, confirm: bool, engine=None
) -> RefreshOperation:
    """Publish what a zero-downtime refresh loaded, or discard it, after some files failed.

    Raises:
        PermissionDeniedError: the actor's role does not allow the operation's kind.
        ConfirmationRequiredError: `confirm` is not exactly True.
        OperationNotDecidableError: the operation does not wait for a decision.
        EngineError: the table changed since the new version was staged (publish only).
    """
    ingestion = operation.ingestion
    if ingestion is None:
        raise OperationNotDecidableError("The ingestion of this operation was deleted.")
    kind = OperationKind(operation.kind)
    _require(actor, PERMISSION_BY_KIND[kind], ingestion, kind=kind)
    if confirm is not True:
        raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
    operation = operation_sync(operation=operation)
    if operation.status != OperationStatus.AWAITING_DECISION:
        raise OperationNotDecidableError(
            f"Operation {operation.public_id} is {operation.status}: there is nothing to "
            "publish or discard."
        )
    engine = engine or load_engine(ingestion.engine)
    with transaction.atomic():
        ingestion_lock(ingestion)
        run = Run.objects.select_related("ingestion").get(pk=operation.run_id)
        if run.publish_state != PublishState.AWAITING_DECISION:
            raise OperationNotDecidableError(f"Operation {operation.public_id} was decided.")
        if publish:
            staged_publish(run=run, engine=engine)
        else:
            staged_discard(run=run, engine=engine)
    operation = operation_sync(operation=operation)
    audit.record_decision(operation, actor=actor, published=publish)
    return operation


# --- helpers ---------------------------------------------------------------------------


def _require(actor, permission: str, ingestion: Ingestion, *, kind: str) -> None:
    if not actor.has_perm(permission, ingestion):
        audit.record_refusal(
            actor=actor, ingestion=ingestion, kind=kind, reason="INSUFFICIENT_PERMISSIONS"
        )
        raise PermissionDeniedError(
            f"Your role does not allow {OperationKind(kind).label.lower()} on this ingestion."
        )


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
