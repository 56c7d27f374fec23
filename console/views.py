"""Console pages and their HTMX fragments.

Views parse the request, call the services the REST API calls (`refresh.services`,
`ingestions.runs`) and render; no rule is implemented here twice. A page and its fragments
share one view: an HTMX request names the fragment it wants by its target's DOM id
(`HX-Target: run-table` renders `partials/run-table.html`), a plain request gets the page,
so every link and form also works without JavaScript.

This module holds the pages (ingestions, an ingestion's detail, table and history, runs,
the audit); one module per resource beside it: `operations` (previews, confirmations and
what follows), `ingestion_changes` (create, edit, protect, delete), `failed_files`,
`schedules`, `batches`, `webhooks`, `tokens`; `plumbing` holds what they share (tenant
views, fragments, refusals).
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated

from ingestions import quarantine, runs
from ingestions.errors import AutoloaderError, RunNotFoundError
from ingestions.maintenance import MAINTAINED_ENGINES, maintenance_list, snapshot_retention
from ingestions.models import RunTrigger
from ingestions.selectors import (
    TABLE_SAMPLE_ROWS,
    history_page,
    processed_file_summary,
    run_get,
    run_list,
    table_overview,
    table_state,
)
from ingestions.tenancy import SESSION_TENANT_KEY
from ingestions.verify_jobs import verify_job_list
from refresh.offers import ingestion_offers, operation_offers
from refresh.selectors import operation_list, operations_behind_table
from refresh.specs import SELECTIVE_REFRESH
from refresh.sync import operation_as_of_run

from .failed_files import failed_files_context
from .forms import AuditFilterForm, HistorySearchForm, IngestionFilterForm, TenantSwitchForm
from .plumbing import _changed, _filter_query, _fragment, _ingestion, _panel, _refusal, tenant_view
from .selectors import audit_entries_named, audit_entry_list, ingestion_rows, ingestion_search

# Fired by the run table's answers while a run is active.
PROGRESS_EVENT = "run-progress"
LIST_PAGE_SIZE = 50
CHART_RUNS = 30
RUN_TABLE_ROWS = 15
OPERATIONS_SHOWN = 10
AUDIT_TRAIL_SHOWN = 15
MAINTENANCE_SHOWN = 8
AUDIT_PAGE_SIZE = 50


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
        context["selective_refused"] = SELECTIVE_REFRESH not in context["actions"]
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
        "overview": operations_behind_table(
            ingestion=ingestion, overview=table_overview(ingestion=ingestion)
        ),
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
        **failed_files_context(request, ingestion),
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
        context["last_verify"] = verify_job_list(ingestion=ingestion).first()
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
        context["audit_entries"] = audit_entries_named(
            audit_entry_list(tenant=tenant, ingestion=ingestion)[:AUDIT_TRAIL_SHOWN],
            tenant=tenant,
            ingestion=ingestion,
        )
    return context


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
    fragment = _fragment(request)
    if fragment == "run-banner":
        # The "Run … queued" banner follows its run; the answer that finds it ended tells
        # the run table and the table and history cards to reload, so they settle together.
        response = render(request, "partials/run-banner.html", context)
        return response if run.is_active else _changed(response)
    template = "partials/run-summary.html" if fragment == "run-summary" else "run_detail.html"
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


@require_GET
@tenant_view
def audit(request, tenant):
    form = AuditFilterForm(request.GET)
    filters = form.filters()
    page = Paginator(audit_entry_list(tenant=tenant, **filters), AUDIT_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    page.object_list = audit_entries_named(page.object_list, tenant=tenant)
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
