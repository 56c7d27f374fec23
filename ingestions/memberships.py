"""Who belongs to a tenant, with which role: every change audited in the tenant's log."""

from auditlog.models import LogEntry
from django.db import transaction

from . import audit
from .models import Membership, Tenant


def membership_set(*, tenant: Tenant, user, role: str, actor=None) -> Membership:
    """Add `user` to `tenant` with `role`, or change the role it has there (audited)."""
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(tenant=tenant, user=user).first()
        if membership is None:
            membership = Membership.objects.create(tenant=tenant, user=user, role=role)
            _audit(membership, actor, "membership_added", {"role": [None, role]})
        elif membership.role != role:
            old = membership.role
            membership.role = role
            membership.save(update_fields=["role"])
            _audit(membership, actor, "membership_changed", {"role": [old, role]})
    return membership


def membership_remove(*, membership: Membership, actor=None) -> None:
    """Take the user out of the tenant (audited); their tokens no longer reach it."""
    with transaction.atomic():
        _audit(membership, actor, "membership_removed", {"role": [membership.role, None]})
        membership.delete()


def _audit(membership: Membership, actor, action: str, changes: dict) -> None:
    audit.record_change(
        actor=actor,
        obj=membership,
        tenant=membership.tenant,
        action=action,
        object_repr=f"{membership.user.username} ({membership.role})",
        changes=changes,
        data={"member": membership.user.username},
        log_action={
            "membership_added": LogEntry.Action.CREATE,
            "membership_removed": LogEntry.Action.DELETE,
        }.get(action, LogEntry.Action.UPDATE),
    )
