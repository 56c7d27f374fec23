"""Console pages and their HTMX fragments.

Views parse the request, call the services the REST API calls (`refresh.services`,
`ingestions.runs`) and render; no rule is implemented here twice. A page and its fragments
share one view: an HTMX request names the fragment it wants by its target's DOM id
(`HX-Target: run-table` renders `partials/run-table.html`), a plain request gets the page,
so every link and form also works without JavaScript.

Refusals (`AutoloaderError`) render as the `operation-panel` fragment with the HTTP status
the API gives the same error (the error's own `status_code`: 403, 409, 423, 429...). htmx
swaps only 2xx responses by default; `static/js/console.js` also swaps the error responses
that carry the `X-Console-Fragment` header, and only those, so an unexpected server error
never lands inside a panel.
"""

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated

from ingestions import quarantine, runs
from ingestions import services as ingestion_services
from ingestions.errors import (
    AutoloaderError,
    FailedFileNotFoundError,
    IngestionNotFoundError,
    PermissionDeniedError,
    RunNotFoundError,
)
from ingestions.maintenance import MAINTAINED_ENGINES, maintenance_list, snapshot_retention
from ingestions.models import RunTrigger
from ingestions.selectors import (
    TABLE_SAMPLE_ROWS,
    history_page,
    ingestion_get,
    processed_file_summary,
    run_get,
    run_list,
    table_overview,
    table_state,
)
from ingestions.sources.preview import source_check as check_source
from ingestions.tenancy import SESSION_TENANT_KEY, NoTenantError, tenant_for_request
from refresh.errors import OperationNotFoundError
from refresh.models import OperationStatus, RefreshOperation
from refresh.offers import ingestion_offers, operation_offers
from refresh.presenters import operation_payload, preview_payload
from refresh.selectors import operation_get, operation_list
from refresh.services import (
    operation_as_of_run,
    refresh_decide,
    refresh_execute,
    refresh_preview,
    refresh_resume,
)
from refresh.specs import SPEC_BY_SLUG, OperationSpec, spec_of
from refresh.undo import refresh_undo, undo_preview

from .forms import (
    AuditFilterForm,
    ConfirmOperationForm,
    HistorySearchForm,
    IngestionDeleteForm,
    IngestionFilterForm,
    IngestionForm,
    ProtectForm,
    SourceForm,
    TenantSwitchForm,
)
from .selectors import (
    audit_entry_list,
    ingestion_rows,
    ingestion_search,
)

# Fired (after the swap settles) whenever an ingestion's state changed: the run table, the
# table and history cards, the operations and the audit trail reload themselves on it.
CHANGED_EVENT = "ingestion-changed"
# Fired by the run table's answers while a run is active.
PROGRESS_EVENT = "run-progress"
FRAGMENT_HEADER = "X-Console-Fragment"

LIST_PAGE_SIZE = 50
CHART_RUNS = 30
RUN_TABLE_ROWS = 15
OPERATIONS_SHOWN = 10
AUDIT_TRAIL_SHOWN = 15
MAINTENANCE_SHOWN = 8
AUDIT_PAGE_SIZE = 50
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


# --- request plumbing ------------------------------------------------------------------


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


# --- pages -----------------------------------------------------------------------------


@require_GET
def home(request):
    return redirect("ingestion-list")


@require_GET
@tenant_view
def ingestion_list(request, tenant):
    form = IngestionFilterForm(request.GET)
    filters = form.filters()
    page = Paginator(ingestion_search(tenant=tenant, **filters), LIST_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {
        "tenant": tenant,
        "form": form,
        "page": page,
        "rows": ingestion_rows(page.object_list),
        "filtered": any(filters.values()),
        "filter_query": _filter_query(request),
        "can_create": request.user.has_perm("ingestions.add_ingestion", tenant),
        # Refreshing several together (`console.batches`); each member is checked again.
        "can_batch": request.user.has_perm("ingestions.fresh_start_ingestion", tenant),
    }
    fragment = _fragment(request) == "ingestion-table"
    template = "partials/ingestion-table.html" if fragment else "ingestion_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


DETAIL_FRAGMENTS = (
    "run-table",
    "run-chart",
    "table-card",
    "history-card",
    "operation-list",
    "maintenance-list",
    "audit-trail",
)


@require_GET
@tenant_view
def ingestion_detail(request, tenant, ingestion_id: str):
    ingestion = _ingestion(tenant, ingestion_id)
    fragment = _fragment(request)
    if fragment in DETAIL_FRAGMENTS:
        context = _detail_context(request, tenant, ingestion, parts={fragment})
        response = render(request, f"partials/{fragment}.html", context)
        if fragment == "run-table" and context["active_run"]:
            # Batches land while it runs: the table and history cards follow them.
            trigger_client_event(response, PROGRESS_EVENT, after="settle")
        elif fragment == "run-table" and request.GET.get("polling"):
            _changed(response)  # the run being followed has just ended: refresh the rest
    else:
        context = _detail_context(request, tenant, ingestion, parts=set(DETAIL_FRAGMENTS))
        context["actions"] = ingestion_offers(ingestion=ingestion, actor=request.user)
        context["can_run"] = runs.run_allowed(actor=request.user, ingestion=ingestion)
        context["can_change"] = request.user.has_perm("ingestions.change_ingestion", ingestion)
        context["can_delete"] = request.user.has_perm("ingestions.delete_ingestion", ingestion)
        response = render(request, "ingestion_detail.html", context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


@require_GET
@tenant_view
def ingestion_table(request, tenant, ingestion_id: str):
    """The destination table: schema, snapshots and a sample of rows, read from the engine."""
    ingestion = _ingestion(tenant, ingestion_id)
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "overview": table_overview(ingestion=ingestion),
        "sample_limit": TABLE_SAMPLE_ROWS,
    }
    return render(request, "ingestion_table.html", context)


@require_GET
@tenant_view
def ingestion_history(request, tenant, ingestion_id: str):
    """The processed-file history, in path order, searchable by the start of a path."""
    ingestion = _ingestion(tenant, ingestion_id)
    form = HistorySearchForm(request.GET)
    prefix, after = form.search()
    files, next_cursor = history_page(ingestion=ingestion, prefix=prefix, after=after)
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "form": form,
        "files": files,
        "prefix": prefix,
        "next_query": urlencode({"path": prefix, "after": next_cursor}) if next_cursor else "",
        "first_page": not after,
        **_failed_files_context(request, ingestion),
    }
    return render(request, "ingestion_history.html", context)


def _detail_context(request, tenant, ingestion, *, parts: set[str]) -> dict:
    """The ingestion page's context, only the parts asked for (a fragment needs one)."""
    context = {"tenant": tenant, "ingestion": ingestion}
    if parts & {"run-table", "run-chart"}:
        latest = list(run_list(ingestion=ingestion).select_related("requested_by")[:CHART_RUNS])
        context.update(
            runs=latest[:RUN_TABLE_ROWS],
            chart_runs=latest,
            runs_total=len(latest),
            active_run=next((run for run in latest if run.is_active), None),
            can_cancel=runs.run_allowed(actor=request.user, ingestion=ingestion),
        )
    if "table-card" in parts:
        context["table"] = table_state(ingestion=ingestion)
    if "history-card" in parts:
        context["history"] = processed_file_summary(ingestion=ingestion)
        context["failure_counts"] = quarantine.failure_counts(ingestion=ingestion)
    if "operation-list" in parts:
        # Each shown as its run's outcome made it (cheap: only one that follows a run reads
        # it); a page writes nothing, the worker records the outcome.
        operations = [
            operation_as_of_run(operation=operation)
            for operation in operation_list(ingestion=ingestion)[:OPERATIONS_SHOWN]
        ]
        context["operations"] = operations
        offers = {  # newest first: every one but the first was superseded
            operation.public_id: operation_offers(
                operation=operation, actor=request.user, superseded=index > 0
            )
            for index, operation in enumerate(operations)
        }
        context["undo_window_ids"] = {key for key, offer in offers.items() if offer.undo}
        context["resumable_operation_id"] = next(
            (key for key, offer in offers.items() if offer.resume), None
        )
    if "maintenance-list" in parts:
        context["maintenance"] = list(maintenance_list(ingestion=ingestion)[:MAINTENANCE_SHOWN])
        context["snapshot_retention_hours"] = snapshot_retention(ingestion).total_seconds() / 3600
        context["engine_maintains"] = ingestion.engine in MAINTAINED_ENGINES
    if "audit-trail" in parts:
        context["audit_entries"] = list(
            audit_entry_list(tenant=tenant, ingestion=ingestion)[:AUDIT_TRAIL_SHOWN]
        )
    return context


@require_http_methods(["GET", "POST"])
@tenant_view
def ingestion_operation(request, tenant, ingestion_id: str, action: str):
    """GET: the dry-run preview of a destructive action. POST: execute it, once confirmed."""
    action = SPEC_BY_SLUG.get(action)
    if action is None:
        raise Http404("No such action.")
    ingestion = _ingestion(tenant, ingestion_id)
    context = {"tenant": tenant, "ingestion": ingestion, "action": action}
    if request.method == "POST":
        return _operation_execute(request, tenant, ingestion, action, context)
    try:
        plan = refresh_preview(ingestion=ingestion, kind=action.kind, actor=request.user)
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    context.update(
        plan=plan,
        preview=preview_payload(plan),
        can_execute=plan.allowed,
    )
    return _panel(request, context)


def _operation_execute(request, tenant, ingestion, action: OperationSpec, context: dict):
    form, refusal = _confirmed(request, table_name=ingestion.destination_table, context=context)
    if refusal:
        return refusal
    try:
        operation = refresh_execute(
            ingestion=ingestion,
            kind=action.kind,
            actor=request.user,
            confirm=True,
            plan_id=form.cleaned_data["plan_id"] or None,
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    return _result(request, tenant, operation)


@require_POST
@tenant_view
def ingestion_run(request, tenant, ingestion_id: str):
    """Run now: queue a run of the ingestion's new files."""
    ingestion = _ingestion(tenant, ingestion_id)
    context = {"tenant": tenant, "ingestion": ingestion}
    try:
        run = runs.run_request(ingestion=ingestion, actor=request.user, trigger=RunTrigger.MANUAL)
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    if not request.htmx:
        messages.success(request, f"Run {run.public_id} queued.")
        return redirect("ingestion-detail", ingestion_id=ingestion.public_id)
    return _changed(_panel(request, {**context, "queued_run": run}))


@require_GET
@tenant_view
def run_detail(request, tenant, run_id: str):
    try:
        run = run_get(tenant=tenant, run_id=run_id)
    except RunNotFoundError:
        raise Http404("No such run.") from None
    context = {
        "tenant": tenant,
        "ingestion": run.ingestion,
        "run": run,
        "can_cancel": runs.run_allowed(actor=request.user, ingestion=run.ingestion),
    }
    template = (
        "partials/run-summary.html" if _fragment(request) == "run-summary" else "run_detail.html"
    )
    return render(request, template, context)


@require_POST
@tenant_view
def run_cancel(request, tenant, run_id: str):
    try:
        run = run_get(tenant=tenant, run_id=run_id)
    except RunNotFoundError:
        raise Http404("No such run.") from None
    ingestion = run.ingestion
    try:
        runs.run_cancel(run=run, actor=request.user)
    except AutoloaderError as exc:
        return _refusal(request, exc, {"tenant": tenant, "ingestion": ingestion})
    if not request.htmx:
        messages.success(request, f"Cancellation of run {run.public_id} requested.")
        return redirect("ingestion-detail", ingestion_id=ingestion.public_id)
    context = _detail_context(request, tenant, ingestion, parts={"run-table"})
    return _changed(render(request, "partials/run-table.html", context))


OPERATION_FRAGMENTS = {
    "operation-result": "partials/operation/_result.html",
    "operation-panel": "partials/operation-panel.html",
}


@require_GET
@tenant_view
def operation_detail(request, tenant, operation_id: str):
    """The operation's story. Its `operation-result` fragment polls while the operation
    follows its run: each poll shows its status as the run's outcome makes it (reading
    only; the worker records it)."""
    operation = operation_as_of_run(operation=_operation(tenant, operation_id))
    context = _operation_context(request, tenant, operation)
    template = OPERATION_FRAGMENTS.get(_fragment(request), "operation.html")
    response = render(request, template, context)
    if request.GET.get("polling") and not context["live"]:
        _changed(response)  # it has just ended: the ingestion page's cards follow
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _acting_on(tenant, operation: RefreshOperation) -> dict:
    """The context of an action on an operation, for its refusals ("Back to the operation")."""
    return {
        "tenant": tenant,
        "ingestion": operation.ingestion,
        "action": spec_of(operation.kind),
        "operation": operation,
    }


@require_POST
@tenant_view
def operation_resume(request, tenant, operation_id: str):
    """Finish the remaining steps of an operation that stopped on a failure."""
    operation = _operation(tenant, operation_id)
    context = _acting_on(tenant, operation)
    try:
        operation = refresh_resume(operation=operation, actor=request.user)
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    return _result(request, tenant, operation)


@require_POST
@tenant_view
def operation_publish(request, tenant, operation_id: str):
    """Publish what a zero-downtime refresh loaded although some files failed."""
    return _operation_decide(request, tenant, operation_id, publish=True)


@require_POST
@tenant_view
def operation_discard(request, tenant, operation_id: str):
    """Discard what a zero-downtime refresh loaded: the table stays as it was."""
    return _operation_decide(request, tenant, operation_id, publish=False)


def _operation_decide(request, tenant, operation_id: str, *, publish: bool):
    operation = _operation(tenant, operation_id)
    context = _acting_on(tenant, operation)
    _, refusal = _confirmed(request, table_name=operation.table_name, context=context)
    if refusal:
        return refusal
    try:
        operation = refresh_decide(
            operation=operation, actor=request.user, publish=publish, confirm=True
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    return _result(request, tenant, operation)


@require_http_methods(["GET", "POST"])
@tenant_view
def operation_undo(request, tenant, operation_id: str):
    """GET: what undoing the operation brings back and what it loses. POST: undo it, once
    confirmed by the table's name."""
    operation = _operation(tenant, operation_id)
    context = _acting_on(tenant, operation)
    if request.method == "POST":
        _, refusal = _confirmed(request, table_name=operation.table_name, context=context)
        if refusal:
            return refusal
        try:
            operation = refresh_undo(operation=operation, actor=request.user, confirm=True)
        except AutoloaderError as exc:
            return _refusal(request, exc, context)
        return _result(request, tenant, operation)
    try:
        undo = undo_preview(operation=operation, actor=request.user)
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    context.update(
        operation=undo.operation,
        undo=undo.as_response(),
        can_execute=undo.allowed,
    )
    return _panel(request, context)


@require_GET
@tenant_view
def audit(request, tenant):
    form = AuditFilterForm(request.GET)
    filters = form.filters()
    page = Paginator(audit_entry_list(tenant=tenant, **filters), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    context = {
        "tenant": tenant,
        "form": form,
        "page": page,
        "filtered": any(filters.values()),
        "filter_query": _filter_query(request),
    }
    template = "partials/audit-table.html" if _fragment(request) == "audit-table" else "audit.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


@require_POST
@tenant_view
def tenant_switch(request, tenant):
    """Act for another of the user's tenants from now on (kept in the session)."""
    form = TenantSwitchForm(request.POST, user=request.user)
    if form.is_valid():
        request.session[SESSION_TENANT_KEY] = form.cleaned_data["tenant"]
        return redirect("ingestion-list")
    messages.error(request, "You are not a member of that tenant.")
    return redirect("ingestion-list")


class ApiDocsView(SpectacularSwaggerView):
    """The API's interactive docs (served locally); a visitor who is not logged in is sent
    to the login page and back, not answered with a bare 401."""

    def handle_exception(self, exc):
        if isinstance(exc, NotAuthenticated | AuthenticationFailed):
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)


# --- creating, changing and deleting an ingestion ---------------------------------------


def _require(request, permission: str, obj) -> None:
    """The permission the API's view requires for the same call (`TenantAPIView.require`)."""
    if not request.user.has_perm(f"ingestions.{permission}", obj):
        raise PermissionDeniedError(
            f"Your role does not allow this action ({permission.replace('_', ' ')})."
        )


def _form_page(request, tenant, form, *, ingestion=None, check=None, status: int = 200):
    """The create or edit page; `check`: a "Check source" answer to show in it."""
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "form": form,
        "check": check,
        "checking": check is not None,
        "can_replace_table": request.user.has_perm("ingestions.drop_table_ingestion", tenant),
    }
    return render(request, "ingestion_form.html", context, status=status)


@require_http_methods(["GET", "POST"])
@tenant_view
def ingestion_create(request, tenant):
    """GET: the form. POST: create the ingestion through the service the API calls."""
    try:
        _require(request, "add_ingestion", tenant)
    except AutoloaderError as exc:
        return _refusal(request, exc, {"tenant": tenant})
    if request.method == "GET":
        return _form_page(request, tenant, IngestionForm(tenant=tenant))
    form = IngestionForm(request.POST, tenant=tenant)
    if form.is_valid():
        try:
            ingestion = ingestion_services.ingestion_create(
                tenant=tenant, actor=request.user, **form.create_arguments()
            )
        except (ValidationError, AutoloaderError) as exc:
            form.add_service_error(exc)
        else:
            messages.success(request, f"Ingestion {ingestion.public_id} created.")
            return redirect("ingestion-detail", ingestion_id=ingestion.public_id)
    return _form_page(request, tenant, form, status=400)


@require_http_methods(["GET", "POST"])
@tenant_view
def ingestion_edit(request, tenant, ingestion_id: str):
    """GET: the form with the ingestion's values. POST: save what changed (audited)."""
    ingestion = _ingestion(tenant, ingestion_id)
    try:
        _require(request, "change_ingestion", ingestion)
    except AutoloaderError as exc:
        return _refusal(request, exc, {"tenant": tenant, "ingestion": ingestion})
    if request.method == "GET":
        form = IngestionForm(tenant=tenant, ingestion=ingestion)
        return _form_page(request, tenant, form, ingestion=ingestion)
    form = IngestionForm(request.POST, tenant=tenant, ingestion=ingestion)
    if form.is_valid():
        changes = form.changes()
        try:
            ingestion_services.ingestion_update(
                ingestion=ingestion, data=changes, actor=request.user
            )
        except (ValidationError, AutoloaderError) as exc:
            form.add_service_error(exc)
            ingestion = _ingestion(tenant, ingestion_id)  # as saved, not as refused
        else:
            changed = ", ".join(field.replace("_", " ") for field in changes)
            messages.success(request, f"Saved: {changed}." if changed else "Nothing changed.")
            return redirect("ingestion-detail", ingestion_id=ingestion.public_id)
    return _form_page(request, tenant, form, ingestion=ingestion, status=400)


@require_POST
@tenant_view
def source_check(request, tenant):
    """What the form's source matches and a sample of its first file, before anything is
    saved (HTMX: the `source-check` fragment; without JavaScript: the form's page)."""
    ingestion = None
    if request.POST.get("ingestion"):  # the edit form's check
        ingestion = _ingestion(tenant, request.POST["ingestion"])
    try:
        _require(request, "change_ingestion" if ingestion else "add_ingestion", ingestion or tenant)
    except AutoloaderError as exc:
        return _refusal(request, exc, {"tenant": tenant, "ingestion": ingestion})
    form = SourceForm(request.POST, tenant=tenant)
    check, status = {}, 200
    if not form.is_valid():
        check["form_errors"] = [
            (form.fields[name].label if name in form.fields else "", errors)
            for name, errors in form.errors.items()
        ]
        status = 400
    else:
        try:
            check["result"] = check_source(
                tenant=tenant,
                actor=request.user,
                uri=form.source_uri(),
                file_format=form.cleaned_data["source_format"],
                pattern=form.cleaned_data["source_pattern"],
                options=form.reader_options(),
            )
        except ValueError as exc:  # reader options: the form checked them one by one
            check["error"] = {"code": "VALIDATION_ERROR", "detail": str(exc)}
            status = 400
        except AutoloaderError as exc:
            check["error"] = {"code": exc.error_code, "detail": exc.detail, "help": exc.help}
            status = exc.status_code
    if request.htmx:
        response = render_in_place(
            request, "partials/source-check.html", {"check": check}, status=status
        )
        return response
    page_form = IngestionForm(request.POST, tenant=tenant, ingestion=ingestion)
    return _form_page(request, tenant, page_form, ingestion=ingestion, check=check, status=status)


@require_http_methods(["GET", "POST"])
@tenant_view
def ingestion_delete(request, tenant, ingestion_id: str):
    """GET: what deleting does to the table, the history and the runs. POST: delete, once
    confirmed by the destination table's name."""
    ingestion = _ingestion(tenant, ingestion_id)
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "history_files": ingestion.processed_files.count(),
        "run_count": ingestion.runs.count(),
        "can_drop_table": request.user.has_perm("ingestions.drop_table_ingestion", ingestion),
        "can_change": request.user.has_perm("ingestions.change_ingestion", ingestion),
        "options": IngestionDeleteForm(),
    }
    try:
        _require(request, "delete_ingestion", ingestion)
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    if request.method == "GET":
        return render(request, "ingestion_delete.html", context)
    _, refusal = _confirmed(request, table_name=ingestion.destination_table, context=context)
    if refusal:
        return refusal
    options = IngestionDeleteForm(request.POST)
    drop_table = options.is_valid() and options.cleaned_data["drop_table"]
    try:
        outcome = ingestion_services.ingestion_delete(
            ingestion=ingestion, actor=request.user, confirm=True, drop_table=drop_table
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, context)
    table = outcome["table"]
    if table["action"] == "dropped":
        fate = f"its table {table['name']} was dropped"
    else:
        fate = (
            f"its table {table['name']} is kept with its rows (a new ingestion on it can adopt "
            "or replace it)"
        )
    messages.success(request, f"Ingestion {outcome['id']} deleted with its history; {fate}.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("ingestion-list"))
    return redirect("ingestion-list")


@require_POST
@tenant_view
def ingestion_protect(request, tenant, ingestion_id: str):
    """Protect or unprotect, through the update the API makes (audited as a change)."""
    ingestion = _ingestion(tenant, ingestion_id)
    form = ProtectForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Say protected=true or protected=false.")
    protected = form.cleaned_data["protected"]
    try:
        ingestion_services.ingestion_update(
            ingestion=ingestion, data={"protected": protected}, actor=request.user
        )
    except AutoloaderError as exc:
        return _refusal(request, exc, {"tenant": tenant, "ingestion": ingestion})
    if protected:
        messages.success(request, "Protected: destructive operations are now refused.")
    else:
        messages.success(request, "Protection lifted: destructive operations are allowed again.")
    if request.htmx:
        return HttpResponseClientRedirect(reverse("ingestion-detail", args=[ingestion.public_id]))
    return redirect("ingestion-detail", ingestion_id=ingestion.public_id)


@require_POST
@tenant_view
def failed_file_action(request, tenant, ingestion_id: str, failure_id: int, action: str):
    """Quarantine, release or retry one failed file; answers with the failed-files card."""
    service = FAILED_FILE_ACTIONS.get(action)
    if service is None:
        raise Http404("No such action.")
    ingestion = _ingestion(tenant, ingestion_id)
    try:
        failure = quarantine.failure_get(ingestion=ingestion, failure_id=failure_id)
    except FailedFileNotFoundError:
        raise Http404("No such failed file.") from None
    error, done = None, ""
    try:
        result = service(failure=failure, actor=request.user)
    except AutoloaderError as exc:
        error = {
            "code": exc.error_code,
            "status": exc.status_code,
            "detail": exc.detail,
            "next_step": exc.help,
            "current_run_id": exc.extra.get("current_run_id"),
        }
    else:
        done = {
            "quarantine": f"{failure.path} is quarantined: runs and previews leave it out.",
            "release": f"{failure.path} is released: the next run tries it again.",
            "retry": f"{failure.path} is being retried in run {getattr(result, 'public_id', '')}.",
        }[action]
    if not request.htmx:
        if error:
            messages.error(request, error["detail"])
        else:
            messages.success(request, done)
        return redirect("ingestion-history", ingestion_id=ingestion.public_id)
    context = {**_failed_files_context(request, ingestion), "error": error, "done": done}
    status = error["status"] if error else 200
    return _changed(render_in_place(request, "partials/failed-files.html", context, status=status))


FAILED_FILE_ACTIONS = {
    "quarantine": quarantine.failure_quarantine,
    "release": quarantine.failure_release,
    "retry": quarantine.failure_retry,
}
FAILED_FILES_SHOWN = 100


def _failed_files_context(request, ingestion) -> dict:
    failures = list(quarantine.failure_list(ingestion=ingestion)[: FAILED_FILES_SHOWN + 1])
    more = len(failures) > FAILED_FILES_SHOWN
    if more:
        counts = quarantine.failure_counts(ingestion=ingestion)
    else:  # all of them are here: count them without asking again
        quarantined = sum(1 for failure in failures if failure.quarantined)
        counts = {"failing": len(failures) - quarantined, "quarantined": quarantined}
    return {
        "ingestion": ingestion,
        "failures": failures[:FAILED_FILES_SHOWN],
        "failure_counts": counts,
        "more_failures": more,
        "may_act": runs.run_allowed(actor=request.user, ingestion=ingestion),
        "quarantine_after": settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES,
    }
