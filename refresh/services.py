"""Refresh operations: preview (dry-run), execute step by step with durable records, resume.

Used by the REST API and the console alike; neither re-implements a rule. Every step's
outcome is stored the moment it ends (DESIGN §5.2), so a failure half-way leaves a record
saying what was done and the exact call that finishes the job.
"""

import contextlib
import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ingestions import hooks
from ingestions.engines import load_engine
from ingestions.errors import (
    AutoloaderError,
    EngineUnavailableError,
    RefreshInProgressError,
    RunInProgressError,
)
from ingestions.models import ACTIVE_RUN_STATUSES, Ingestion, OnPartialFailure, Run
from ingestions.ratelimits import expensive_read
from ingestions.runs import ingestion_lock, run_request
from ingestions.scope import Scope, scoped_history
from ingestions.selectors import processed_file_summary, run_active
from ingestions.services import history_archive

from . import audit
from .actors import _require, _user
from .errors import (
    ConfirmationRequiredError,
    DryRunRequiredError,
    OperationNotResumableError,
    PlanStaleError,
    ScopeNotApplicableError,
    TableProtectedError,
)
from .guards import refuse_while_awaiting_decision
from .limits import SlotReservation, rate_limit_slot
from .models import (
    OperationKind,
    OperationStatus,
    RefreshMode,
    RefreshOperation,
    RefreshPlan,
    RefreshStep,
    Retention,
    StepName,
    StepStatus,
)
from .planning import Plan, gigabytes, plan_operation
from .restore_points import keep_restore_point, restore_point_name
from .specs import spec_of

logger = logging.getLogger(__name__)

PREVIEW_PERMISSION = "ingestions.view_ingestion"


# --- preview ---------------------------------------------------------------------------


def refresh_preview(
    *,
    ingestion: Ingestion,
    kind: str,
    actor,
    mode: str | None = None,
    auto_run: bool = True,
    retain_days: int | None = None,
    scope: dict | None = None,
    engine=None,
    gate: str | None = "request",
) -> Plan:
    """Dry-run: what `kind` would do, with its impact. Changes no table, history or run.

    It records the plan (impact and time) so that a large operation can present its
    `plan_id` when it executes.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        RateLimitedError: the actor's or the tenant's previews are used up, or the tenant's
            listings are all busy (`ingestions.ratelimits.expensive_read`).
    """
    _require(actor, PREVIEW_PERMISSION, ingestion, kind=kind)
    engine = engine or load_engine(ingestion.engine)
    mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
    parsed = _scope_of(scope, kind=kind, mode=mode, ingestion=ingestion, engine=engine)
    # Listing the source is the expensive part, and anyone who can view may ask for it:
    # "request" counts the call against the preview rates and takes a listing slot;
    # "listing" (a batch member: the batch counted once) takes the slot only; None (the
    # worker's schedule firing) neither.
    gated = (
        expensive_read(tenant=ingestion.tenant, actor=actor, counted=gate == "request")
        if gate
        else contextlib.nullcontext()
    )
    with gated:
        plan = plan_operation(
            ingestion=ingestion, kind=kind, engine=engine, mode=mode, scope=parsed
        )
    _with_retention(
        plan,
        retain_days=effective_retain_days(
            ingestion=ingestion, retain_days=retain_days, engine=engine
        ),
    )
    record = RefreshPlan.objects.create(
        ingestion=ingestion, kind=kind, impact=plan.as_record(), created_by=_user(actor)
    )
    plan.plan_id = record.public_id
    plan.allowed = actor.has_perm(spec_of(kind).permission, ingestion)
    if plan.allowed:  # a read-only caller's dry-runs send no webhooks (docs/webhooks.md)
        hooks.publish("refresh.previewed", ingestion=ingestion, kind=kind, plan=plan)
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
    _refuse_if_protected(ingestion, actor=actor, kind=kind, doing=spec_of(kind).label.lower())
    # Refused from here on (plan, a run in progress...), the call gives its slot back.
    slot = (
        reserved_slots.use(user=actor, kind=kind)
        if reserved_slots is not None
        else rate_limit_slot(user=actor, kind=kind)
    )
    with slot:
        engine = engine or load_engine(ingestion.engine)
        mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
        parsed = _scope_of(scope, kind=kind, mode=mode, ingestion=ingestion, engine=engine)
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
            _check_scope_matches(plan)
            request["scope"] = parsed.as_json()
        if batch_id:
            # A batch's member: its version is published by the batch (`refresh.batches`).
            request["batch_id"] = batch_id
        _with_retention(plan, retain_days=request["retain_days"])
        operation = _start(ingestion=ingestion, kind=kind, actor=actor, plan=plan, request=request)
    _run_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
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
    _refuse_if_protected(ingestion, actor=actor, kind=kind)
    seen_attempts = operation.attempts
    with transaction.atomic():
        ingestion_lock(ingestion)
        _expire_interrupted(ingestion)
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
        _refuse_if_busy(ingestion)
        # Inside the transaction: a refusal from here on rolls the slot back with it.
        with rate_limit_slot(user=actor, kind="resume"):
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
                    retain_days=request["retain_days"],
                )
        except IntegrityError:
            raise _in_flight_error(ingestion) from None
        RefreshStep.objects.bulk_create(
            RefreshStep(operation=operation, position=position, name=name)
            for position, name in enumerate(plan.steps, start=1)
        )
        hooks.publish("refresh.started", operation=operation)
    logger.info("refresh %s (%s) started on %s", operation.public_id, kind, ingestion.public_id)
    return operation


def refresh_check(*, ingestion: Ingestion, kind: str, actor) -> None:
    """The rules `refresh_execute` applies before anything starts (permission, protection,
    a run or refresh in progress), for callers that must check several ingestions first.

    Raises:
        PermissionDeniedError, TableProtectedError (both audited), RunInProgressError,
        RefreshInProgressError.
    """
    _require(actor, spec_of(kind).permission, ingestion, kind=kind)
    _refuse_if_protected(ingestion, actor=actor, kind=kind, doing=spec_of(kind).label.lower())
    _refuse_if_busy(ingestion)


def _refuse_if_protected(ingestion: Ingestion, *, actor, kind: str, doing: str = "") -> None:
    """A protected ingestion refuses every refresh, resume and undo; the refusal is audited."""
    if ingestion.protected:
        audit.record_refusal(actor=actor, ingestion=ingestion, kind=kind, reason="TABLE_PROTECTED")
        refused = f": {doing} is refused." if doing else "."
        raise TableProtectedError(f"Ingestion {ingestion.public_id} is protected{refused}")


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
    """An operation left in progress by a process that died becomes resumable (unless the
    worker's reaper finished it first, `refresh_reap`); an interrupted undo is left for the
    reaper or a retried undo to finish."""
    stale_before = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    for operation in RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS, updated_at__lt=stale_before
    ).exclude(retention=Retention.RESTORING):
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


def _scope_of(scope: dict | None, *, kind: str, mode: str, ingestion: Ingestion, engine):
    """The parsed scope of a selective full refresh, checked against what can honour it."""
    parsed = Scope.parse(scope)
    if parsed is None:
        return None
    if kind != OperationKind.FULL_REFRESH:
        raise ScopeNotApplicableError(f"A scope applies to a full refresh, not to a {kind}.")
    if mode != RefreshMode.ATOMIC:
        raise ScopeNotApplicableError(
            "A selective refresh replaces rows in one commit when its run ends: it needs mode "
            "atomic and auto_run true on an engine that stages."
        )
    info = engine.describe_table(ingestion.table_identifier)
    if not info.exists or info.snapshot_id is None:
        raise ScopeNotApplicableError(
            f"{ingestion.destination_table} has no rows yet: there is nothing to replace a "
            "part of. Run the ingestion, or refresh without a scope."
        )
    return parsed


def _check_scope_matches(plan: Plan) -> None:
    """A selective refresh must name real files: a typo must not run an empty refresh."""
    unknown, matched = plan.scope["unknown_files"], plan.scope["files_in_scope"]
    if unknown:
        raise ValidationError(
            {
                "scope": [
                    f"{len(unknown):,} named files are neither in the source nor in the "
                    f"history: {', '.join(unknown[:5])}."
                ]
            }
        )
    if not matched:
        raise ValidationError({"scope": ["No file of the source or the history is in it."]})


def effective_mode(*, kind: str, mode: str | None, auto_run: bool, engine) -> str:
    """The mode an operation runs in: zero-downtime ("atomic") unless it was asked to drop
    first, triggers no run to publish with (auto_run false), or its engine cannot stage."""
    if not spec_of(kind).can_publish_at_end:
        return ""
    if not auto_run or not engine.can_stage:
        return RefreshMode.DROP_FIRST.value
    return RefreshMode(mode or settings.REFRESH_DEFAULT_MODE).value


def _with_retention(plan: Plan, *, retain_days: int) -> None:
    """Say in the plan how long the operation can be undone."""
    plan.retain_days = retain_days
    if retain_days:
        plan.notes.append(
            f"Undoable for {retain_days} day{'s' if retain_days != 1 else ''}: "
            f"{spec_of(plan.kind).kept_for_undo}"
        )
    else:
        plan.notes.append(
            "Cannot be undone: nothing is kept (retain_days is 0, or the engine cannot keep "
            "table versions)"
        )


def effective_retain_days(*, ingestion: Ingestion, retain_days: int | None, engine) -> int:
    """Days an operation keeps what it replaces: the request's, else the ingestion's, else
    the setting's; 0 when the engine cannot keep a table version."""
    if not engine.can_retain:
        return 0
    for days in (retain_days, ingestion.retain_days, settings.REFRESH_RETAIN_DAYS):
        if days is not None:
            return max(0, min(int(days), settings.REFRESH_MAX_RETAIN_DAYS))
    return 0


def _run_steps(operation: RefreshOperation, *, ingestion: Ingestion, actor, engine) -> None:
    started = timezone.now()
    with _Heartbeat(operation):
        try:
            engine = engine or load_engine(ingestion.engine)
            keep_restore_point(operation, ingestion=ingestion, engine=engine)
        except Exception as exc:  # nothing was changed yet: the first step fails with it
            _fail_first_pending_step(operation, exc)
        else:
            _run_remaining_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
    _finish(operation, actor=actor, started=started)


def _fail_first_pending_step(operation: RefreshOperation, exc: Exception) -> None:
    step = operation.steps.exclude(status__in=[StepStatus.SUCCESS, StepStatus.SKIPPED]).first()
    if step is not None:
        step.status = StepStatus.FAILED
        step.error_code = _step_error_code("", exc)
        step.error = str(exc) or type(exc).__name__
        step.started_at = step.finished_at = timezone.now()
        step.save()
    if not isinstance(exc, AutoloaderError):
        logger.exception("refresh %s could not keep a restore point", operation.public_id)


def _run_remaining_steps(
    operation: RefreshOperation, *, ingestion: Ingestion, actor, engine
) -> None:
    auto_run = operation.request.get("auto_run", True)
    actions = STAGED_STEP_ACTIONS if operation.zero_downtime else STEP_ACTIONS
    for step in operation.steps.exclude(status__in=[StepStatus.SUCCESS, StepStatus.SKIPPED]):
        step.started_at = timezone.now()
        step.error = step.error_code = ""
        if step.name == StepName.RUN_TRIGGERED and not auto_run:
            step.status = StepStatus.SKIPPED
            step.details = {"reason": "auto_run is false: no run triggered"}
        else:
            step.save(update_fields=["started_at", "error", "error_code"])
            try:
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


class _Heartbeat:
    """Keeps an operation's `updated_at` fresh from a thread while its process works on it,
    so the worker's reaper (`refresh_reap`) can tell a long step from a dead process."""

    def __init__(self, operation: RefreshOperation):
        self.pk = operation.pk
        self._stop = threading.Event()
        self._interval = max(0.2, settings.REFRESH_STALE_SECONDS / 6)
        self._thread = threading.Thread(target=self._loop, name="refresh-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    RefreshOperation.objects.filter(
                        pk=self.pk, status=OperationStatus.IN_PROGRESS
                    ).update(updated_at=timezone.now())
                except Exception:  # a locked or restarting database: try again next beat
                    logger.warning("heartbeat of refresh %s failed", self.pk, exc_info=True)
        finally:
            connection.close()


@transaction.atomic  # the outcome and its webhook event commit together
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
        changed_something = done and not operation.zero_downtime
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
    hooks.publish("refresh.ended", operation=operation)
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


def _drop_table(*, ingestion: Ingestion, operation: RefreshOperation, engine, **_) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    details = {"table_name": ingestion.destination_table}
    kept = operation.restore_point.get("table")
    if operation.retention == Retention.KEPT and kept is None:
        # Set aside, not purged: undo renames it back; retention purges it later.
        point = engine.retire(ingestion.table_identifier, name=restore_point_name(operation))
        operation.restore_point = {**operation.restore_point, "table": point}
        operation.retained_bytes = point["size_bytes"]
        operation.save(update_fields=["restore_point", "retained_bytes", "updated_at"])
        existed = point["kind"] == "retired"
        if existed:
            details["kept_for_undo"] = True
    else:
        # Not kept (retain_days 0), or the table was set aside by an earlier attempt and
        # what is live now was loaded since: the refresh reloads it.
        existed = engine.drop_table(ingestion.table_identifier)
    details["table_existed"] = existed
    if existed:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _clear_history(*, ingestion: Ingestion, **_) -> dict:
    summary = processed_file_summary(ingestion=ingestion)
    history_archive(ingestion=ingestion)  # one UPDATE: the rows are archived, not deleted
    return {
        "files_cleared": summary["count"],
        "oldest_file": summary["oldest"],
        "newest_file": summary["newest"],
    }


def _trigger_run(*, ingestion: Ingestion, operation: RefreshOperation, actor, engine) -> dict:
    engine.ping()  # the run would fail at once on an unreachable engine: say so now
    trigger = spec_of(operation.kind).run_trigger
    run = _run_of_interrupted_step(operation, ingestion=ingestion, trigger=trigger) or run_request(
        ingestion=ingestion, actor=actor, trigger=trigger, for_refresh_operation=True
    )
    operation.run = run
    return {"run_id": run.public_id, "run_url": f"/api/v1/runs/{run.public_id}"}


def _run_of_interrupted_step(operation: RefreshOperation, *, ingestion: Ingestion, trigger: str):
    """The run an earlier attempt of this step queued before its process died, if any."""
    return Run.objects.filter(
        ingestion=ingestion,
        trigger=trigger,
        status__in=ACTIVE_RUN_STATUSES,
        created_at__gte=operation.created_at,
    ).first()


STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _drop_table,
    StepName.PROCESSED_FILES_CLEARED: _clear_history,
    StepName.RUN_TRIGGERED: _trigger_run,
}


# Zero-downtime ("atomic") steps: the PRD's names and order, but nothing is dropped or
# cleared at once. The run builds the new version beside the live table; publishing it
# replaces the table (and the history) in one step when the run ends.


def _replace_table_at_publish(
    *, ingestion: Ingestion, engine, operation: RefreshOperation, **_
) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    details = {
        "table_name": ingestion.destination_table,
        "table_existed": info.exists,
        "replaced_at_publish": True,
    }
    scope = Scope.parse(operation.request.get("scope"))
    if scope is not None:
        entries = scoped_history(ingestion=ingestion, scope=scope)
        details.update(
            scope=scope.describe(),
            rows_replaced=sum(entry.rows for entry in entries),
            files_in_history=len(entries),
        )
    if info.exists:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _replace_history_at_publish(*, ingestion: Ingestion, operation: RefreshOperation, **_) -> dict:
    scope = Scope.parse(operation.request.get("scope"))
    if scope is not None:
        entries = scoped_history(ingestion=ingestion, scope=scope)
        return {
            "scope": scope.describe(),
            "files_cleared": len(entries),
            "oldest_file": entries[0].path if entries else None,
            "newest_file": entries[-1].path if entries else None,
            "cleared_at_publish": True,
        }
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
    run = Run.objects.filter(
        ingestion=ingestion, stage_name=stage_name_for(operation)
    ).first() or run_request(  # the run of an attempt that died before recording it
        ingestion=ingestion,
        actor=actor,
        trigger=spec_of(operation.kind).run_trigger,
        for_refresh_operation=True,
        stage_name=stage_name_for(operation),
        stage_replaces_history=operation.kind == OperationKind.FULL_REFRESH
        and not operation.request.get("scope"),
        stage_scope=operation.request.get("scope"),
        publish_hold=bool(operation.request.get("batch_id")),
        on_partial_failure=operation.request.get("on_partial_failure", OnPartialFailure.DECIDE),
    )
    operation.run = run
    return {
        "run_id": run.public_id,
        "run_url": f"/api/v1/runs/{run.public_id}",
        "publishes_when_run_ends": True,
    }


_STAGE_PREFIX = "autoloader_"


def stage_name_for(operation: RefreshOperation) -> str:
    """The branch (or staging table suffix) of an operation's new version."""
    return _STAGE_PREFIX + operation.public_id.replace("-", "_")


def operation_id_of_stage(stage_name: str) -> str:
    """The public id of the operation whose new version `stage_name` holds."""
    return stage_name.removeprefix(_STAGE_PREFIX).replace("_", "-")


STAGED_STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _replace_table_at_publish,
    StepName.PROCESSED_FILES_CLEARED: _replace_history_at_publish,
    StepName.RUN_TRIGGERED: _trigger_staged_run,
}


def _take_over(operation: RefreshOperation) -> bool:
    """Claim an operation in progress whose process stopped (no heartbeat for
    REFRESH_STALE_SECONDS): one conditional UPDATE on the heartbeat this caller saw, so of
    several callers (retries, reapers) exactly one takes it over. False while it lives."""
    now = timezone.now()
    if operation.updated_at >= now - timedelta(seconds=settings.REFRESH_STALE_SECONDS):
        return False
    claimed = RefreshOperation.objects.filter(
        pk=operation.pk, status=OperationStatus.IN_PROGRESS, updated_at=operation.updated_at
    ).update(updated_at=now)
    return bool(claimed)
