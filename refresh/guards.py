"""What a refresh operation forbids while it is under way: the guard it registers with the
domain (`ingestions.hooks`), which asks it before every run and every change of an
ingestion, and which maintenance asks before touching a table."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from ingestions.errors import RefreshInProgressError
from ingestions.models import Ingestion, PublishState

from .models import OperationStatus, RefreshOperation


def refuse_during_refresh(ingestion: Ingestion) -> None:
    """Refuse a run or a change of `ingestion` while a refresh operation changes it.

    A run must not load into a table that a refresh operation is dropping. An operation
    silent for REFRESH_STALE_SECONDS was interrupted (its process died): it no longer blocks
    runs; the worker's reaper (or a resume) finishes its remaining steps.

    Raises:
        RefreshInProgressError: naming the operation.
    """
    live_after = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    in_flight = RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS, updated_at__gte=live_after
    ).first()
    if in_flight is not None:
        raise RefreshInProgressError(
            "A refresh operation is in progress on this ingestion",
            current_operation_id=in_flight.public_id,
        )
    refuse_while_awaiting_decision(ingestion)


def refuse_while_awaiting_decision(ingestion: Ingestion) -> None:
    """Refuse to change an ingestion whose staged refresh waits to be published or discarded.

    Loading into (or refreshing) the live table now would make the staged version stale.

    Raises:
        RefreshInProgressError: naming the operation that waits.
    """
    waiting = (
        RefreshOperation.objects.filter(
            ingestion=ingestion,
            run__publish_state__in=(PublishState.AWAITING_DECISION, PublishState.AWAITING_BATCH),
        )
        .select_related("run")
        .first()
    )
    if waiting is not None:
        what = (
            "waits for the other tables of its batch"
            if waiting.run.publish_state == PublishState.AWAITING_BATCH
            else "waits for a decision: publish or discard it first"
        )
        raise RefreshInProgressError(
            f"Refresh {waiting.public_id} of this ingestion {what}",
            current_operation_id=waiting.public_id,
        )


def without_refreshes_in_flight(ingestions: QuerySet[Ingestion]) -> QuerySet[Ingestion]:
    """`ingestions` less those a refresh operation is changing (maintenance leaves them)."""
    return ingestions.exclude(refresh_operations__status=OperationStatus.IN_PROGRESS)
