"""Console views of refresh operations: the preview and confirmation of each operation on
an ingestion, an operation's page, resume, publish or discard, and undo."""

from django.http import Http404
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ingestions.errors import AutoloaderError
from refresh.models import RefreshOperation
from refresh.presenters import preview_payload
from refresh.preview import refresh_preview
from refresh.services import refresh_execute, refresh_resume
from refresh.specs import SPEC_BY_SLUG, OperationSpec, spec_of
from refresh.sync import operation_as_of_run, refresh_decide
from refresh.undo import refresh_undo, undo_preview

from .plumbing import (
    _changed,
    _confirmed,
    _fragment,
    _ingestion,
    _operation,
    _operation_context,
    _panel,
    _refusal,
    _result,
    tenant_view,
)

OPERATION_FRAGMENTS = {
    "operation-result": "partials/operation/_result.html",
    "operation-panel": "partials/operation-panel.html",
}


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
