"""Runs: request, cancel, recover dead workers; executing is `run_executor`, the
exactly-once batch protocol and staged runs are `staging`.

The exactly-once protocol (DESIGN §5.1): every batch of files is recorded as a PENDING
`RunBatch` before it is committed to Iceberg, the commit carries the batch key in its
snapshot summary, and the history rows are written together with the batch's COMMITTED
mark. A worker that dies anywhere leaves either no snapshot (the batch is ABANDONED and
its files load again) or a snapshot naming the batch (the history is completed from the
batch record). Recovery reads the table's snapshots to decide, never guesses.
"""

import logging
from datetime import timedelta

from auditlog.models import LogEntry
from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from . import audit, hooks
from .errors import PermissionDeniedError, RunInProgressError, RunNotCancellableError
from .models import Ingestion, OnPartialFailure, Run, RunStatus, RunTrigger
from .selectors import run_active

logger = logging.getLogger(__name__)

SNAPSHOT_RUN_KEY = "autoloader.run-id"
SNAPSHOT_BATCH_KEY = "autoloader.batch-key"
SNAPSHOT_INGESTION_KEY = "autoloader.ingestion-id"
RUN_REQUEST_ATTEMPTS = 3
# Files under this many rows are small: fitted to the table's schema together, and their
# rows made one chunk before writing.
SMALL_FILE_ROWS = 10_000


# --- requesting and cancelling ---------------------------------------------------------


def run_request(
    *,
    ingestion: Ingestion,
    actor=None,
    trigger: str = RunTrigger.API,
    for_refresh_operation: bool = False,
    stage_name: str = "",
    stage_replaces_history: bool = False,
    on_partial_failure: str = OnPartialFailure.DECIDE,
    stage_scope: dict | None = None,
    publish_hold: bool = False,
) -> Run:
    """Queue a run of `ingestion` for the worker.

    An `actor` must be allowed to run the ingestion, whoever calls (the API, the console, a
    retry of a failed file); no actor is the product's own call (a schedule firing, the
    demo). A refresh operation's own run was authorized as that operation.

    With `stage_name`, the run is staged (a zero-downtime refresh): it loads a new version
    of the table beside the live one (replacing the history, or adding to it) and publishes
    both when it ends; a failed or cancelled one publishes nothing. With `stage_scope` too
    (a selective refresh), it reloads only the files in the scope and its version replaces
    only their rows and history entries. With `publish_hold` (a batch refresh's member), the
    loaded version waits for its batch to publish it (`refresh.batches`).

    The run row and its task row are inserted in one transaction, so a run is never queued
    without a task to execute it, and the conditional unique constraint refuses a second
    active run even when two requests race. The ingestion row is locked meanwhile, the
    same lock a refresh operation takes to start, so a run and a refresh cannot interleave.

    Raises:
        PermissionDeniedError: the actor may not run the ingestion.
        RunInProgressError: the ingestion already has a queued or running run.
        RefreshInProgressError: a refresh operation is changing the ingestion (unless this
            run is that operation's own step).
    """
    from .tasks import execute_run

    if actor is not None and not for_refresh_operation:
        _authorize(actor, ingestion, "running")
    requested_by = actor if getattr(actor, "is_authenticated", False) else None
    for attempt in range(1, RUN_REQUEST_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                ingestion_lock(ingestion)
                if not for_refresh_operation:
                    hooks.refuse_changes(ingestion)
                run = Run.objects.create(
                    ingestion=ingestion,
                    trigger=trigger,
                    requested_by=requested_by,
                    stage_name=stage_name,
                    stage_replaces_history=stage_replaces_history,
                    stage_scope=stage_scope,
                    publish_hold=publish_hold,
                    on_partial_failure=on_partial_failure,
                )
                result = execute_run.enqueue(run.public_id)
                run.task_id = str(result.id)
                run.save(update_fields=["task_id"])
                # A person's (or token's) request; a refresh operation is audited as a whole.
                if requested_by is not None and not for_refresh_operation:
                    audit.record_change(
                        actor=actor,
                        obj=run,
                        tenant=ingestion.tenant,
                        action="run_requested",
                        log_action=LogEntry.Action.CREATE,
                        object_repr=run.public_id,
                        changes={"status": [None, run.status]},
                        data={
                            "ingestion_id": ingestion.public_id,
                            "run_id": run.public_id,
                            "trigger": trigger,
                        },
                    )
            break
        except IntegrityError:
            active = run_active(ingestion=ingestion)
            if active is not None:
                raise RunInProgressError(
                    "A run is already in progress for this ingestion",
                    current_run_id=active.public_id,
                ) from None
            # The run that was in the way finished between the refused insert and the look
            # up: nothing is active any more, so ask again (it was a 500 before).
            if attempt == RUN_REQUEST_ATTEMPTS:
                raise
    logger.info("run %s queued for %s (%s)", run.public_id, ingestion.public_id, trigger)
    return run


def ingestion_lock(ingestion: Ingestion) -> None:
    """Lock the ingestion's row until the end of the current transaction.

    Runs and refresh operations take this lock to start, so their checks (is a run active?
    is a refresh in flight?) and their inserts cannot interleave. On SQLite the IMMEDIATE
    transaction mode already serializes writers.
    """
    list(Ingestion.objects.select_for_update().filter(pk=ingestion.pk).values_list("pk"))


RUN_PERMISSION = "ingestions.run_ingestion"


def run_allowed(*, actor, ingestion: Ingestion) -> bool:
    """Whether the actor's role may start and cancel runs of the ingestion."""
    return actor.has_perm(RUN_PERMISSION, ingestion)


def _authorize(actor, ingestion: Ingestion, doing: str) -> None:
    if not run_allowed(actor=actor, ingestion=ingestion):
        raise PermissionDeniedError(f"Your role does not allow {doing} this ingestion.")


def run_cancel(*, run: Run, actor=None) -> Run:
    """Cancel a run: a queued one at once, a running one at its next batch boundary.

    With `actor`, its role must allow running the ingestion.

    Raises:
        PermissionDeniedError: the actor may not cancel runs of this ingestion.
        RunNotCancellableError: the run has already finished.
    """
    if actor is not None:
        _authorize(actor, run.ingestion, "cancelling runs of")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.CANCELLED
            run.finished_at = timezone.now()
            run.error = "Cancelled before it started."
            run.save(update_fields=["status", "finished_at", "error"])
        elif run.status == RunStatus.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
        else:
            raise RunNotCancellableError(
                f"Run {run.public_id} has already finished ({run.status})."
            )
        audit.record_change(
            actor=actor,
            obj=run,
            tenant=run.ingestion.tenant,
            action="run_cancelled",
            object_repr=run.public_id,
            changes={"cancel_requested": [False, True]},
            data={"ingestion_id": run.ingestion.public_id, "run_id": run.public_id},
        )
    return run


# --- recovering runs whose worker died -------------------------------------------------


def runs_recover_stale() -> list[str]:
    """Re-queue runs whose worker died, so a live worker resumes them.

    A RUNNING run with a stale heartbeat goes back to QUEUED with a fresh task (its worker
    id cleared, so a worker that was only slow stops before its next commit). A QUEUED run
    whose task is no longer waiting (its worker died between taking the task and claiming
    the run) gets a fresh task too.
    """
    from django_tasks_db.models import DBTaskResult

    from .tasks import execute_run

    stale_before = timezone.now() - timedelta(seconds=settings.AUTOLOADER_RUN_STALE_SECONDS)
    requeued: list[str] = []
    for run in Run.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before):
        with transaction.atomic():
            taken = Run.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
            ).update(status=RunStatus.QUEUED, worker_id="")
            if taken:
                result = execute_run.enqueue(run.public_id)
                Run.objects.filter(pk=run.pk).update(task_id=str(result.id))
                requeued.append(run.public_id)
    for run in Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=stale_before):
        waiting = DBTaskResult.objects.filter(id=run.task_id, status="READY").exists()
        if not waiting:
            with transaction.atomic():
                result = execute_run.enqueue(run.public_id)
                Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                    task_id=str(result.id)
                )
            requeued.append(run.public_id)
    if requeued:
        logger.warning("re-queued runs whose worker died: %s", ", ".join(requeued))
    close_old_connections()
    return requeued
