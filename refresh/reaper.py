"""The worker's recovery of refresh operations whose process died: their remaining steps,
or their interrupted undo, finished by whoever claims them first."""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import OperationStatus, RefreshOperation, Retention
from .steps import Heartbeat, run_steps, take_over
from .undo import undo_finish

logger = logging.getLogger(__name__)


def refresh_reap() -> list[str]:
    """Finish what a dead process left half-done; the worker's reaper calls it.

    An operation in progress whose heartbeat stopped for REFRESH_STALE_SECONDS (its web
    process was killed) has its remaining steps executed (every step is idempotent), so a
    table is never left dropped with nothing running and the ingestion is not left locked;
    an interrupted undo is finished the same way.

    Returns:
        The ids of the operations finished.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    finished: list[str] = []
    stale = RefreshOperation.objects.filter(
        status=OperationStatus.IN_PROGRESS, updated_at__lt=stale_before
    ).select_related("ingestion", "requested_by")
    for operation in stale:
        # Claimed by one reaper (or retried undo): the others see a fresh heartbeat.
        if not take_over(operation) or operation.ingestion is None:
            continue
        logger.warning("refresh %s was interrupted: the reaper finishes it", operation.public_id)
        try:
            if operation.retention == Retention.RESTORING:
                with Heartbeat(operation):
                    undo_finish(operation, ingestion=operation.ingestion, actor=None)
            else:
                operation.notes = [
                    *operation.notes,
                    "Interrupted (its process stopped); finished by the worker",
                ]
                operation.save(update_fields=["notes", "updated_at"])
                run_steps(
                    operation,
                    ingestion=operation.ingestion,
                    actor=operation.requested_by,
                    engine=None,
                )
        except Exception:  # retried at the next pass; the operation says where it stands
            logger.exception("the reaper could not finish refresh %s", operation.public_id)
            continue
        finished.append(operation.public_id)
    return finished
