"""Console pages of batch refresh: preview several ingestions, confirm by typing how many
tables, then follow the batch until every table is published (or none is)."""

from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from ingestions.errors import AutoloaderError
from refresh.batches import batch_execute, batch_get, batch_operations, batch_preview
from refresh.errors import BatchNotFoundError
from refresh.models import BatchStatus
from refresh.presenters import batch_payload

from .forms import BatchConfirmForm, BatchForm
from .plumbing import tenant_view


@require_http_methods(["GET", "POST"])
@tenant_view
def batch_new(request, tenant):
    """GET: the combined preview of the chosen ingestions. POST: execute it, confirmed."""
    data = request.POST if request.method == "POST" else request.GET
    ingestion_ids = data.getlist("ingestion_ids")
    form_class = BatchConfirmForm if request.method == "POST" else BatchForm
    form = form_class(data, ingestion_ids=ingestion_ids)
    if not form.is_valid() and (request.method == "GET" or "typed_count" not in form.errors):
        return render(
            request,
            "batch_new.html",
            {"tenant": tenant, "error": _form_error(form)},
            status=400,
        )
    kind = form.cleaned_data["operation"]
    context = {"tenant": tenant, "kind": kind, "ingestion_ids": ingestion_ids}
    if request.method == "POST" and form.is_valid():
        try:
            batch = batch_execute(
                tenant=tenant,
                ingestion_ids=ingestion_ids,
                kind=kind,
                actor=request.user,
                confirm=True,
                plan_id=form.cleaned_data["plan_id"] or None,
            )
        except AutoloaderError as exc:
            context["error"] = exc.detail
            status = exc.status_code
        else:
            return redirect("batch-detail", batch_id=batch.public_id)
    else:
        status = 200 if request.method == "GET" else 400
        if request.method == "POST":
            context["error"] = " ".join(form.errors["typed_count"])
    try:
        batch, plans = batch_preview(
            tenant=tenant, ingestion_ids=ingestion_ids, kind=kind, actor=request.user
        )
    except AutoloaderError as exc:
        return render(request, "batch_new.html", {**context, "error": exc.detail}, status=404)
    preview = batch_payload(batch, {}, plans=plans)
    context.update(
        preview=preview,
        rows=list(zip(plans, preview["members"], strict=True)),
        quota=preview.get("quota", {}).get(kind),
    )
    return render(request, "batch_new.html", context, status=status)


@require_GET
@tenant_view
def batch_detail(request, tenant, batch_id: str):
    try:
        batch = batch_get(tenant=tenant, batch_id=batch_id)
    except BatchNotFoundError:
        raise Http404("No such batch refresh.") from None
    context = {
        "tenant": tenant,
        "batch": batch,
        "payload": batch_payload(batch, batch_operations(batch)),
        "live": batch.status in (BatchStatus.LOADING, BatchStatus.PUBLISHING),
    }
    template = "partials/batch-members.html" if request.htmx else "batch_detail.html"
    return render(request, template, context)


def _form_error(form) -> str:
    messages = [error for errors in form.errors.values() for error in errors]
    return " ".join(messages) or "Choose at least one ingestion and an operation."
