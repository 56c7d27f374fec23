"""Files that fail to load: their attempts and errors, and the quarantine that sets them aside.

A file that fails is recorded here with its error and the number of runs in a row that
failed it; it loads again on the next run, as before. A quarantined file, set aside by a
user (`failure_quarantine`) or by the worker once AUTOLOADER_QUARANTINE_AFTER_FAILURES runs
in a row failed it, is left out of every run and every refresh preview until it is
released (`failure_release`). A file that loads is forgotten here. Every quarantine and
release is audited.
"""

from contextlib import suppress

from auditlog.models import LogEntry
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import audit, hooks
from .errors import FailedFileNotFoundError, FailedFileStateError, PermissionDeniedError
from .models import FileFailure, Ingestion, Run

QUARANTINE_PERMISSION = "ingestions.run_ingestion"


def failure_list(*, ingestion: Ingestion, quarantined: bool | None = None) -> QuerySet:
    failures = FileFailure.objects.filter(ingestion=ingestion).select_related(
        "last_run", "quarantined_by"
    )
    if quarantined is not None:
        failures = failures.filter(quarantined_at__isnull=not quarantined)
    return failures.order_by("path")


def failure_get(*, ingestion: Ingestion, failure_id) -> FileFailure:
    try:
        return failure_list(ingestion=ingestion).get(pk=int(failure_id))
    except (FileFailure.DoesNotExist, TypeError, ValueError):
        raise FailedFileNotFoundError("No such failed file in this ingestion.") from None


def failure_counts(*, ingestion: Ingestion) -> dict[str, int]:
    failures = list(
        FileFailure.objects.filter(ingestion=ingestion).values_list("quarantined_at", flat=True)
    )
    quarantined = sum(1 for at in failures if at is not None)
    return {"failing": len(failures) - quarantined, "quarantined": quarantined}


def quarantined_paths(*, ingestion: Ingestion) -> set[str]:
    """The files runs and previews leave out (one query on a small table)."""
    return set(
        FileFailure.objects.filter(ingestion=ingestion, quarantined_at__isnull=False).values_list(
            "path", flat=True
        )
    )


def failures_record(*, run: Run, failures: list[dict]) -> list[str]:
    """Record the files `run` failed to load; returns those quarantined automatically.

    Each file's attempts count once per run (a resumed run that fails a file again does not
    count it twice). At AUTOLOADER_QUARANTINE_AFTER_FAILURES attempts (0: never) the file is
    quarantined, with an audit entry naming no user.
    """
    if not failures:
        return []
    limit = settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES
    now = timezone.now()
    ingestion = run.ingestion
    quarantined: list[str] = []
    with transaction.atomic():
        known = {
            failure.path: failure
            for failure in FileFailure.objects.select_for_update().filter(
                ingestion=ingestion, path__in=[item["path"] for item in failures]
            )
        }
        for item in failures:
            failure = known.get(item["path"])
            if failure is None:
                failure = FileFailure(
                    ingestion=ingestion, path=item["path"], attempts=0, first_failed_at=now
                )
            elif failure.last_run_id == run.pk:
                continue
            failure.attempts += 1
            failure.error = item.get("error", "")[:4000]
            failure.size_bytes = item.get("size_bytes", failure.size_bytes) or 0
            failure.last_failed_at = now
            failure.last_run = run
            if limit and failure.attempts >= limit and failure.quarantined_at is None:
                failure.quarantined_at = now
                quarantined.append(failure.path)
            failure.save()
            if failure.path in quarantined:
                _audit(
                    failure,
                    actor=None,
                    action="file_quarantined",
                    changes={"quarantined": [False, True]},
                    data={"automatic": True, "attempts": failure.attempts, "run_id": run.public_id},
                )
                hooks.publish("file.quarantined", failure=failure, automatic=True, run=run)
    return quarantined


def failures_forget(*, ingestion_id: int, paths) -> int:
    """Forget the failures of files that have now loaded (in the caller's transaction).

    One query when nothing failed: the failures are few, the loaded files may be 100,000.
    """
    failing = dict(FileFailure.objects.filter(ingestion_id=ingestion_id).values_list("path", "pk"))
    if not failing:
        return 0
    loaded = [failing[path] for path in paths if path in failing]
    if not loaded:
        return 0
    deleted, _ = FileFailure.objects.filter(pk__in=loaded).delete()
    return deleted


def failure_quarantine(*, failure: FileFailure, actor) -> FileFailure:
    """Set a failed file aside: no run or preview counts it until it is released.

    Raises:
        PermissionDeniedError: the actor may not run this ingestion.
        FailedFileStateError: the file is quarantined already.
    """
    _authorize(actor, failure.ingestion, "quarantining files of")
    with transaction.atomic():
        updated = FileFailure.objects.filter(pk=failure.pk, quarantined_at__isnull=True).update(
            quarantined_at=timezone.now(), quarantined_by=actor
        )
        if not updated:
            raise FailedFileStateError(f"{failure.path} is quarantined already.")
        failure.refresh_from_db()
        _audit(
            failure,
            actor=actor,
            action="file_quarantined",
            changes={"quarantined": [False, True]},
            data={"automatic": False, "attempts": failure.attempts},
        )
        hooks.publish("file.quarantined", failure=failure, automatic=False, run=None)
    return failure


def failure_release(*, failure: FileFailure, actor) -> None:
    """Release a quarantined file: the next run tries it again, from zero attempts.

    Raises:
        PermissionDeniedError: the actor may not run this ingestion.
        FailedFileStateError: the file is not quarantined.
    """
    _authorize(actor, failure.ingestion, "releasing files of")
    with transaction.atomic():
        deleted, _ = FileFailure.objects.filter(
            pk=failure.pk, quarantined_at__isnull=False
        ).delete()
        if not deleted:
            raise FailedFileStateError(f"{failure.path} is not quarantined.")
        _audit(
            failure,
            actor=actor,
            action="file_released",
            changes={"quarantined": [True, False]},
            data={"attempts": failure.attempts},
            log_action=LogEntry.Action.DELETE,
        )


def failure_retry(*, failure: FileFailure, actor) -> Run:
    """Try the file again now: release it if it is quarantined, then queue a run.

    Raises:
        PermissionDeniedError, RunInProgressError, RefreshInProgressError: as `run_request`.
    """
    from .runs import run_request

    _authorize(actor, failure.ingestion, "retrying files of")
    if failure.quarantined:
        # Released meanwhile: the run tries it all the same.
        with suppress(FailedFileStateError):
            failure_release(failure=failure, actor=actor)
    return run_request(ingestion=failure.ingestion, actor=actor)


def _authorize(actor, ingestion: Ingestion, doing: str) -> None:
    if not actor.has_perm(QUARANTINE_PERMISSION, ingestion):
        raise PermissionDeniedError(f"Your role does not allow {doing} this ingestion.")


def _audit(failure: FileFailure, *, actor, action: str, changes: dict, data: dict, **kw) -> None:
    ingestion = failure.ingestion
    audit.record_change(
        actor=actor,
        obj=failure,
        tenant=ingestion.tenant,
        action=action,
        object_repr=failure.path[:200],
        changes=changes,
        data={"ingestion_id": ingestion.public_id, "path": failure.path, **data},
        **kw,
    )
