"""Which tenant a request acts for: the user's memberships, chosen by header or session."""

from .errors import AutoloaderError
from .models import Membership, Tenant

TENANT_HEADER = "HTTP_X_TENANT"
SESSION_TENANT_KEY = "tenant"


class NoTenantError(AutoloaderError):
    """The user belongs to no tenant (or not to the one asked for)."""

    error_code = "TENANT_NOT_FOUND"
    status_code = 403
    help = "Ask an admin to add you to a tenant; choose one with the X-Tenant header."


def tenant_for_request(request) -> Tenant:
    """The tenant a request acts for.

    A user in one tenant always acts for it; a user in several picks one with the
    `X-Tenant: <slug>` header (API) or the console's tenant switcher (session), else the
    first by name.
    """
    if hasattr(request, "_autoloader_tenant"):
        return request._autoloader_tenant
    memberships = Membership.objects.filter(user=request.user).select_related("tenant")
    wanted = request.META.get(TENANT_HEADER) or _session_tenant(request)
    if wanted:
        memberships = memberships.filter(tenant__slug=wanted)
    membership = memberships.order_by("tenant__slug").first()
    if membership is None:
        raise NoTenantError("You are not a member of this tenant." if wanted else "")
    request._autoloader_tenant = membership.tenant
    return membership.tenant


def _session_tenant(request) -> str | None:
    session = getattr(request, "session", None)
    return session.get(SESSION_TENANT_KEY) if session is not None else None
