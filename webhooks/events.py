"""The outbox: `emit` records an event, and one delivery per subscribed webhook, in the
caller's transaction, so a rolled-back change sends nothing and a committed one is never
lost. The worker delivers them (`webhooks.delivery`).

The `*_event` helpers are the one-line hooks the domain calls: each builds its event's
payload from the object that changed.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .models import EVENTS, TEST_EVENT, Webhook, WebhookDelivery, WebhookEvent

# A run's failed files in its payload: enough to act on, bounded for large runs.
FAILED_FILES_IN_PAYLOAD = 50
ERROR_IN_PAYLOAD = 1000
# Changed files named in one `file.changed` payload (all are counted).
FILES_IN_PAYLOAD = 100


def emit(*, tenant, event: str, payload: dict) -> WebhookEvent | None:
    """Queue `event` for every active webhook of `tenant` subscribed to it.

    Runs in the caller's transaction (a savepoint), or in its own. Writes nothing when no
    webhook listens. Returns the event, or None.
    """
    if event not in EVENTS:
        raise ValueError(f"Unknown webhook event {event!r}.")
    webhooks = [
        webhook
        for webhook in Webhook.objects.filter(tenant=tenant, active=True)
        if event in webhook.events
    ]
    return _record(tenant=tenant, event=event, payload=payload, webhooks=webhooks)


def emit_test(*, webhook: Webhook, actor) -> WebhookEvent:
    """Queue a `webhook.test` event to `webhook` only."""
    payload = {
        "webhook_id": webhook.public_id,
        "message": "A test event from the Autoloader Console.",
        "requested_by": getattr(actor, "username", None),
    }
    return _record(tenant=webhook.tenant, event=TEST_EVENT, payload=payload, webhooks=[webhook])


def _record(*, tenant, event: str, payload: dict, webhooks: list[Webhook]) -> WebhookEvent | None:
    if not webhooks:
        return None
    now = timezone.now()
    with transaction.atomic():
        record = WebhookEvent.objects.create(tenant=tenant, event=event, payload=payload)
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(event=record, webhook=webhook, next_attempt_at=now)
            for webhook in webhooks
        )
    return record


# --- payloads of the domain's events ---------------------------------------------------


def on_domain_event(*, event: str, **facts) -> None:
    """The subscriber to `ingestions.hooks`: each event the domain and refresh publish, as
    the webhook event a receiver gets (in the publisher's transaction)."""
    if event in ("run.started", "run.finished"):
        run_event(run_pk=facts["run_pk"], event=event)
    elif event == "run.published":
        staged_run_event(run=facts["run"], event="refresh.published", status="published")
    elif event == "run.discarded":
        staged_run_event(run=facts["run"], event="refresh.failed", status="discarded")
    elif event == "file.quarantined":
        quarantine_event(failure=facts["failure"], automatic=facts["automatic"], run=facts["run"])
    elif event == "file.changed":
        changed_files_event(run=facts["run"], files=facts["files"], count=facts["count"])
    elif event == "refresh.previewed":
        preview_event(ingestion=facts["ingestion"], kind=facts["kind"], plan=facts["plan"])
    elif event in ("refresh.started", "refresh.undone"):
        operation_event(operation=facts["operation"], event=event)
    elif event == "refresh.ended":
        operation_ended_event(operation=facts["operation"])


def run_event(*, run_pk: int, event: str) -> None:
    """`run.started` / `run.finished` of the run, read as it is now."""
    from ingestions.models import Run

    run = Run.objects.select_related("ingestion__tenant").get(pk=run_pk)
    emit(
        tenant=run.ingestion.tenant,
        event=event,
        payload={
            "run_id": run.public_id,
            "ingestion_id": run.ingestion.public_id,
            "status": run.status,
            "trigger": run.trigger,
            "attempt": run.attempts,
            "files_found": run.files_found,
            "files_loaded": run.files_loaded,
            "files_failed": run.files_failed,
            "rows_written": run.rows_written,
            "bytes_read": run.bytes_read,
            "failed_files": [
                {"path": item.get("path"), "error": str(item.get("error", ""))[:ERROR_IN_PAYLOAD]}
                for item in (run.failed_files or [])[:FAILED_FILES_IN_PAYLOAD]
            ],
            "error": run.error[:ERROR_IN_PAYLOAD],
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
        },
    )


def preview_event(*, ingestion, kind: str, plan) -> None:
    """`refresh.previewed`: a dry-run's plan and impact."""
    emit(
        tenant=ingestion.tenant,
        event="refresh.previewed",
        payload={
            "ingestion_id": ingestion.public_id,
            "kind": str(kind),
            "plan_id": plan.plan_id,
            "mode": plan.mode,
            "table": ingestion.destination_table,
            "impact": plan.as_record(),
            "warnings": list(plan.warnings),
        },
    )


def operation_event(*, operation, event: str) -> None:
    """A refresh operation's `refresh.*` event, with its status as it is now."""
    emit(
        tenant=operation.tenant,
        event=event,
        payload={
            "operation_id": operation.public_id,
            "ingestion_id": operation.ingestion_public_id,
            "kind": operation.kind,
            "label": operation.label,
            "mode": operation.request.get("mode"),
            "table": operation.table_name,
            "status": operation.status,
            "run_id": operation.run.public_id if operation.run_id else None,
            "error_code": operation.error_code,
            "error": operation.error[:ERROR_IN_PAYLOAD],
        },
    )


def operation_ended_event(*, operation) -> None:
    """What an operation's end means to a receiver: its change is live (`success`, or
    `accepted` with the drop-first reload under way: the run's events follow it), or it
    ended without it. A zero-downtime operation's "accepted" means its staged run is
    loading: its publish or discard sends the event (`staged_run_event`)."""
    from refresh.models import OperationStatus

    if operation.status == OperationStatus.SUCCESS or (
        operation.status == OperationStatus.ACCEPTED and not operation.zero_downtime
    ):
        operation_event(operation=operation, event="refresh.published")
    elif operation.status in (OperationStatus.FAILED, OperationStatus.PARTIAL_FAILURE):
        operation_event(operation=operation, event="refresh.failed")


def staged_run_event(*, run, event: str, status: str) -> None:
    """The refresh operation of a staged run: its new version was published or discarded
    (the operation's own status follows lazily, `refresh.sync.operation_sync`)."""
    from django.db.models import Q

    from refresh.models import RefreshOperation
    from refresh.steps import operation_id_of_stage

    # The operation records its run when its last step ends, which a quick run can beat:
    # the stage's name names the operation too.
    public_id = operation_id_of_stage(run.stage_name)
    operation = RefreshOperation.objects.filter(Q(run=run) | Q(public_id=public_id)).first()
    if operation is not None:
        operation.status = status  # what `operation_sync` will record
        operation.run = run
        operation_event(operation=operation, event=event)


def quarantine_event(*, failure, automatic: bool, run=None) -> None:
    """`file.quarantined`: which file, after how many failed runs, and why."""
    ingestion = failure.ingestion
    emit(
        tenant=ingestion.tenant,
        event="file.quarantined",
        payload={
            "ingestion_id": ingestion.public_id,
            "path": failure.path,
            "attempts": failure.attempts,
            "automatic": automatic,
            "error": failure.error[:ERROR_IN_PAYLOAD],
            "run_id": run.public_id if run is not None else None,
        },
    )


def changed_files_event(*, run, files: list[dict], count: int) -> None:
    """`file.changed`: files loaded before changed and were not reloaded (policy `warn`)."""
    ingestion = run.ingestion
    emit(
        tenant=ingestion.tenant,
        event="file.changed",
        payload={
            "ingestion_id": ingestion.public_id,
            "run_id": run.public_id,
            "files_changed": count,
            "files": files[:FILES_IN_PAYLOAD],
        },
    )


def _iso(value) -> str | None:
    return value.isoformat() if value else None
