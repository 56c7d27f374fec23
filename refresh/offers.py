"""What an actor may do with an operation now (resume, publish or discard, undo): the offers
the API and the console show; the services still decide every call."""

from dataclasses import dataclass

from django.utils import timezone

from ingestions.models import Ingestion

from .models import OperationKind, OperationStatus, RefreshOperation, Retention
from .specs import SELECTIVE_REFRESH, SPECS, spec_of
from .undo import NOTHING_CHANGED

RESUMABLE_STATUSES = (OperationStatus.PARTIAL_FAILURE, OperationStatus.FAILED)


@dataclass(frozen=True)
class OperationOffers:
    """What to offer an actor on an operation, so adapters only show it. The services
    (`refresh_resume`, `refresh_decide`, `refresh_undo`) still decide every call; this
    avoids a button that would certainly be refused."""

    settled: bool  # False while it may still change on its own (steps, its run, publish)
    may_change: bool  # the actor's role allows this kind (and its resume, decision, undo)
    resume: bool
    decide: bool
    undo: bool
    undo_later: bool  # kept already: undoable once its run has published


def operation_offers(
    *, operation: RefreshOperation, actor, superseded: bool | None = None
) -> OperationOffers:
    """`superseded`: whether a newer operation exists on its ingestion, when the caller
    knows it already (a newest-first list); looked up otherwise."""
    ingestion = operation.ingestion
    may_change = ingestion is not None and actor.has_perm(
        spec_of(operation.kind).permission, ingestion
    )
    settled = operation_settled(operation=operation)
    if superseded is None:
        superseded = RefreshOperation.objects.filter(
            ingestion_id=operation.ingestion_id, created_at__gt=operation.created_at
        ).exists()
    kept = (
        operation.retention == Retention.KEPT
        and operation.retained_until is not None
        and operation.retained_until > timezone.now()
    )
    awaiting = operation.status == OperationStatus.AWAITING_DECISION
    return OperationOffers(
        settled=settled,
        may_change=may_change,
        resume=may_change and not superseded and operation.status in RESUMABLE_STATUSES,
        decide=may_change and awaiting,
        undo=may_change and settled and kept and operation.status not in NOTHING_CHANGED,
        undo_later=operation.retention == Retention.KEPT and (not settled or awaiting),
    )


def operation_settled(*, operation: RefreshOperation) -> bool:
    """Whether the record no longer changes on its own: no step under way, no run that
    loads (and, in zero-downtime mode, publishes when it ends)."""
    if operation.status == OperationStatus.IN_PROGRESS:
        return False
    run = operation.run
    return not (
        operation.status == OperationStatus.ACCEPTED
        and run is not None
        and (run.is_active or bool(run.stage_name))
    )


def ingestion_offers(*, ingestion: Ingestion, actor) -> list:
    """The refresh operations (specs) the actor's role allows on the ingestion; a selective
    refresh follows the full refresh whose permission it is."""
    offers = []
    for spec in SPECS.values():
        if actor.has_perm(spec.permission, ingestion):
            offers.append(spec)
            if spec.kind == OperationKind.FULL_REFRESH:
                offers.append(SELECTIVE_REFRESH)
    return offers
