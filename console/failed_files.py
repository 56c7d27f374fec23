"""Console views of an ingestion's failed files: quarantine, release, retry."""

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from ingestions import quarantine, runs
from ingestions.errors import AutoloaderError, FailedFileNotFoundError

from .plumbing import _changed, _ingestion, render_in_place, tenant_view


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
    context = {**failed_files_context(request, ingestion), "error": error, "done": done}
    status = error["status"] if error else 200
    return _changed(render_in_place(request, "partials/failed-files.html", context, status=status))


FAILED_FILE_ACTIONS = {
    "quarantine": quarantine.failure_quarantine,
    "release": quarantine.failure_release,
    "retry": quarantine.failure_retry,
}
FAILED_FILES_SHOWN = 100


def failed_files_context(request, ingestion) -> dict:
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
