"""Audit entries of refresh operations, in django-auditlog's log (reviewed in the admin)."""

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType

from ingestions.models import Ingestion

from .planning import public_impact


def _entry(*, actor, ingestion: Ingestion, action: int, changes: dict, data: dict) -> LogEntry:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(Ingestion),
        object_pk=str(ingestion.pk),
        object_id=ingestion.pk,
        object_repr=f"{ingestion.public_id} ({ingestion.destination_table})",
        action=action,
        changes=changes,
        actor=user,
        actor_email=getattr(user, "email", "") or None,
        additional_data={
            "tenant": ingestion.tenant.slug,
            "ingestion_id": ingestion.public_id,
            "ingestion_name": ingestion.name,
            "actor": getattr(user, "username", None),
            **data,
        },
    )


def record_operation(operation, *, actor, duration_seconds: float | None) -> LogEntry | None:
    """One entry per executed operation (and per resume), naming who executed that attempt.

    `actor` is None when no one did: an operation found interrupted is closed by the system.
    """
    if operation.ingestion is None:
        return None
    steps = [
        {
            "operation": step.name,
            "status": step.status,
            "error_code": step.error_code or None,
            # What the step did (rows dropped, files forgotten, the run queued): the audit
            # page says it in words, where the impact only planned the run's load.
            "details": step.details or {},
        }
        for step in operation.steps.all()
    ]
    return _entry(
        actor=actor,
        ingestion=operation.ingestion,
        action=LogEntry.Action.UPDATE,
        changes={"refresh_operation": [None, f"{operation.kind}: {operation.status}"]},
        data={
            "operation": operation.kind,
            "label": operation.label,
            "operation_id": operation.public_id,
            "outcome": operation.status,
            # The PRD's impact, and its bytes: "14 B", not "0.0 GB", on the audit page.
            "impact": {
                **public_impact(operation.impact),
                "bytes_to_process": operation.impact.get("bytes_to_process"),
            },
            "steps": steps,
            "run_id": operation.run.public_id if operation.run_id else None,
            "attempt": operation.attempts,
            "duration_seconds": duration_seconds,
        },
    )


def record_refusal(*, actor, ingestion: Ingestion, kind: str, reason: str) -> LogEntry:
    """A refused attempt (no permission, protected table) is audited too, naming the actor."""
    return _entry(
        actor=actor,
        ingestion=ingestion,
        action=LogEntry.Action.ACCESS,
        changes={"refresh_operation": [None, f"{kind}: refused ({reason})"]},
        data={"operation": kind, "outcome": "refused", "reason": reason},
    )


def record_decision(operation, *, actor, published: bool) -> LogEntry | None:
    """Who published (or discarded) a zero-downtime refresh that waited for a decision."""
    if operation.ingestion is None:
        return None
    decision = "published" if published else "discarded"
    return _entry(
        actor=actor,
        ingestion=operation.ingestion,
        action=LogEntry.Action.UPDATE,
        changes={"refresh_operation": [None, f"{operation.kind}: {decision} by decision"]},
        data={
            "operation": operation.kind,
            "operation_id": operation.public_id,
            "outcome": operation.status,
            "decision": decision,
        },
    )


def record_undo(operation, *, actor) -> LogEntry | None:
    """Who undid an operation, and what came back and what was lost."""
    if operation.ingestion is None:
        return None
    return _entry(
        actor=actor,
        ingestion=operation.ingestion,
        action=LogEntry.Action.UPDATE,
        changes={"refresh_operation": [operation.kind, f"{operation.kind}: undone"]},
        data={
            "operation": "undo",
            "operation_id": operation.public_id,
            "undone_kind": operation.kind,
            "outcome": operation.status,
            "restored": operation.undo.get("restored", {}),
            "discarded": operation.undo.get("discarded", {}),
        },
    )
