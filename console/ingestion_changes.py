"""Console views that create, change, check the source of, protect and delete an ingestion
(the services authorize and validate; the views translate)."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from ingestions import services as ingestion_services
from ingestions.errors import AutoloaderError, PermissionDeniedError
from ingestions.sources.preview import source_check as check_source

from .forms import IngestionDeleteForm, IngestionForm, ProtectForm, SourceForm
from .plumbing import _confirmed, _ingestion, _refusal, render_in_place, tenant_view


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
