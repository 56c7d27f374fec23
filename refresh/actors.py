"""Who acts on a refresh: the permission check every refresh service makes (a refusal is
audited), and the user an action is recorded under."""

from ingestions.errors import PermissionDeniedError
from ingestions.models import Ingestion

from . import audit
from .specs import spec_of


def _require(actor, permission: str, ingestion: Ingestion, *, kind: str) -> None:
    if not actor.has_perm(permission, ingestion):
        audit.record_refusal(
            actor=actor, ingestion=ingestion, kind=kind, reason="INSUFFICIENT_PERMISSIONS"
        )
        raise PermissionDeniedError(
            f"Your role does not allow {spec_of(kind).label.lower()} on this ingestion."
        )


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
