"""Console view of a table's verification against its source and history (issue 24): the
Verify button starts a job the worker runs (`ingestions.verify_jobs`); its page shows a
progress bar that follows the job and swaps in the report when it ends."""

from datetime import timedelta

from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from ingestions.errors import AutoloaderError, VerifyJobNotFoundError
from ingestions.models import VerifyStage, VerifyStatus
from ingestions.verify_jobs import verify_job_get, verify_job_start

from .plumbing import _fragment, _ingestion, tenant_view

CATEGORY_TITLES = {
    "missing_from_table": "In the history, no rows in the table",
    "rows_differ": "Rows in the table differ from the history",
    "unknown": "Rows whose source file the history does not know",
    "changed": "Changed in the source since they loaded",
    "gone": "Gone from the source",
    "never_loaded": "In the source, never loaded",
}
# A job queued this long with no worker taking it: the page asks whether one is running.
WORKER_HINT_AFTER_SECONDS = 10
# Categories that make the table and the history disagree (the others: the source moved on).
DISAGREEING = ("missing_from_table", "rows_differ", "unknown")


@require_POST
@tenant_view
def verify(request, tenant, ingestion_id: str):
    """Start a verification in the worker (or join the one under way) and follow it."""
    ingestion = _ingestion(tenant, ingestion_id)
    try:
        job, _created = verify_job_start(ingestion=ingestion, actor=request.user)
    except AutoloaderError as exc:
        context = {
            "tenant": tenant,
            "ingestion": ingestion,
            "error": {"code": exc.error_code, "detail": exc.detail, "help": exc.help},
        }
        return render(request, "verify.html", context, status=exc.status_code)
    return redirect("verify-job", ingestion_id=ingestion.public_id, job_id=job.public_id)


@require_GET
@tenant_view
def verify_job(request, tenant, ingestion_id: str, job_id: str):
    """A verification: its progress while the worker runs it, then its report (the
    `verify-job` fragment polls itself until then). Reads only."""
    ingestion = _ingestion(tenant, ingestion_id)
    try:
        job = verify_job_get(ingestion=ingestion, job_id=job_id)
    except VerifyJobNotFoundError:
        raise Http404("No such verification.") from None
    stages = [(stage.value, stage.label) for stage in VerifyStage if stage != VerifyStage.DONE]
    order = [stage for stage, _label in stages]
    context = {
        "tenant": tenant,
        "ingestion": ingestion,
        "job": job,
        "stages": stages,
        "passed": order[: order.index(job.stage)] if job.stage in order else order,
        "no_worker_yet": job.status == VerifyStatus.QUEUED
        and timezone.now() - job.created_at > timedelta(seconds=WORKER_HINT_AFTER_SECONDS),
    }
    if job.report:
        context["sections"] = [
            (name, title, job.report["counts"][name], job.report["files"][name])
            for name, title in CATEGORY_TITLES.items()
        ]
        context["disagreeing"] = DISAGREEING
    if _fragment(request) == "verify-job":
        return render(request, "partials/verify-job.html", context)
    return render(request, "verify.html", context)
