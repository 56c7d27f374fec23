"""Following a zero-downtime operation to its outcome: its status from its run's publish
state (recorded by the worker, read by everyone), and the decision to publish or discard a
version that waits for one."""

import logging

from django.db import transaction
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import AutoloaderError
from ingestions.models import PublishState, Run, RunStatus
from ingestions.runs import ingestion_lock
from ingestions.staging import staged_discard, staged_publish

from . import audit
from .actors import _require
from .errors import ConfirmationRequiredError, OperationNotDecidableError
from .models import OperationStatus, RefreshOperation
from .specs import spec_of

logger = logging.getLogger("refresh.services")  # the log of an operation's whole life


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
    they are. A conditional UPDATE on the status it saw: of concurrent callers, one records
    the change (and its audit entry). Called by the worker when a run ends
    (`operation_of_run_sync`, `operations_sync_due`) and by the services acting on an
    operation; reads use `operation_as_of_run`, which writes nothing.
    """
    outcome = _run_outcome(operation)
    if outcome is None or outcome[0] == operation.status:
        return operation
    status, error_code, error = outcome
    changed = RefreshOperation.objects.filter(pk=operation.pk, status=operation.status).update(
        status=status, error_code=error_code, error=error, finished_at=timezone.now()
    )
    operation.refresh_from_db()
    if changed:
        audit.record_operation(operation, actor=None, duration_seconds=None)
        logger.info("refresh %s is %s", operation.public_id, operation.status)
    return operation


def operation_as_of_run(*, operation: RefreshOperation) -> RefreshOperation:
    """The operation as its run's outcome makes it, for reads (a GET, a page): the same
    status `operation_sync` would record, set on the object in memory only. Writes nothing;
    the worker records it."""
    outcome = _run_outcome(operation)
    if outcome is not None and outcome[0] != operation.status:
        operation.status, operation.error_code, operation.error = outcome
        operation.finished_at = operation.finished_at or operation.run.finished_at
    return operation


def _run_outcome(operation: RefreshOperation) -> tuple[str, str, str] | None:
    """(status, error_code, error) its run's end makes of a zero-downtime operation that
    follows it, or None (not following a run, or still loading)."""
    run = operation.run
    if run is None or not run.stage_name or operation.status not in FOLLOWS_ITS_RUN:
        return None
    run.refresh_from_db(fields=["status", "publish_state", "error", "finished_at"])
    if run.status == RunStatus.FAILED:
        return OperationStatus.FAILED, "RUN_FAILED", run.error
    if run.status == RunStatus.CANCELLED:
        return OperationStatus.CANCELLED, "RUN_CANCELLED", run.error
    if run.publish_state not in STATUS_BY_PUBLISH_STATE:
        return None  # still loading
    status = STATUS_BY_PUBLISH_STATE[run.publish_state]
    if status == OperationStatus.AWAITING_DECISION:
        return status, "PARTIAL_SUCCESS", run.error
    return status, "", ""


def operation_of_run_sync(run: Run) -> RefreshOperation | None:
    """After a staged run ended (the worker): record its operation's outcome."""
    operation = RefreshOperation.objects.filter(run=run).select_related("run").first()
    return operation_sync(operation=operation) if operation is not None else None


def operations_sync_due() -> list[str]:
    """The reaper's pass: operations still following a run that has ended, recorded (those
    whose worker stopped between the run's end and `operation_of_run_sync`)."""
    moved = []
    following = (
        RefreshOperation.objects.filter(status__in=FOLLOWS_ITS_RUN, run__finished_at__isnull=False)
        .exclude(run__stage_name="")
        .exclude(run__publish_state=PublishState.AWAITING_BATCH)  # its batch moves it on
        .exclude(
            status=OperationStatus.AWAITING_DECISION,
            run__publish_state=PublishState.AWAITING_DECISION,
        )
        .select_related("run")
    )
    for operation in following:
        status = operation.status
        if operation_sync(operation=operation).status != status:
            moved.append(operation.public_id)
    return moved


# The statuses in which a zero-downtime operation follows its run (the others are final,
# or an undo's or a step's in progress).
FOLLOWS_ITS_RUN = (OperationStatus.ACCEPTED, OperationStatus.AWAITING_DECISION)


def refresh_decide(
    *, operation: RefreshOperation, actor, publish: bool, confirm: bool, engine=None
) -> RefreshOperation:
    """Publish what a zero-downtime refresh loaded, or discard it, after some files failed.

    Single-flight: the decision is taken under the ingestion's lock, by the one caller that
    still finds the run awaiting it (one publish or discard, one event, one audit entry).
    A concurrent caller whose same decision another one took while it waited for the lock
    gets the settled operation; the opposite decision, or a decision asked for once the
    operation no longer waits, is refused.

    Raises:
        PermissionDeniedError: the actor's role does not allow the operation's kind.
        ConfirmationRequiredError: `confirm` is not exactly True.
        OperationNotDecidableError: the operation does not wait for a decision, or the
            other decision was taken.
        EngineError: the table changed since the new version was staged (publish only).
    """
    operation, ingestion = _acting_on(
        operation, actor=actor, confirm=confirm, gone=OperationNotDecidableError
    )
    if operation.status != OperationStatus.AWAITING_DECISION:
        raise OperationNotDecidableError(
            f"Operation {operation.public_id} is {operation.status}: there is nothing to "
            "publish or discard."
        )
    engine = engine or load_engine(ingestion.engine)
    with transaction.atomic():
        ingestion_lock(ingestion)
        run = Run.objects.select_related("ingestion").select_for_update().get(pk=operation.run_id)
        settled = {
            PublishState.PUBLISHED: OperationStatus.PUBLISHED,
            PublishState.DISCARDED: OperationStatus.DISCARDED,
        }.get(run.publish_state)
        if settled is None and run.publish_state != PublishState.AWAITING_DECISION:
            raise OperationNotDecidableError(f"Operation {operation.public_id} was decided.")
        if settled is None:
            if publish:
                staged_publish(run=run, engine=engine)
            else:
                staged_discard(run=run, engine=engine)
            operation = operation_sync(operation=operation)
            audit.record_decision(operation, actor=actor, published=publish)
            return operation
    # Another caller decided while this one waited for the lock.
    if settled != (OperationStatus.PUBLISHED if publish else OperationStatus.DISCARDED):
        raise OperationNotDecidableError(
            f"Operation {operation.public_id} was {settled} by another request."
        )
    return operation_sync(operation=operation)


def _acting_on(operation: RefreshOperation, *, actor, confirm, gone: type[AutoloaderError]):
    """What every confirmed action on an existing operation checks first: its ingestion
    still exists, the actor's role allows its kind, `confirm` is exactly True. Returns the
    operation brought up to its run's outcome, and its ingestion."""
    ingestion = operation.ingestion
    if ingestion is None:
        raise gone("The ingestion of this operation was deleted.")
    _require(actor, spec_of(operation.kind).permission, ingestion, kind=operation.kind)
    if confirm is not True:
        raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
    return operation_sync(operation=operation), ingestion
