"""Roles mapped onto Django permissions, granted per tenant by an authentication backend."""

from django.contrib.auth.backends import BaseBackend

from .models import Membership, Role, Tenant

VIEWER_PERMISSIONS = frozenset(
    {
        "ingestions.view_ingestion",
        "ingestions.view_run",
        "ingestions.view_processedfile",
    }
)
OPERATOR_PERMISSIONS = VIEWER_PERMISSIONS | {
    "ingestions.run_ingestion",
    "ingestions.fresh_start_ingestion",
}
ADMIN_PERMISSIONS = OPERATOR_PERMISSIONS | {
    "ingestions.add_ingestion",
    "ingestions.change_ingestion",
    "ingestions.delete_ingestion",
    "ingestions.full_refresh_ingestion",
    "ingestions.drop_table_ingestion",
    "ingestions.clear_history_ingestion",
}
# A role's permissions: the domain's above, and those the apps above grant to it in their
# `AppConfig.ready()` (`grant_to_role`): webhooks and schedule approvals, admins only.
ROLE_PERMISSIONS = {
    Role.VIEWER: set(VIEWER_PERMISSIONS),
    Role.OPERATOR: set(OPERATOR_PERMISSIONS),
    Role.ADMIN: set(ADMIN_PERMISSIONS),
}
ROLES_FROM_THE_TOP = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)


def grant_to_role(role: str, *permissions: str) -> None:
    """Give `role` (and every role above it) `permissions` of another app in every tenant
    where a user holds it."""
    for holder in ROLES_FROM_THE_TOP[: ROLES_FROM_THE_TOP.index(role) + 1]:
        ROLE_PERMISSIONS[holder].update(permissions)


def tenant_of(obj) -> int | None:
    """The tenant id an object belongs to: a Tenant, or anything with `tenant_id`/`ingestion`."""
    if isinstance(obj, Tenant):
        return obj.pk
    if hasattr(obj, "tenant_id"):
        return obj.tenant_id
    ingestion = getattr(obj, "ingestion", None)
    return getattr(ingestion, "tenant_id", None)


class TenantRoleBackend(BaseBackend):
    """Grants the permissions of the user's role in the tenant that owns `obj`.

    Permissions are per tenant: an admin of one tenant is a viewer (or nothing) in another,
    so `user.has_perm(perm)` without an object grants nothing here.
    """

    def _roles(self, user_obj) -> dict[int, str]:
        # Cached on the user object: one query per request, whatever the number of checks.
        if not hasattr(user_obj, "_tenant_roles"):
            user_obj._tenant_roles = dict(
                Membership.objects.filter(user=user_obj).values_list("tenant_id", "role")
            )
        return user_obj._tenant_roles

    def get_all_permissions(self, user_obj, obj=None) -> set[str]:
        if not user_obj.is_active or user_obj.is_anonymous or obj is None:
            return set()
        role = self._roles(user_obj).get(tenant_of(obj))
        return set(ROLE_PERMISSIONS.get(role, ()))

    def has_perm(self, user_obj, perm, obj=None) -> bool:
        return perm in self.get_all_permissions(user_obj, obj)
