"""Undo and retention: bring back what a refresh operation replaced (its restore point),
once, under any number of concurrent callers; and let what was kept go when its window ends."""

import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from ingestions import hooks
from ingestions.engines import load_engine
from ingestions.errors import AutoloaderError, RefreshInProgressError
from ingestions.models import Ingestion, ProcessedFile, Run
from ingestions.runs import ingestion_lock
from ingestions.services import history_purge_archived, history_restore

from . import audit
from .actors import _require, _user
from .errors import OperationNotUndoableError
from .limits import rate_limit_slot
from .models import OperationKind, OperationStatus, RefreshOperation, Retention
from .planning import gigabytes
from .preview import PREVIEW_PERMISSION, in_flight_error, refuse_if_busy, refuse_if_protected
from .specs import spec_of
from .steps import Heartbeat, take_over
from .sync import _acting_on, operation_sync

logger = logging.getLogger(__name__)

# Operations that changed nothing: what they kept is released at once.
NOTHING_CHANGED = (OperationStatus.FAILED, OperationStatus.DISCARDED, OperationStatus.CANCELLED)


@dataclass
class UndoPlan:
    """What undoing an operation would bring back and what it would lose."""

    operation: RefreshOperation
    blocked_by: AutoloaderError | None
    restores: dict
    discards: dict
    allowed: bool  # the actor's role allows the undo (the preview only needs to view)

    def as_response(self) -> dict:
        return {
            "operation_id": self.operation.public_id,
            "undoable": self.blocked_by is None,
            "allowed": self.allowed,
            "blocked_by": None
            if self.blocked_by is None
            else {"error_code": self.blocked_by.error_code, "detail": str(self.blocked_by)},
            "restores": self.restores,
            "discards": self.discards,
            "retained_until": self.operation.retained_until,
            "retained_bytes": self.operation.retained_bytes,
        }


def undo_preview(*, operation: RefreshOperation, actor, engine=None) -> UndoPlan:
    """Dry-run of `refresh_undo`: what comes back, what is lost, and what blocks it.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        OperationNotUndoableError: its ingestion was deleted.
    """
    ingestion = operation.ingestion
    if ingestion is None:
        raise OperationNotUndoableError("The ingestion of this operation was deleted.")
    _require(actor, PREVIEW_PERMISSION, ingestion, kind=operation.kind)
    operation = operation_sync(operation=operation)
    blocked_by = _undo_blocker(operation, ingestion=ingestion)
    point = operation.restore_point
    restores, discards = {}, {}
    if point:
        engine = engine or load_engine(ingestion.engine)
        table = point.get("table", {"kind": "unchanged"})
        mark = point["history"]
        restores = {
            "table_exists": table["kind"] in ("snapshot", "retired")
            or (table["kind"] == "unchanged" and engine.table_exists(ingestion.table_identifier)),
            "row_count": table.get("row_count"),
            "size_bytes": table.get("size_bytes"),
            "size_gb": gigabytes(table["size_bytes"]) if "size_bytes" in table else None,
            "history_files": ProcessedFile.all_generations.filter(
                ingestion=ingestion, generation=mark["generation"], pk__lte=mark["last_id"]
            ).count(),
        }
        current = engine.describe_table(ingestion.table_identifier)
        runs_since = list(
            Run.objects.filter(ingestion=ingestion, created_at__gt=operation.created_at)
            .exclude(pk=operation.run_id)
            .order_by("created_at")
        )
        discards = {
            "table_exists": current.exists,
            "row_count": current.row_count,
            "size_bytes": current.size_bytes,
            "size_gb": gigabytes(current.size_bytes),
            "history_files": ingestion.processed_files.count(),
            "runs_since": [run.public_id for run in runs_since],
            "rows_loaded_since": sum(run.rows_written for run in runs_since),
        }
    return UndoPlan(
        operation=operation,
        blocked_by=blocked_by,
        restores=restores,
        discards=discards,
        allowed=actor.has_perm(spec_of(operation.kind).permission, ingestion),
    )


def refresh_undo(*, operation: RefreshOperation, actor, confirm: bool, engine=None):
    """Undo an operation: the table and the processed-file history are back as they were
    before it, so the next run loads exactly what it would have loaded then.

    Rows loaded since (by the operation's run or later runs) are lost; `undo_preview`
    says how many. Idempotent: an undone operation is returned as it is.

    Single-flight: the undo is claimed under the ingestion's lock by moving the operation
    to `restoring` (one caller wins), and only the claimant restores, with a heartbeat on
    the operation. A caller that finds it `restoring` with a live heartbeat is answered
    409 REFRESH_IN_PROGRESS (naming the operation); one that finds it undone gets it as it
    is, like a retry. An undo whose claimant died (no heartbeat for REFRESH_STALE_SECONDS)
    is taken over by one caller, a retried undo or the worker's reaper (`refresh_reap`),
    by a conditional UPDATE on the heartbeat it saw (`take_over`); restoring is
    idempotent, and the end is recorded (one event, one audit entry) only by whoever moves
    it out of `restoring`.

    Raises:
        PermissionDeniedError: the actor's role does not allow the operation's kind.
        ConfirmationRequiredError: `confirm` is not exactly True.
        TableProtectedError: the ingestion is protected.
        OperationNotUndoableError: nothing was kept, the window ended, or a later
            operation must be undone first (the message says which).
        RunInProgressError, RefreshInProgressError: the ingestion is busy, or another
            caller is undoing this operation right now.
        RateLimitedError: the actor used up the rate of undos.
        EngineError: the table could not be restored (the undo can be retried).
    """
    operation, ingestion = _acting_on(
        operation, actor=actor, confirm=confirm, gone=OperationNotUndoableError
    )
    kind = OperationKind(operation.kind)
    if operation.status == OperationStatus.UNDONE:
        return operation
    refuse_if_protected(ingestion, actor=actor, kind=kind, doing="undo")
    with transaction.atomic():
        ingestion_lock(ingestion)
        operation.refresh_from_db()
        if operation.status == OperationStatus.UNDONE:
            return operation  # another caller undid it meanwhile: the settled result
        if operation.retention == Retention.RESTORING:
            if not take_over(operation):
                raise RefreshInProgressError(
                    f"Operation {operation.public_id} is being undone by another request.",
                    current_operation_id=operation.public_id,
                )
            logger.warning("undo of %s was interrupted: finishing it", operation.public_id)
        else:
            blocker = _undo_blocker(operation, ingestion=ingestion)
            if blocker is not None:
                raise blocker
            refuse_if_busy(ingestion)
            # Inside the transaction: a refusal from here on rolls the slot back with it.
            with rate_limit_slot(actor=actor, ingestion=ingestion, kind="undo"):
                operation.undo = {
                    "requested_by": getattr(_user(actor), "username", None),
                    "started_at": timezone.now().isoformat(),
                    "previous_status": operation.status,
                }
                operation.retention = Retention.RESTORING
                operation.status = OperationStatus.IN_PROGRESS  # runs and refreshes wait
                try:
                    with transaction.atomic():
                        operation.save(update_fields=["undo", "retention", "status", "updated_at"])
                except IntegrityError:
                    raise in_flight_error(ingestion) from None
    with Heartbeat(operation):
        return undo_finish(operation, ingestion=ingestion, actor=actor, engine=engine)


def undo_finish(operation: RefreshOperation, *, ingestion: Ingestion, actor, engine=None):
    """Restore the table, then the history with the operation's new status, in that order:
    both steps are idempotent, so an interrupted undo is finished by running this again.
    Only the call that moves the operation out of `restoring` records the end (its event
    and audit entry); a second finisher returns the settled operation."""
    engine = engine or load_engine(ingestion.engine)
    point = operation.restore_point
    current = engine.describe_table(ingestion.table_identifier)
    discarded = {
        "table_existed": current.exists,
        "row_count": current.row_count,
        "size_gb": gigabytes(current.size_bytes),
        "history_files": ingestion.processed_files.count(),
    }
    started = timezone.now()
    if "table" in point:
        engine.restore(ingestion.table_identifier, point["table"])
    with transaction.atomic():
        restoring = RefreshOperation.objects.select_for_update().filter(
            pk=operation.pk, retention=Retention.RESTORING
        )
        if not restoring.exists():  # finished by another caller meanwhile
            operation.refresh_from_db()
            return operation
        removed = history_restore(ingestion=ingestion, mark=point["history"])
        restored = engine.describe_table(ingestion.table_identifier)
        operation.undo = {
            **operation.undo,
            "finished_at": timezone.now().isoformat(),
            "duration_seconds": round((timezone.now() - started).total_seconds(), 3),
            "restored": {
                "table_exists": restored.exists,
                "row_count": restored.row_count,
                "size_gb": gigabytes(restored.size_bytes),
                "history_files": ingestion.processed_files.count(),
            },
            "discarded": {**operation.undo.get("discarded", discarded), "history_rows": removed},
        }
        operation.status = OperationStatus.UNDONE
        operation.retention = Retention.RESTORED
        operation.retained_bytes = 0
        operation.undone_at = timezone.now()
        operation.save(
            update_fields=[
                "undo",
                "status",
                "retention",
                "retained_bytes",
                "undone_at",
                "updated_at",
            ]
        )
        hooks.publish("refresh.undone", operation=operation)
        audit.record_undo(operation, actor=actor)
    logger.info("refresh %s was undone", operation.public_id)
    return operation


def _undo_blocker(
    operation: RefreshOperation, *, ingestion: Ingestion
) -> OperationNotUndoableError | None:
    """Why `operation` cannot be undone now, or None."""
    name = operation.public_id
    if operation.status == OperationStatus.UNDONE:
        return OperationNotUndoableError(f"Operation {name} was undone already.")
    if operation.status in NOTHING_CHANGED:
        return OperationNotUndoableError(
            f"Operation {name} is {operation.status}: it changed nothing, there is nothing to undo."
        )
    if operation.status == OperationStatus.AWAITING_DECISION:
        return OperationNotUndoableError(
            f"Operation {name} waits for a decision: publish or discard it first."
        )
    staged_loading = operation.status == OperationStatus.ACCEPTED and operation.zero_downtime
    if operation.status == OperationStatus.IN_PROGRESS or staged_loading:
        return OperationNotUndoableError(
            f"Operation {name} is still in progress: undo it once it has ended."
        )
    if operation.retention == Retention.EXPIRED or (
        operation.retention == Retention.KEPT
        and operation.retained_until is not None
        and operation.retained_until <= timezone.now()
    ):
        return OperationNotUndoableError(
            f"The retention of operation {name} ended on "
            f"{operation.retained_until:%Y-%m-%d %H:%M} UTC: what it replaced was purged."
        )
    if operation.retention != Retention.KEPT:
        return OperationNotUndoableError(
            f"Operation {name} kept nothing to undo with (retain_days was {operation.retain_days})."
        )
    later = (
        RefreshOperation.objects.filter(ingestion=ingestion, created_at__gt=operation.created_at)
        .exclude(status__in=[OperationStatus.UNDONE, *NOTHING_CHANGED])
        .order_by("-created_at")
        .first()
    )
    if later is not None:
        return OperationNotUndoableError(
            f"Operation {later.public_id} ({spec_of(later.kind).label.lower()}) changed "
            f"the table after {name}: undo it first."
        )
    return None


def retention_expire(*, now=None) -> list[str]:
    """Release what operations kept once their window ended (or at once when they changed
    nothing): set-aside tables purged, tags removed, the snapshots and files only they held
    deleted, archived history no operation can restore any more deleted. The worker's reaper
    calls it; idempotent.

    Returns:
        The ids of the operations whose retention ended.
    """
    now = now or timezone.now()
    due = RefreshOperation.objects.filter(retention=Retention.KEPT).filter(
        Q(retained_until__lte=now) | Q(status__in=NOTHING_CHANGED)
    )
    expired: list[str] = []
    for operation in due.select_related("ingestion"):
        point = operation.restore_point
        table_point = point.get("table")
        try:
            if table_point is not None:
                engine = load_engine(point["engine"])
                replaced = (
                    spec_of(operation.kind).can_publish_at_end
                    and operation.status not in NOTHING_CHANGED
                )
                freed = engine.release(
                    point["table_identifier"],
                    table_point,
                    expire_before=operation.created_at if replaced else None,
                )
                point = {**point, "released": {"at": now.isoformat(), "bytes_freed": freed}}
        except AutoloaderError:
            logger.warning("could not release what %s kept", operation.public_id, exc_info=True)
            continue
        RefreshOperation.objects.filter(pk=operation.pk, retention=Retention.KEPT).update(
            retention=Retention.EXPIRED, retained_bytes=0, restore_point=point
        )
        expired.append(operation.public_id)
    # Only ingestions holding archived rows: one query, however many ingestions there are.
    with_archive = Ingestion.objects.filter(
        processed_files__generation__lt=F("history_generation")
    ).distinct()
    for ingestion in with_archive.only("pk", "history_generation"):
        _purge_archived_history(ingestion)
    if expired:
        logger.info("retention ended for %s", ", ".join(expired))
    return expired


def _purge_archived_history(ingestion: Ingestion) -> int:
    """Delete archived history generations that no kept operation can restore."""
    kept = RefreshOperation.objects.filter(
        ingestion=ingestion, retention__in=[Retention.KEPT, Retention.RESTORING]
    ).values_list("restore_point", flat=True)
    generations = [point["history"]["generation"] for point in kept if point.get("history")]
    keep_from = min([*generations, ingestion.history_generation])
    return history_purge_archived(ingestion=ingestion, keep_from=keep_from)
