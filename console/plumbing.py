"""The console's request plumbing: logged-in and tenant-scoped views, fragments for HTMX,
and refusals (`AutoloaderError`) shown as the `operation-panel` fragment with the HTTP status
the API gives the same error (the error's own `status_code`). htmx swaps only 2xx responses
by default; `static/js/console.js` also swaps the error responses that carry the
`X-Console-Fragment` header, and only those, so an unexpected server error never lands
inside a panel."""

from functools import wraps
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event

from ingestions.errors import AutoloaderError, IngestionNotFoundError
from ingestions.selectors import ingestion_get
from ingestions.tenancy import SESSION_TENANT_KEY, NoTenantError, tenant_for_request
from refresh.errors import OperationNotFoundError
from refresh.models import OperationStatus, RefreshOperation
from refresh.offers import operation_offers
from refresh.presenters import operation_payload
from refresh.selectors import operation_get
from refresh.specs import spec_of

from .forms import ConfirmOperationForm

# Fired (after the swap settles) whenever an ingestion's state changed: the run table, the
# table and history cards, the operations and the audit trail reload themselves on it.
CHANGED_EVENT = "ingestion-changed"
FRAGMENT_HEADER = "X-Console-Fragment"
# The console's words for a refusal: a title, and what to do next when the domain error's
# own `help` speaks to API clients rather than to someone in front of the page.
ERROR_TITLES = {
    "INSUFFICIENT_PERMISSIONS": "Your role does not allow this",
    "RUN_IN_PROGRESS": "A run is in progress",
    "REFRESH_IN_PROGRESS": "Another operation is in progress",
    "TABLE_PROTECTED": "This ingestion is protected",
    "RATE_LIMITED": "Too many operations",
    "DRY_RUN_REQUIRED": "A recent preview is required",
    "PLAN_STALE": "The impact grew since the preview",
    "OPERATION_NOT_RESUMABLE": "Nothing to resume",
    "OPERATION_NOT_DECIDABLE": "Nothing to publish or discard",
    "OPERATION_NOT_UNDOABLE": "This operation cannot be undone",
    "CONFIRMATION_REQUIRED": "Confirmation required",
    "RUN_NOT_CANCELLABLE": "The run has already finished",
    "NAME_MISMATCH": "The table name does not match",
    "SOURCE_UNAVAILABLE": "The source cannot be listed",
    "CLUSTER_UNAVAILABLE": "The engine cannot be reached",
    "ENGINE_ERROR": "The engine failed",
}
NEXT_STEPS = {
    "RUN_IN_PROGRESS": "Wait for the current run to finish (the runs table follows it) or "
    "cancel it, then start again.",
    "REFRESH_IN_PROGRESS": "Wait for the current operation to finish, then start again.",
    "RATE_LIMITED": "Wait, then start again. The limit keeps repeated destructive operations "
    "from piling up on one table.",
    "DRY_RUN_REQUIRED": "Open the preview again, review the impact and confirm from there.",
    "PLAN_STALE": "Open the preview again: it shows the new impact. Confirm from there.",
    "NAME_MISMATCH": "Type the destination table's name exactly as shown, then confirm.",
    "OPERATION_NOT_DECIDABLE": "Open the operation again: it shows its current status.",
    "OPERATION_NOT_UNDOABLE": "Open the undo preview again: it says what blocks the undo. "
    "Later operations are undone first, newest first.",
}


def login_view(view):
    """Login required; an HTMX fragment request is sent to the login page as a whole page."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            if request.htmx:  # a fragment must not become a login page: reload to it
                login = reverse("login")
                return HttpResponseClientRedirect(f"{login}?{urlencode({'next': request.path})}")
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return wrapper


def tenant_view(view):
    """Login required; the view receives the request's tenant after the request."""

    @login_view
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            tenant = tenant_for_request(request)
        except NoTenantError:
            # A tenant chosen earlier that the user has since left: forget it, use another.
            if request.session.pop(SESSION_TENANT_KEY, None) is not None:
                return wrapper(request, *args, **kwargs)
            return render(request, "no_tenant.html", status=403)
        return view(request, tenant, *args, **kwargs)

    return wrapper


def _ingestion(tenant, ingestion_id: str):
    try:
        return ingestion_get(tenant=tenant, ingestion_id=ingestion_id)
    except IngestionNotFoundError:
        # Another tenant's ingestion looks exactly like one that does not exist.
        raise Http404("No such ingestion.") from None


def _fragment(request) -> str | None:
    return request.htmx.target if request.htmx else None


def _filter_query(request) -> str:
    """The request's filters as a query string, for pagination links to keep them."""
    return urlencode({key: value for key, value in request.GET.items() if key != "page" and value})


def _changed(response):
    return trigger_client_event(response, CHANGED_EVENT, after="settle")


def render_in_place(request, template: str, context: dict, *, status: int = 200):
    """Render; a refusal (4xx) is marked with FRAGMENT_HEADER, which console.js swaps in
    place like a success (htmx swaps only 2xx on its own)."""
    response = render(request, template, context, status=status)
    if status >= 400:
        response[FRAGMENT_HEADER] = "error"
    return response


def _panel(request, context: dict, *, status: int = 200):
    """The operation panel: a fragment for HTMX, inside its own page otherwise."""
    template = "partials/operation-panel.html" if request.htmx else "operation.html"
    response = render(request, template, context, status=status)
    if request.htmx and status >= 400:
        response[FRAGMENT_HEADER] = "error"
        # Wherever the request came from (a cancel button in the run table...), a refusal
        # is shown in the operation panel.
        retarget(response, "#operation-panel")
        reswap(response, "innerHTML")
    return response


def _refusal(request, exc: AutoloaderError, context: dict):
    """A domain error as a message that says what happened and what to do next."""
    code = exc.error_code
    error = {
        "code": code,
        "title": ERROR_TITLES.get(code, "The operation was refused"),
        "detail": exc.detail,
        "next_step": NEXT_STEPS.get(code) or exc.help,
        "current_run_id": exc.extra.get("current_run_id"),
        "current_operation_id": exc.extra.get("current_operation_id"),
        "retry_after": exc.extra.get("retry_after"),
    }
    return _panel(request, {**context, "error": error}, status=exc.status_code)


def _result(request, tenant, operation: RefreshOperation):
    """An executed or resumed operation: its steps and outcome, or its page without HTMX."""
    if not request.htmx:
        return redirect("operation-detail", operation_id=operation.public_id)
    context = _operation_context(request, tenant, operation)
    return _changed(render(request, "partials/operation-panel.html", context))


def _operation_context(request, tenant, operation: RefreshOperation) -> dict:
    """An operation's whole story: its record, run, decision and undo, and what to offer."""
    operation = operation_get(tenant=tenant, operation_id=operation.public_id)  # with steps
    offers = operation_offers(operation=operation, actor=request.user)
    return {
        "tenant": tenant,
        "ingestion": operation.ingestion,
        "action": spec_of(operation.kind),
        "operation": operation,
        "run": operation.run,
        "steps": list(operation.steps.all()),
        "result": operation_payload(operation),
        "live": not offers.settled,
        "resumable": offers.resume,
        "awaiting_decision": operation.status == OperationStatus.AWAITING_DECISION,
        "may_change": offers.may_change,
        "undo_window": offers.undo,
        "undo_later": offers.undo_later,
    }


def _operation(tenant, operation_id: str) -> RefreshOperation:
    try:
        return operation_get(tenant=tenant, operation_id=operation_id)
    except OperationNotFoundError:
        raise Http404("No such operation.") from None


def _confirmed(request, *, table_name: str, context: dict):
    """The typed-name confirmation: (form, None) when the name matches exactly, else
    (None, the refusal to answer with); nothing has run either way."""
    form = ConfirmOperationForm(request.POST, table_name=table_name)
    if form.is_valid():
        return form, None
    error = {
        "code": "NAME_MISMATCH",
        "title": ERROR_TITLES["NAME_MISMATCH"],
        "detail": " ".join(form.errors.get("typed_name", ["The form is invalid."])),
        "next_step": NEXT_STEPS["NAME_MISMATCH"],
    }
    return None, _panel(request, {**context, "error": error}, status=400)
