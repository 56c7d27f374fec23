"""How an operation's steps run: each one's action, its outcome stored the moment it ends
(DESIGN §5.2), the heartbeat that says its process lives, the finish that settles the
operation, and the staged (zero-downtime) steps' names."""

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ingestions import hooks
from ingestions.engines import load_engine
from ingestions.errors import (
    AutoloaderError,
    EngineUnavailableError,
)
from ingestions.models import ACTIVE_RUN_STATUSES, Ingestion, OnPartialFailure, Run
from ingestions.runs import run_request
from ingestions.scope import Scope, scoped_history
from ingestions.selectors import processed_file_summary
from ingestions.services import history_archive

from . import audit
from .models import (
    OperationKind,
    OperationStatus,
    RefreshOperation,
    Retention,
    StepName,
    StepStatus,
)
from .planning import gigabytes
from .restore_points import keep_restore_point, restore_point_name
from .specs import spec_of

logger = logging.getLogger("refresh.services")  # the log of an operation's whole life


def expire_interrupted(ingestion: Ingestion) -> None:
    """An operation left in progress by a process that died becomes resumable (unless the
    worker's reaper finished it first, `refresh_reap`); an interrupted undo is left for the
    reaper or a retried undo to finish."""
    stale_before = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    for operation in RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS, updated_at__lt=stale_before
    ).exclude(retention=Retention.RESTORING):
        operation.steps.filter(status=StepStatus.PENDING, started_at__isnull=False).update(
            status=StepStatus.FAILED,
            error="Interrupted: the process executing this step stopped.",
            error_code="INTERRUPTED",
            finished_at=timezone.now(),
        )
        finish(
            operation, actor=None, default_error=("INTERRUPTED", "The operation was interrupted.")
        )
        logger.warning("refresh %s was interrupted; it can be resumed", operation.public_id)


def run_steps(operation: RefreshOperation, *, ingestion: Ingestion, actor, engine) -> None:
    started = timezone.now()
    with Heartbeat(operation):
        try:
            engine = engine or load_engine(ingestion.engine)
            keep_restore_point(operation, ingestion=ingestion, engine=engine)
        except Exception as exc:  # nothing was changed yet: the first step fails with it
            _fail_first_pending_step(operation, exc)
        else:
            _run_remaining_steps(operation, ingestion=ingestion, actor=actor, engine=engine)
    finish(operation, actor=actor, started=started)


def _fail_first_pending_step(operation: RefreshOperation, exc: Exception) -> None:
    step = operation.steps.exclude(status__in=[StepStatus.SUCCESS, StepStatus.SKIPPED]).first()
    if step is not None:
        step.status = StepStatus.FAILED
        step.error_code = _step_error_code("", exc)
        step.error = str(exc) or type(exc).__name__
        step.started_at = step.finished_at = timezone.now()
        step.save()
    if not isinstance(exc, AutoloaderError):
        logger.exception("refresh %s could not keep a restore point", operation.public_id)


def _run_remaining_steps(
    operation: RefreshOperation, *, ingestion: Ingestion, actor, engine
) -> None:
    auto_run = operation.request.get("auto_run", True)
    actions = STAGED_STEP_ACTIONS if operation.zero_downtime else STEP_ACTIONS
    for step in operation.steps.exclude(status__in=[StepStatus.SUCCESS, StepStatus.SKIPPED]):
        step.started_at = timezone.now()
        step.error = step.error_code = ""
        if step.name == StepName.RUN_TRIGGERED and not auto_run:
            step.status = StepStatus.SKIPPED
            step.details = {"reason": "auto_run is false: no run triggered"}
        else:
            step.save(update_fields=["started_at", "error", "error_code"])
            try:
                step.details = actions[step.name](
                    ingestion=ingestion, operation=operation, actor=actor, engine=engine
                )
                step.status = StepStatus.SUCCESS
            except Exception as exc:  # recorded, never lost: the operation says what failed
                step.status = StepStatus.FAILED
                step.error_code = _step_error_code(step.name, exc)
                step.error = str(exc) or type(exc).__name__
                if not isinstance(exc, AutoloaderError):
                    logger.exception("refresh %s step %s failed", operation.public_id, step.name)
        step.finished_at = timezone.now()
        step.save()
        if step.status == StepStatus.FAILED:
            break


class Heartbeat:
    """Keeps an operation's `updated_at` fresh from a thread while its process works on it,
    so the worker's reaper (`refresh_reap`) can tell a long step from a dead process."""

    def __init__(self, operation: RefreshOperation):
        self.pk = operation.pk
        self._stop = threading.Event()
        self._interval = max(0.2, settings.REFRESH_STALE_SECONDS / 6)
        self._thread = threading.Thread(target=self._loop, name="refresh-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    RefreshOperation.objects.filter(
                        pk=self.pk, status=OperationStatus.IN_PROGRESS
                    ).update(updated_at=timezone.now())
                except Exception:  # a locked or restarting database: try again next beat
                    logger.warning("heartbeat of refresh %s failed", self.pk, exc_info=True)
        finally:
            connection.close()


@transaction.atomic  # the outcome and its webhook event commit together
def finish(
    operation: RefreshOperation,
    *,
    actor,
    started=None,
    default_error: tuple[str, str] | None = None,
) -> None:
    steps = list(operation.steps.all())
    failed = next((step for step in steps if step.status == StepStatus.FAILED), None)
    done = [step for step in steps if step.status == StepStatus.SUCCESS]
    if failed is None and default_error is None:
        run_step = next((s for s in steps if s.name == StepName.RUN_TRIGGERED), None)
        triggered = run_step is not None and run_step.status == StepStatus.SUCCESS
        operation.status = OperationStatus.ACCEPTED if triggered else OperationStatus.SUCCESS
        operation.error = operation.error_code = ""
    else:
        # Zero-downtime steps before the run change nothing: if the run was not triggered,
        # nothing was done at all.
        changed_something = done and not operation.zero_downtime
        operation.status = (
            OperationStatus.PARTIAL_FAILURE if changed_something else OperationStatus.FAILED
        )
        operation.error_code, operation.error = (
            (failed.error_code, failed.error) if failed else default_error
        )
    operation.finished_at = timezone.now()
    operation.save(
        update_fields=["status", "error", "error_code", "finished_at", "updated_at", "run"]
    )
    hooks.publish("refresh.ended", operation=operation)
    audit.record_operation(
        operation,
        actor=actor,
        duration_seconds=(operation.finished_at - started).total_seconds() if started else None,
    )
    logger.info("refresh %s ended %s", operation.public_id, operation.status)


def _step_error_code(step_name: str, exc: Exception) -> str:
    if isinstance(exc, EngineUnavailableError):
        return "CLUSTER_UNAVAILABLE"
    if step_name == StepName.TABLE_DROPPED:
        # The PRD's code for a failed drop, kept whatever the engine for clients that match it.
        return "SPARK_ERROR"
    if isinstance(exc, AutoloaderError):
        return exc.error_code
    return "INTERNAL_ERROR"


def _drop_table(*, ingestion: Ingestion, operation: RefreshOperation, engine, **_) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    details = {"table_name": ingestion.destination_table}
    kept = operation.restore_point.get("table")
    if operation.retention == Retention.KEPT and kept is None:
        # Set aside, not purged: undo renames it back; retention purges it later.
        point = engine.retire(ingestion.table_identifier, name=restore_point_name(operation))
        operation.restore_point = {**operation.restore_point, "table": point}
        operation.retained_bytes = point["size_bytes"]
        operation.save(update_fields=["restore_point", "retained_bytes", "updated_at"])
        existed = point["kind"] == "retired"
        if existed:
            details["kept_for_undo"] = True
    else:
        # Not kept (retain_days 0), or the table was set aside by an earlier attempt and
        # what is live now was loaded since: the refresh reloads it.
        existed = engine.drop_table(ingestion.table_identifier)
    details["table_existed"] = existed
    if existed:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _clear_history(*, ingestion: Ingestion, **_) -> dict:
    summary = processed_file_summary(ingestion=ingestion)
    history_archive(ingestion=ingestion)  # one UPDATE: the rows are archived, not deleted
    return {
        "files_cleared": summary["count"],
        "oldest_file": summary["oldest"],
        "newest_file": summary["newest"],
    }


def _trigger_run(*, ingestion: Ingestion, operation: RefreshOperation, actor, engine) -> dict:
    engine.ping()  # the run would fail at once on an unreachable engine: say so now
    trigger = spec_of(operation.kind).run_trigger
    run = _run_of_interrupted_step(operation, ingestion=ingestion, trigger=trigger) or run_request(
        ingestion=ingestion, actor=actor, trigger=trigger, for_refresh_operation=True
    )
    operation.run = run
    return {"run_id": run.public_id, "run_url": f"/api/v1/runs/{run.public_id}"}


def _run_of_interrupted_step(operation: RefreshOperation, *, ingestion: Ingestion, trigger: str):
    """The run an earlier attempt of this step queued before its process died, if any."""
    return Run.objects.filter(
        ingestion=ingestion,
        trigger=trigger,
        status__in=ACTIVE_RUN_STATUSES,
        created_at__gte=operation.created_at,
    ).first()


STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _drop_table,
    StepName.PROCESSED_FILES_CLEARED: _clear_history,
    StepName.RUN_TRIGGERED: _trigger_run,
}


def _replace_table_at_publish(
    *, ingestion: Ingestion, engine, operation: RefreshOperation, **_
) -> dict:
    info = engine.describe_table(ingestion.table_identifier)
    details = {
        "table_name": ingestion.destination_table,
        "table_existed": info.exists,
        "replaced_at_publish": True,
    }
    scope = Scope.parse(operation.request.get("scope"))
    if scope is not None:
        entries = scoped_history(ingestion=ingestion, scope=scope)
        details.update(
            scope=scope.describe(),
            rows_replaced=sum(entry.rows for entry in entries),
            files_in_history=len(entries),
        )
    if info.exists:
        details.update(table_size_gb=gigabytes(info.size_bytes), row_count=info.row_count)
    return details


def _replace_history_at_publish(*, ingestion: Ingestion, operation: RefreshOperation, **_) -> dict:
    scope = Scope.parse(operation.request.get("scope"))
    if scope is not None:
        entries = scoped_history(ingestion=ingestion, scope=scope)
        return {
            "scope": scope.describe(),
            "files_cleared": len(entries),
            "oldest_file": entries[0].path if entries else None,
            "newest_file": entries[-1].path if entries else None,
            "cleared_at_publish": True,
        }
    summary = processed_file_summary(ingestion=ingestion)
    return {
        "files_cleared": summary["count"],
        "oldest_file": summary["oldest"],
        "newest_file": summary["newest"],
        "cleared_at_publish": True,
    }


def _trigger_staged_run(
    *, ingestion: Ingestion, operation: RefreshOperation, actor, engine
) -> dict:
    engine.ping()
    run = Run.objects.filter(
        ingestion=ingestion, stage_name=stage_name_for(operation)
    ).first() or run_request(  # the run of an attempt that died before recording it
        ingestion=ingestion,
        actor=actor,
        trigger=spec_of(operation.kind).run_trigger,
        for_refresh_operation=True,
        stage_name=stage_name_for(operation),
        stage_replaces_history=operation.kind == OperationKind.FULL_REFRESH
        and not operation.request.get("scope"),
        stage_scope=operation.request.get("scope"),
        publish_hold=bool(operation.request.get("batch_id")),
        on_partial_failure=operation.request.get("on_partial_failure", OnPartialFailure.DECIDE),
    )
    operation.run = run
    return {
        "run_id": run.public_id,
        "run_url": f"/api/v1/runs/{run.public_id}",
        "publishes_when_run_ends": True,
    }


_STAGE_PREFIX = "autoloader_"


def stage_name_for(operation: RefreshOperation) -> str:
    """The branch (or staging table suffix) of an operation's new version."""
    return _STAGE_PREFIX + operation.public_id.replace("-", "_")


def operation_id_of_stage(stage_name: str) -> str:
    """The public id of the operation whose new version `stage_name` holds."""
    return stage_name.removeprefix(_STAGE_PREFIX).replace("_", "-")


STAGED_STEP_ACTIONS = {
    StepName.TABLE_DROPPED: _replace_table_at_publish,
    StepName.PROCESSED_FILES_CLEARED: _replace_history_at_publish,
    StepName.RUN_TRIGGERED: _trigger_staged_run,
}


def take_over(operation: RefreshOperation) -> bool:
    """Claim an operation in progress whose process stopped (no heartbeat for
    REFRESH_STALE_SECONDS): one conditional UPDATE on the heartbeat this caller saw, so of
    several callers (retries, reapers) exactly one takes it over. False while it lives."""
    now = timezone.now()
    if operation.updated_at >= now - timedelta(seconds=settings.REFRESH_STALE_SECONDS):
        return False
    claimed = RefreshOperation.objects.filter(
        pk=operation.pk, status=OperationStatus.IN_PROGRESS, updated_at=operation.updated_at
    ).update(updated_at=now)
    return bool(claimed)
