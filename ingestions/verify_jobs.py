"""Verification as a job of the worker (issue 24): start one, follow its progress, read its
report. The synchronous `verify.ingestion_verify` computes the same report in the request.

A job lists the source, reads the history in chunks and scans the table's `_source_file`
one data file at a time; each step's progress (stage, done, total) and a heartbeat are
written to its row as it goes, so any web process can show a live bar. At most one job is
queued or running per ingestion (a conditional unique constraint): a second start gets the
running job back. A job whose worker died (stale heartbeat) is queued again by the worker's
recovery pass, up to VERIFY_ATTEMPTS times; it changes nothing, so starting over is safe.
"""

import logging
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from .engines import load_engine
from .errors import AutoloaderError, VerifyJobNotFoundError
from .models import Ingestion, VerifyJob, VerifyStage, VerifyStatus
from .ratelimits import preview_rate, rate_give_back
from .verify import LISTING, source_listing, verification_compute, verify_authorize

logger = logging.getLogger(__name__)

START_ATTEMPTS = 3
VERIFY_ATTEMPTS = 3
# How often a job writes its progress at most (the last unit of a stage is always written).
PROGRESS_INTERVAL_SECONDS = 0.5
# How often the heartbeat is written while one long call (the listing) runs.
HEARTBEAT_SECONDS = 1.0
RETRY_HELP = (
    'Start it again: POST /api/v1/ingestions/{id}/verify {"async": true}, or Verify against '
    "the source on the ingestion's table card."
)


def verify_job_start(*, ingestion: Ingestion, actor) -> tuple[VerifyJob, bool]:
    """Queue a verification of `ingestion` for the worker, or join the one under way.

    Returns:
        (the job, whether this call created it). Joining costs no rate slot.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        RateLimitedError: the actor's or the tenant's previews are used up (a new job counts
            once, like a synchronous verify).
    """
    from .tasks import execute_verify_job

    verify_authorize(actor=actor, ingestion=ingestion)
    for attempt in range(1, START_ATTEMPTS + 1):
        active = verify_job_active(ingestion=ingestion)
        if active is not None:
            return active, False
        taken = preview_rate(tenant=ingestion.tenant, actor=actor)
        try:
            with transaction.atomic():  # the job and its task commit together
                job = VerifyJob.objects.create(
                    ingestion=ingestion,
                    requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                )
                job.task_id = str(execute_verify_job.enqueue(job.public_id).id)
                job.save(update_fields=["task_id"])
        except IntegrityError:
            # Another request inserted its job between the look up and the insert: join it.
            for key in taken:
                rate_give_back(key)
            if attempt == START_ATTEMPTS:
                raise
            continue
        except BaseException:
            for key in taken:  # nothing was queued: the slot is not spent
                rate_give_back(key)
            raise
        logger.info("verification %s queued for %s", job.public_id, ingestion.public_id)
        return job, True
    raise AssertionError("unreachable")  # pragma: no cover


def verify_job_active(*, ingestion: Ingestion) -> VerifyJob | None:
    return (
        VerifyJob.objects.filter(
            ingestion=ingestion, status__in=[VerifyStatus.QUEUED, VerifyStatus.RUNNING]
        )
        .select_related("ingestion")
        .first()
    )


def verify_job_get(*, ingestion: Ingestion, job_id: str) -> VerifyJob:
    """One job of `ingestion` (already scoped to the caller's tenant by its caller).

    Raises:
        VerifyJobNotFoundError: no such job for this ingestion.
    """
    try:
        return VerifyJob.objects.select_related("ingestion", "requested_by").get(
            ingestion=ingestion, public_id=job_id
        )
    except VerifyJob.DoesNotExist:
        raise VerifyJobNotFoundError() from None


def verify_job_list(*, ingestion: Ingestion):
    """The ingestion's jobs, newest first."""
    return (
        VerifyJob.objects.filter(ingestion=ingestion)
        .select_related("ingestion")
        .order_by("-created_at", "-id")
    )


class _Progress:
    """Writes a running job's stage, units and heartbeat, no more often than every
    PROGRESS_INTERVAL_SECONDS (a stage's first and last units always); only while this
    worker still holds the job."""

    def __init__(self, job: VerifyJob, worker_id: str):
        self.job_pk = job.pk
        self.worker_id = worker_id
        self.stage = ""
        self.written_at = 0.0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        edge = stage != self.stage or done == 0 or (total is not None and done >= total)
        if not edge and now - self.written_at < PROGRESS_INTERVAL_SECONDS:
            return
        self.stage, self.written_at = stage, now
        self._write(stage=stage, done=done, total=total)

    def beat(self) -> None:
        self._write()

    def _write(self, **fields) -> None:
        held = VerifyJob.objects.filter(
            pk=self.job_pk, status=VerifyStatus.RUNNING, worker_id=self.worker_id
        ).update(heartbeat_at=timezone.now(), **fields)
        if not held:
            raise JobTakenOver()


class JobTakenOver(Exception):
    """Another worker took the job over (this one was presumed dead): stop, record nothing."""


def verify_job_execute(*, job_id: str, engine=None) -> VerifyJob | None:
    """Run one queued job in this process; None when there was nothing to claim.

    A domain error (the source cannot be listed, the engine failed) is recorded on the job
    with its error code and how to retry; so is any other exception, which is raised again
    for the worker's log.
    """
    worker_id = uuid.uuid4().hex
    now = timezone.now()
    claimed = VerifyJob.objects.filter(public_id=job_id, status=VerifyStatus.QUEUED).update(
        status=VerifyStatus.RUNNING,
        worker_id=worker_id,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    job = VerifyJob.objects.select_related("ingestion__tenant").get(public_id=job_id)
    ingestion = job.ingestion
    progress = _Progress(job, worker_id)
    try:
        progress(LISTING, 0, None)
        listing = _beating(progress, lambda: source_listing(ingestion=ingestion))
        verification = verification_compute(
            ingestion=ingestion,
            engine=engine or load_engine(ingestion.engine),
            listing=listing,
            report=progress,
        )
    except JobTakenOver:
        logger.warning("verification %s was taken over by another worker", job_id)
        return None
    except AutoloaderError as exc:
        _finish(job, worker_id, error=exc.detail, error_code=exc.error_code)
    except Exception as exc:
        _finish(job, worker_id, error=f"{type(exc).__name__}: {exc}", error_code="INTERNAL_ERROR")
        raise
    else:
        _finish(job, worker_id, report=verification.as_response())
    job.refresh_from_db()
    return job


def _finish(job: VerifyJob, worker_id: str, *, report=None, error="", error_code="") -> None:
    VerifyJob.objects.filter(pk=job.pk, status=VerifyStatus.RUNNING, worker_id=worker_id).update(
        status=VerifyStatus.FAILED if error_code else VerifyStatus.SUCCESS,
        stage=VerifyStage.DONE,
        report=report,
        error=error,
        error_code=error_code,
        finished_at=timezone.now(),
        heartbeat_at=timezone.now(),
    )
    logger.info("verification %s ended %s", job.public_id, error_code or "SUCCESS")


def _beating(progress: _Progress, call):
    """`call()` in a thread while this one writes the job's heartbeat: one long call (a
    listing of a million objects) must not make a live job look dead."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the caller's thread as it is
            outcome["error"] = exc
        finally:
            connection.close()  # the thread's own (opening the source reads the locations)

    thread = threading.Thread(target=target, name="verify-listing", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(HEARTBEAT_SECONDS)
        if thread.is_alive():
            progress.beat()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def verify_jobs_recover_stale() -> list[str]:
    """The worker's recovery pass: a running job whose heartbeat is older than
    AUTOLOADER_RUN_STALE_SECONDS lost its worker. It goes back to the queue with a fresh
    task (its worker id cleared, so a worker that was only slow stops at its next write), or
    fails after VERIFY_ATTEMPTS attempts with how to retry. A queued job whose task is gone
    gets a fresh task."""
    from django_tasks_db.models import DBTaskResult

    from .tasks import execute_verify_job

    stale_before = timezone.now() - timedelta(seconds=settings.AUTOLOADER_RUN_STALE_SECONDS)
    recovered: list[str] = []
    stale = VerifyJob.objects.filter(status=VerifyStatus.RUNNING, heartbeat_at__lt=stale_before)
    for job in stale:
        with transaction.atomic():
            same = VerifyJob.objects.filter(
                pk=job.pk, status=VerifyStatus.RUNNING, heartbeat_at__lt=stale_before
            )
            if job.attempts >= VERIFY_ATTEMPTS:
                same.update(
                    status=VerifyStatus.FAILED,
                    stage=VerifyStage.DONE,
                    error=f"The worker stopped during the verification {job.attempts} times.",
                    error_code="WORKER_LOST",
                    finished_at=timezone.now(),
                    worker_id="",
                )
            elif same.update(status=VerifyStatus.QUEUED, stage=VerifyStage.QUEUED, worker_id=""):
                task = execute_verify_job.enqueue(job.public_id)
                VerifyJob.objects.filter(pk=job.pk).update(task_id=str(task.id))
        recovered.append(job.public_id)
    for job in VerifyJob.objects.filter(status=VerifyStatus.QUEUED, created_at__lt=stale_before):
        if not DBTaskResult.objects.filter(id=job.task_id, status="READY").exists():
            with transaction.atomic():
                task = execute_verify_job.enqueue(job.public_id)
                VerifyJob.objects.filter(pk=job.pk, status=VerifyStatus.QUEUED).update(
                    task_id=str(task.id)
                )
            recovered.append(job.public_id)
    return recovered
