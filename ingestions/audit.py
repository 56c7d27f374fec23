"""Audit entries of state changes outside refresh operations, in django-auditlog's log."""

import re

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType

from .models import Ingestion

# The audited changes other than refresh operations (their `additional_data["operation"]`),
# for the audit page's filter.
CHANGE_ACTIONS = [
    ("ingestion_created", "Ingestion created"),
    ("ingestion_updated", "Ingestion updated"),
    ("ingestion_deleted", "Ingestion deleted"),
    ("run_requested", "Run requested"),
    ("run_cancelled", "Run cancelled"),
    ("location_granted", "Location granted"),
    ("location_revoked", "Location revoked"),
    ("file_quarantined", "File quarantined"),
    ("file_released", "File released from quarantine"),
    ("token_created", "API token created"),
    ("token_revoked", "API token revoked"),
    ("membership_added", "Member added"),
    ("membership_changed", "Member's role changed"),
    ("membership_removed", "Member removed"),
    ("webhook_created", "Webhook created"),
    ("webhook_updated", "Webhook updated"),
    ("webhook_deleted", "Webhook deleted"),
    ("schedule_set", "Schedule set"),
    ("schedule_updated", "Schedule updated"),
    ("schedule_paused", "Schedule paused"),
    ("schedule_resumed", "Schedule resumed"),
    ("schedule_deleted", "Schedule deleted"),
    ("schedule_approved", "Scheduled refresh approved"),
    ("schedule_fired", "Schedule fired"),
    ("schedule_refused", "Scheduled firing refused"),
]
# A field whose value must never reach the log, whoever records it: its change is kept
# (that it changed), its values are not.
SECRET_FIELD = re.compile(r"secret|password|token_key|access_key|credential", re.IGNORECASE)
HIDDEN = "(hidden)"


def record_change(
    *,
    actor,
    obj,
    tenant,
    action: str,
    changes: dict,
    log_action: int = LogEntry.Action.UPDATE,
    object_repr: str | None = None,
    data: dict | None = None,
) -> LogEntry:
    """One entry naming the actor (None: the system), the tenant and what changed.

    Args:
        obj: The changed model instance (its type and key are recorded).
        action: What happened, e.g. "ingestion_deleted": `additional_data["operation"]`.
        changes: auditlog's shape, {"field": [old, new]}: the values, so the log says what
            changed from what to what. A secret's values are replaced by "(hidden)".
    """
    user = actor if getattr(actor, "is_authenticated", False) else None
    ingestion = obj if isinstance(obj, Ingestion) else getattr(obj, "ingestion", None)
    return LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(type(obj)),
        object_pk=str(obj.pk),
        object_id=obj.pk,
        object_repr=object_repr or str(obj),
        action=log_action,
        changes=_without_secrets(changes),
        actor=user,
        actor_email=getattr(user, "email", "") or None,
        additional_data={
            "tenant": tenant.slug,
            # The same keys as refresh operations' entries, so one audit page and one set of
            # admin filters show every change.
            "operation": action,
            "outcome": "success",
            "actor": getattr(user, "username", None),
            # Its name as it was then: the page shows it beside the id, even once deleted.
            **({"ingestion_name": ingestion.name} if isinstance(ingestion, Ingestion) else {}),
            **(data or {}),
        },
    )


def _without_secrets(changes: dict) -> dict:
    return {
        field: [None if value is None else HIDDEN for value in values]
        if SECRET_FIELD.search(str(field)) and isinstance(values, list | tuple)
        else values
        for field, values in changes.items()
    }
