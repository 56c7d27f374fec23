"""Console view of a table's verification against its source and history (issue 24)."""

from django.shortcuts import render
from django.views.decorators.http import require_POST

from ingestions.errors import AutoloaderError
from ingestions.verify import ingestion_verify

from .plumbing import _ingestion, tenant_view

CATEGORY_TITLES = {
    "missing_from_table": "In the history, no rows in the table",
    "rows_differ": "Rows in the table differ from the history",
    "unknown": "Rows whose source file the history does not know",
    "changed": "Changed in the source since they loaded",
    "gone": "Gone from the source",
    "never_loaded": "In the source, never loaded",
}


@require_POST
@tenant_view
def verify(request, tenant, ingestion_id: str):
    """Verify the table (a POST: it lists the source and counts against the preview rate)."""
    ingestion = _ingestion(tenant, ingestion_id)
    context, status = {"tenant": tenant, "ingestion": ingestion}, 200
    try:
        report = ingestion_verify(ingestion=ingestion, actor=request.user)
    except AutoloaderError as exc:
        context["error"] = {"code": exc.error_code, "detail": exc.detail, "help": exc.help}
        status = exc.status_code
    else:
        context["report"] = report
        context["sections"] = [
            (name, title, report.counts[name], report.files[name])
            for name, title in CATEGORY_TITLES.items()
        ]
    return render(request, "verify.html", context, status=status)
