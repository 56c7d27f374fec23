"""Runs: request, cancel, execute with the exactly-once batch protocol, recover dead workers.

The exactly-once protocol (DESIGN §5.1): every batch of files is recorded as a PENDING
`RunBatch` before it is committed to Iceberg, the commit carries the batch key in its
snapshot summary, and the history rows are written together with the batch's COMMITTED
mark. A worker that dies anywhere leaves either no snapshot (the batch is ABANDONED and
its files load again) or a snapshot naming the batch (the history is completed from the
batch record). Recovery reads the table's snapshots to decide, never guesses.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
from auditlog.models import LogEntry
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Case, F, JSONField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import audit, hooks
from .engines import Engine, Stage, load_engine
from .engines.base import FileBatch
from .errors import (
    AutoloaderError,
    PermissionDeniedError,
    RunCancelledError,
    RunInProgressError,
    RunNotCancellableError,
    RunOwnershipLostError,
)
from .locations import source_open
from .models import (
    CommitStatus,
    Ingestion,
    OnPartialFailure,
    ProcessedFile,
    PublishState,
    Run,
    RunBatch,
    RunStatus,
    RunTrigger,
)
from .quarantine import failures_forget, failures_record, quarantined_paths
from .scope import Scope, scope_replacing
from .selectors import processed_file_paths, run_active
from .services import history_archive, history_replace_scope
from .sources import SourceFile, list_source_files, read_source_file
from .sources.readers import conform_to_schema, source_file_column, with_metadata_columns

logger = logging.getLogger(__name__)

SNAPSHOT_RUN_KEY = "autoloader.run-id"
SNAPSHOT_BATCH_KEY = "autoloader.batch-key"
SNAPSHOT_INGESTION_KEY = "autoloader.ingestion-id"
RUN_REQUEST_ATTEMPTS = 3
# Files under this many rows are small: fitted to the table's schema together, and their
# rows made one chunk before writing.
SMALL_FILE_ROWS = 10_000


# --- requesting and cancelling ---------------------------------------------------------


def run_request(
    *,
    ingestion: Ingestion,
    actor=None,
    trigger: str = RunTrigger.API,
    for_refresh_operation: bool = False,
    stage_name: str = "",
    stage_replaces_history: bool = False,
    on_partial_failure: str = OnPartialFailure.DECIDE,
    stage_scope: dict | None = None,
    publish_hold: bool = False,
) -> Run:
    """Queue a run of `ingestion` for the worker.

    An `actor` must be allowed to run the ingestion, whoever calls (the API, the console, a
    retry of a failed file); no actor is the product's own call (a schedule firing, the
    demo). A refresh operation's own run was authorized as that operation.

    With `stage_name`, the run is staged (a zero-downtime refresh): it loads a new version
    of the table beside the live one (replacing the history, or adding to it) and publishes
    both when it ends; a failed or cancelled one publishes nothing. With `stage_scope` too
    (a selective refresh), it reloads only the files in the scope and its version replaces
    only their rows and history entries. With `publish_hold` (a batch refresh's member), the
    loaded version waits for its batch to publish it (`refresh.batches`).

    The run row and its task row are inserted in one transaction, so a run is never queued
    without a task to execute it, and the conditional unique constraint refuses a second
    active run even when two requests race. The ingestion row is locked meanwhile, the
    same lock a refresh operation takes to start, so a run and a refresh cannot interleave.

    Raises:
        PermissionDeniedError: the actor may not run the ingestion.
        RunInProgressError: the ingestion already has a queued or running run.
        RefreshInProgressError: a refresh operation is changing the ingestion (unless this
            run is that operation's own step).
    """
    from .tasks import execute_run

    if actor is not None and not for_refresh_operation:
        _authorize(actor, ingestion, "running")
    requested_by = actor if getattr(actor, "is_authenticated", False) else None
    for attempt in range(1, RUN_REQUEST_ATTEMPTS + 1):
        try:
            with transaction.atomic():
                ingestion_lock(ingestion)
                if not for_refresh_operation:
                    hooks.refuse_changes(ingestion)
                run = Run.objects.create(
                    ingestion=ingestion,
                    trigger=trigger,
                    requested_by=requested_by,
                    stage_name=stage_name,
                    stage_replaces_history=stage_replaces_history,
                    stage_scope=stage_scope,
                    publish_hold=publish_hold,
                    on_partial_failure=on_partial_failure,
                )
                result = execute_run.enqueue(run.public_id)
                run.task_id = str(result.id)
                run.save(update_fields=["task_id"])
                # A person's (or token's) request; a refresh operation is audited as a whole.
                if requested_by is not None and not for_refresh_operation:
                    audit.record_change(
                        actor=actor,
                        obj=run,
                        tenant=ingestion.tenant,
                        action="run_requested",
                        log_action=LogEntry.Action.CREATE,
                        object_repr=run.public_id,
                        changes={"status": [None, run.status]},
                        data={
                            "ingestion_id": ingestion.public_id,
                            "run_id": run.public_id,
                            "trigger": trigger,
                        },
                    )
            break
        except IntegrityError:
            active = run_active(ingestion=ingestion)
            if active is not None:
                raise RunInProgressError(
                    "A run is already in progress for this ingestion",
                    current_run_id=active.public_id,
                ) from None
            # The run that was in the way finished between the refused insert and the look
            # up: nothing is active any more, so ask again (it was a 500 before).
            if attempt == RUN_REQUEST_ATTEMPTS:
                raise
    logger.info("run %s queued for %s (%s)", run.public_id, ingestion.public_id, trigger)
    return run


def ingestion_lock(ingestion: Ingestion) -> None:
    """Lock the ingestion's row until the end of the current transaction.

    Runs and refresh operations take this lock to start, so their checks (is a run active?
    is a refresh in flight?) and their inserts cannot interleave. On SQLite the IMMEDIATE
    transaction mode already serializes writers.
    """
    list(Ingestion.objects.select_for_update().filter(pk=ingestion.pk).values_list("pk"))


RUN_PERMISSION = "ingestions.run_ingestion"


def run_allowed(*, actor, ingestion: Ingestion) -> bool:
    """Whether the actor's role may start and cancel runs of the ingestion."""
    return actor.has_perm(RUN_PERMISSION, ingestion)


def _authorize(actor, ingestion: Ingestion, doing: str) -> None:
    if not run_allowed(actor=actor, ingestion=ingestion):
        raise PermissionDeniedError(f"Your role does not allow {doing} this ingestion.")


def run_cancel(*, run: Run, actor=None) -> Run:
    """Cancel a run: a queued one at once, a running one at its next batch boundary.

    With `actor`, its role must allow running the ingestion.

    Raises:
        PermissionDeniedError: the actor may not cancel runs of this ingestion.
        RunNotCancellableError: the run has already finished.
    """
    if actor is not None:
        _authorize(actor, run.ingestion, "cancelling runs of")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.CANCELLED
            run.finished_at = timezone.now()
            run.error = "Cancelled before it started."
            run.save(update_fields=["status", "finished_at", "error"])
        elif run.status == RunStatus.RUNNING:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
        else:
            raise RunNotCancellableError(
                f"Run {run.public_id} has already finished ({run.status})."
            )
        audit.record_change(
            actor=actor,
            obj=run,
            tenant=run.ingestion.tenant,
            action="run_cancelled",
            object_repr=run.public_id,
            changes={"cancel_requested": [False, True]},
            data={"ingestion_id": run.ingestion.public_id, "run_id": run.public_id},
        )
    return run


# --- executing -------------------------------------------------------------------------


def run_execute(*, run_id: str, engine: Engine | None = None) -> Run | None:
    """Execute or resume a run in this process; returns the finished run, or None.

    None means there was nothing to do: the run was cancelled while queued, finished
    already, or is held by a live worker.
    """
    worker_id = uuid.uuid4().hex
    run = _claim(run_id=run_id, worker_id=worker_id)
    if run is None:
        logger.info("run %s not claimed (finished, cancelled or held by a live worker)", run_id)
        return None
    heartbeat = _Heartbeat(run_pk=run.pk, worker_id=worker_id)
    heartbeat.start()
    try:
        engine = engine or load_engine(run.ingestion.engine)
        # A cancel noticed by the heartbeat interrupts the engine's work in flight (a long
        # Spark job), rather than waiting for the next batch boundary.
        heartbeat.on_cancel = getattr(engine, "cancel", None)
        _RunExecutor(run=run, engine=engine, heartbeat=heartbeat).execute()
    except RunOwnershipLostError:
        logger.warning("run %s was taken over by another worker; stopping", run_id)
        return Run.objects.get(pk=run.pk)
    except RunCancelledError:
        _discard_staged(run, engine)
        _finish(run, worker_id, RunStatus.CANCELLED, error="Cancelled by user.")
    except AutoloaderError as exc:
        _discard_staged(run, engine)
        _finish(run, worker_id, RunStatus.FAILED, error=str(exc))
    except Exception as exc:  # the run must end FAILED with a readable error, whatever broke
        logger.exception("run %s failed", run_id)
        _discard_staged(run, engine)
        _finish(run, worker_id, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop()
    return Run.objects.get(pk=run.pk)


@transaction.atomic  # the claim and its webhook event commit together
def _claim(*, run_id: str, worker_id: str) -> Run | None:
    """Take the run for this worker: a queued run, or a running one whose worker went silent."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.AUTOLOADER_RUN_STALE_SECONDS)
    claimable = Q(status=RunStatus.QUEUED) | Q(
        status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
    )
    claimed = Run.objects.filter(claimable, public_id=run_id).update(
        status=RunStatus.RUNNING,
        worker_id=worker_id,
        heartbeat_at=now,
        started_at=Coalesce("started_at", now),
        attempts=F("attempts") + 1,
        # A resumed run retries the files that failed before; loaded files stay counted.
        # (Unless it was publishing: then it only finishes that, failures as they were.)
        files_failed=Case(
            When(publish_state=PublishState.PUBLISHING, then=F("files_failed")), default=0
        ),
        failed_files=Case(
            When(publish_state=PublishState.PUBLISHING, then=F("failed_files")),
            default=Value([], output_field=JSONField()),
        ),
    )
    if not claimed:
        return None
    run = Run.objects.select_related("ingestion").get(public_id=run_id)
    hooks.publish("run.started", run_pk=run.pk)
    return run


@transaction.atomic  # the end and its webhook event commit together
def _finish(run: Run, worker_id: str, status: str, *, error: str = "") -> None:
    if Run.objects.filter(pk=run.pk, worker_id=worker_id).update(
        status=status, error=error[:4000], finished_at=timezone.now(), heartbeat_at=timezone.now()
    ):
        hooks.publish("run.finished", run_pk=run.pk)
    logger.info("run %s finished %s %s", run.public_id, status, error)


class _Heartbeat:
    """Keeps the run's heartbeat fresh from a thread, so a long commit never looks dead.

    It also notices when the run was handed to another worker (the reaper re-queued it):
    the executor then stops before its next commit; and when a user cancelled the run: it
    then calls `on_cancel` (the engine's `cancel`) once.
    """

    def __init__(self, *, run_pk: int, worker_id: str):
        self.run_pk = run_pk
        self.worker_id = worker_id
        self.lost = False
        self.on_cancel = None
        self._cancel_signalled = False
        self._stop = threading.Event()
        self._interval = max(0.2, settings.AUTOLOADER_RUN_STALE_SECONDS / 6)
        self._thread = threading.Thread(target=self._loop, name="run-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        updated = Run.objects.filter(
            pk=self.run_pk, worker_id=self.worker_id, status=RunStatus.RUNNING
        ).update(heartbeat_at=timezone.now())
        if not updated:
            self.lost = True
        if (
            self.on_cancel is not None
            and not self._cancel_signalled
            and Run.objects.filter(pk=self.run_pk, cancel_requested=True).exists()
        ):
            self._cancel_signalled = True
            self.on_cancel()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    self.beat()
                except Exception:  # a locked or restarting database: try again next beat
                    logger.warning("heartbeat of run %s failed", self.run_pk, exc_info=True)
        finally:
            connection.close()

    def check(self) -> None:
        if self.lost:
            raise RunOwnershipLostError()


@dataclass
class _LoadedFile:
    source: SourceFile
    rows: int


class _RunExecutor:
    """Loads an ingestion's new files in batches, each one Iceberg commit."""

    def __init__(self, *, run: Run, engine: Engine, heartbeat: _Heartbeat):
        self.run = run
        self.ingestion = run.ingestion
        self.engine = engine
        self.heartbeat = heartbeat
        self.table_name = self.ingestion.table_identifier
        self.source = None
        self.stage = None
        # The table's schema, read once and again only after a commit that changed it.
        self.table_schema: pa.Schema | None = None
        self.table_schema_known = False

    def execute(self) -> None:
        batches_recover(ingestion=self.ingestion, engine=self.engine)
        if self.run.stage_name and self.run.publish_state == PublishState.PUBLISHING:
            # Killed while publishing: every batch is in; finish the swap, nothing more.
            failed = self.run.files_failed
            self._finish_staged(
                RunStatus.PARTIAL_SUCCESS if failed else RunStatus.SUCCESS,
                error=f"{failed} files failed to load." if failed else "",
            )
            return
        # Checked against the tenant's locations now, not only when the ingestion was saved:
        # a revoked location or a symlink changed since then reaches nothing.
        self.source = source_open(tenant=self.ingestion.tenant, uri=self.ingestion.source_uri)
        listing = list_source_files(
            source=self.source, pattern=self.ingestion.source_pattern or None
        )
        scope = Scope.parse(self.run.stage_scope)
        replacing = None
        if scope is not None:
            listed = {item.path for item in listing}
            listing = [
                item for item in listing if scope.matches_listed(item.path, item.modified_ns)
            ]
            if not self.run.stage_write_to:  # first attempt: what the version replaces
                paths, _ = scope_replacing(
                    ingestion=self.ingestion,
                    scope=scope,
                    listed=listed,
                    matched={item.path for item in listing},
                )
                replacing = sorted(paths)
        if self.run.stage_name:
            self.stage = stage_of(self.run, engine=self.engine, replacing=replacing)
            self.table_name = self.stage.write_to
        history = self._known_paths()
        # Quarantined files are left out until released (`ingestions.quarantine`).
        set_aside = quarantined_paths(ingestion=self.ingestion)
        new_files = [
            source
            for source in listing
            if source.path not in history and source.path not in set_aside
        ]
        self.run.refresh_from_db(fields=["files_loaded"])
        Run.objects.filter(pk=self.run.pk).update(
            files_found=self.run.files_loaded + len(new_files)
        )
        failed: list[dict] = []
        for batch in _split_batches(new_files):
            self._check_cancel()
            batch_failures = self._load_batch(batch)
            failed.extend(batch_failures)
            if batch_failures:
                Run.objects.filter(pk=self.run.pk).update(
                    files_failed=len(failed), failed_files=failed
                )
                failures_record(run=self.run, failures=batch_failures)
        self.run.refresh_from_db()
        if failed and self.run.files_loaded == 0 and len(failed) == len(new_files):
            status, error = RunStatus.FAILED, f"All {len(failed)} files failed to load."
        elif failed:
            status, error = RunStatus.PARTIAL_SUCCESS, f"{len(failed)} files failed to load."
        else:
            status, error = RunStatus.SUCCESS, ""
        if self.run.stage_name:
            if status == RunStatus.FAILED:
                raise StagedRunFailedError(error)  # discarded by run_execute
            self._finish_staged(status, error=error)
            return
        _finish(self.run, self.heartbeat.worker_id, status, error=error)

    def _known_paths(self) -> set[str]:
        """Files not to load: the history (unless the staged version replaces it) and what
        this run committed already (a resumed staged run keeps its batches, not history)."""
        known = set()
        if not self.run.stage_replaces_history and not self.run.stage_scope:
            known = processed_file_paths(ingestion=self.ingestion)
        if self.run.stage_name:
            for files in RunBatch.objects.filter(
                run=self.run, status=CommitStatus.COMMITTED
            ).values_list("files", flat=True):
                known.update(item["path"] for item in files)
        return known

    def _finish_staged(self, status: str, *, error: str = "") -> None:
        """End a staged run: publish before reporting SUCCESS (a client that waits for the
        run reads the new table), or wait for a decision when some files failed."""
        decision = self.run.on_partial_failure
        if self.run.publish_hold:
            # A batch's member: its batch publishes every member once all have loaded, or
            # none (`refresh.batches`); a member with failed files fails the batch.
            Run.objects.filter(pk=self.run.pk).update(publish_state=PublishState.AWAITING_BATCH)
            error = f"{error} {BATCH_WAIT_NOTE}"
        elif status == RunStatus.SUCCESS or (
            status == RunStatus.PARTIAL_SUCCESS and decision == OnPartialFailure.PUBLISH
        ):
            self.heartbeat.check()
            staged_publish(run=self.run, engine=self.engine)
        elif decision == OnPartialFailure.DISCARD:
            staged_discard(run=self.run, engine=self.engine)
            error = f"{error} The new version was discarded; the table is unchanged."
        else:
            Run.objects.filter(pk=self.run.pk).update(publish_state=PublishState.AWAITING_DECISION)
            error = f"{error} The new version waits for a decision: publish or discard it."
        _finish(self.run, self.heartbeat.worker_id, status, error=error.strip())

    def _check_cancel(self) -> None:
        self.heartbeat.check()
        if Run.objects.filter(pk=self.run.pk, cancel_requested=True).exists():
            raise RunCancelledError()

    def _load_batch(self, batch: list[SourceFile]) -> list[dict]:
        """Read the batch's files and commit the good ones as one snapshot; returns failures.

        Rows and reading time are known only while reading: past either bound, the files
        read so far commit and the rest of the batch goes on as a batch of its own.
        """
        # Each batch checks the location again: one revoked during the run reads no more.
        self.source = source_open(tenant=self.ingestion.tenant, uri=self.ingestion.source_uri)
        if self.engine.reads_files:
            return self._load_batch_on_engine(batch)
        failures: list[dict] = []
        while batch:
            data, loaded, batch = self._read_files(batch, failures)
            if loaded:
                self._check_cancel()
                self._commit(loaded, rows=data.num_rows if data is not None else 0, data=data)
                if data is not None and (
                    self.table_schema is None or not data.schema.equals(self.table_schema)
                ):
                    # The commit created the table or changed its schema: read it again.
                    self.table_schema_known = False
        return failures

    def _load_batch_on_engine(self, batch: list[SourceFile]) -> list[dict]:
        """The engine reads the batch's files itself (a cluster's executors), counts each
        file's rows, then commits the good files' rows: the worker reads no source bytes."""
        files = {source.path: source for source in batch}
        try:
            read = self.engine.read_files(
                source=self.source,
                paths=list(files),
                file_format=self.ingestion.source_format,
                options=self.ingestion.source_options or {},
            )
        except Exception:
            self._check_cancel()  # a read interrupted by a cancel ends the run CANCELLED
            raise
        try:
            loaded = [
                _LoadedFile(source=files[path], rows=rows) for path, rows in read.rows.items()
            ]
            if loaded:
                self._check_cancel()
                self._commit(loaded, rows=read.total_rows, files=read)
        finally:
            self.engine.release_files(read)
        return [_failure(files[path], exc) for path, exc in read.failures.items()]

    def _read_files(
        self, files: list[SourceFile], failures: list[dict]
    ) -> tuple[pa.Table | None, list[_LoadedFile], list[SourceFile]]:
        """Read `files` until the batch's row or time bound; returns the data (None when no
        file had rows), the files it holds and the files left unread. Failures are added
        to `failures`."""
        max_rows = max(1, settings.AUTOLOADER_BATCH_MAX_ROWS)
        deadline = time.monotonic() + settings.AUTOLOADER_BATCH_MAX_SECONDS
        fitter = _BatchFitter(schema=self._table_schema(), failures=failures)
        read: list[tuple[SourceFile, int]] = []
        rows, rest = 0, []
        for position, source in enumerate(files):
            if read and (rows >= max_rows or time.monotonic() >= deadline):
                rest = files[position:]
                break
            try:
                data = read_source_file(
                    source=self.source,
                    path=source.path,
                    file_format=self.ingestion.source_format,
                    options=self.ingestion.source_options or {},
                )
            except AutoloaderError as exc:
                failures.append(_failure(source, exc))
                continue
            read.append((source, data.num_rows))
            rows += data.num_rows
            if data.num_rows:
                fitter.add(source, data)
        data, fitted = fitter.finish()
        # A file without rows has nothing to load, and its types say nothing (a header-only
        # CSV reads as strings): it joins the history but never decides the schema.
        loaded = [
            _LoadedFile(source=source, rows=file_rows)
            for source, file_rows in read
            if not file_rows or source.path in fitted
        ]
        return data, loaded, rest

    def _table_schema(self) -> pa.Schema | None:
        if not self.table_schema_known:
            self.table_schema = self.engine.table_schema(self.table_name)
            self.table_schema_known = True
        return self.table_schema

    def _commit(
        self,
        loaded: list[_LoadedFile],
        *,
        rows: int,
        data: pa.Table | None = None,
        files: FileBatch | None = None,
    ) -> None:
        """Commit a batch (exactly-once protocol): `data` read here, or `files` read by the
        engine; no commit to the table when the files have no rows."""
        batch = RunBatch.objects.create(
            run=self.run,
            batch_key=f"{self.run.public_id}.{uuid.uuid4().hex[:12]}",
            status=CommitStatus.PENDING,
            table_name=self.table_name,
            files=[
                {
                    "path": item.source.path,
                    "size_bytes": item.source.size_bytes,
                    "modified_at": item.source.modified_at.isoformat()
                    if item.source.modified_at
                    else None,
                    "rows": item.rows,
                }
                for item in loaded
            ],
            rows=rows,
            bytes=sum(item.source.size_bytes for item in loaded),
        )
        self.heartbeat.check()
        if not rows:
            # No rows, so no Iceberg commit to wait for: the history is the whole batch.
            batch_mark_committed(batch=batch, snapshot_id=None)
            return
        properties = {
            SNAPSHOT_RUN_KEY: self.run.public_id,
            SNAPSHOT_BATCH_KEY: batch.batch_key,
            SNAPSHOT_INGESTION_KEY: self.ingestion.public_id,
        }
        branch = self.stage.branch if self.stage else None
        try:
            if files is not None:
                snapshot_id = self.engine.append_files(
                    self.table_name,
                    files,
                    properties=properties,
                    ingested_at=timezone.now(),
                    branch=branch,
                )
            else:
                snapshot_id = self.engine.append(
                    self.table_name, data, branch=branch, properties=properties
                )
        except Exception:
            # The commit may or may not have reached the table: let the table decide.
            batch_resolve(batch=batch, engine=self.engine)
            self._check_cancel()  # an append interrupted by a cancel ends the run CANCELLED
            raise
        batch_mark_committed(batch=batch, snapshot_id=snapshot_id)


class _BatchFitter:
    """Fits a batch's files to the table's schema and adds their lineage columns.

    Small files of one schema are fitted together, once (per file, the fixed cost of a
    fit is most of a small file's time); when that fails, file by file, so a bad file fails
    alone. A big file is fitted by itself as soon as it is read, so its raw rows are freed.
    With no table yet, the first file decides the schema and the others fit it.
    """

    def __init__(self, *, schema: pa.Schema | None, failures: list[dict]):
        self.schema = schema
        self.failures = failures
        self.ingested_at = timezone.now()
        self.parts: list[pa.Table] = []
        self.fitted: set[str] = set()
        self.pending: list[tuple[SourceFile, pa.Table]] = []
        self.pending_rows = 0

    def add(self, source: SourceFile, data: pa.Table) -> None:
        if self.pending and not data.schema.equals(self.pending[0][1].schema):
            self._fit_pending()
        self.pending.append((source, data))
        self.pending_rows += data.num_rows
        if self.pending_rows >= SMALL_FILE_ROWS:
            self._fit_pending()

    def finish(self) -> tuple[pa.Table | None, set[str]]:
        """The batch's data (None when no file fitted) and the paths of the files in it."""
        self._fit_pending()
        return _concat(self.parts), self.fitted

    def _fit_pending(self) -> None:
        files, self.pending, self.pending_rows = self.pending, [], 0
        if len(files) > 1:
            try:
                self._fit(files)
                return
            except (AutoloaderError, pa.ArrowException, ValueError):
                pass  # one of them does not fit: find which, file by file
        for item in files:
            try:
                self._fit([item])
            except AutoloaderError as exc:
                self.failures.append(_failure(item[0], exc))

    def _fit(self, files: list[tuple[SourceFile, pa.Table]]) -> None:
        data = pa.concat_tables([data for _, data in files])
        paths = source_file_column([(source.path, part.num_rows) for source, part in files])
        data = with_metadata_columns(data, source_file=paths, ingested_at=self.ingested_at)
        if self.schema is not None:
            data = conform_to_schema(data, self.schema)
        else:
            self.schema = data.schema
        self.parts.append(data)
        self.fitted.update(source.path for source, _ in files)


def _failure(source: SourceFile, exc: AutoloaderError) -> dict:
    return {
        "path": source.path,
        "error": str(exc),
        "error_code": exc.error_code,
        "size_bytes": source.size_bytes,
    }


def _concat(parts: list[pa.Table]) -> pa.Table | None:
    if not parts:
        return None
    data = pa.concat_tables(parts, promote_options="permissive")
    if data.num_columns and data.num_rows < SMALL_FILE_ROWS * data.column(0).num_chunks:
        # Many small files: pyiceberg writes chunk by chunk, and thousands of tiny chunks
        # write several times slower than one. Copying small files' rows costs little.
        data = data.combine_chunks()
    return data


def _split_batches(files: list[SourceFile]) -> list[list[SourceFile]]:
    """Cut the files into batches by the bounds the listing knows: bytes and files.

    A batch is one Iceberg commit, and a commit's cost grows with the table, not with the
    batch: many small files make few big batches. The files bound is an upper bound (1
    gives one commit per file, the most commit boundaries, as the crash tests want).
    """
    max_files = max(1, settings.AUTOLOADER_BATCH_MAX_FILES)
    max_bytes = max(1, settings.AUTOLOADER_BATCH_MAX_BYTES)
    batches: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    current_bytes = 0
    for source in files:
        if current and (len(current) >= max_files or current_bytes + source.size_bytes > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(source)
        current_bytes += source.size_bytes
    if current:
        batches.append(current)
    return batches


# --- the batch protocol ----------------------------------------------------------------


def batch_mark_committed(*, batch: RunBatch, snapshot_id: int | None) -> None:
    """Mark the batch COMMITTED and write its files into the history, in one transaction.

    A staged run's files join the history when its version is published (`staged_publish`).
    """
    now = timezone.now()
    with transaction.atomic():
        updated = RunBatch.objects.filter(pk=batch.pk, status=CommitStatus.PENDING).update(
            status=CommitStatus.COMMITTED, snapshot_id=snapshot_id, committed_at=now
        )
        if not updated:
            return  # someone else completed (or abandoned) it already
        Run.objects.filter(pk=batch.run_id).update(
            files_loaded=F("files_loaded") + len(batch.files),
            rows_written=F("rows_written") + batch.rows,
            bytes_read=F("bytes_read") + batch.bytes,
        )
        if not batch.run.stage_name:
            _write_history(batch.run, batch.files, loaded_at=now)
        # A file that loaded is no longer a failed file, staged or not.
        failures_forget(
            ingestion_id=batch.run.ingestion_id, paths=[item["path"] for item in batch.files]
        )


HISTORY_COLUMNS = (
    "ingestion_id",
    "generation",
    "path",
    "size_bytes",
    "modified_at",
    "etag",
    "rows",
    "run_id",
    "loaded_at",
)


def _write_history(run: Run, files: list[dict], *, loaded_at) -> None:
    """Insert the history rows of `files`, in the caller's transaction.

    One parameterized INSERT executed for all rows: a batch of 50,000 small files writes
    50,000 rows, and building a model instance per row (`bulk_create`) cost more than
    reading the files.
    """
    generation = (
        Ingestion.objects.filter(pk=run.ingestion_id)
        .values_list("history_generation", flat=True)
        .get()
    )
    adapt = connection.ops.adapt_datetimefield_value
    loaded = adapt(loaded_at)
    rows = [
        (
            run.ingestion_id,
            generation,
            item["path"],
            item["size_bytes"],
            adapt(datetime.fromisoformat(item["modified_at"])) if item.get("modified_at") else None,
            "",
            item.get("rows", 0),
            run.pk,
            loaded,
        )
        for item in files
    ]
    if not rows:
        return
    table = connection.ops.quote_name(ProcessedFile._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(column) for column in HISTORY_COLUMNS)
    placeholders = ", ".join(["%s"] * len(HISTORY_COLUMNS))
    with connection.cursor() as cursor:
        # Only quoted names of our own table and columns are formatted in; values are params.
        sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
        cursor.executemany(sql, rows)


# --- staged runs: zero-downtime refresh ------------------------------------------------


# What a batch member's run says while it waits; its batch replaces it when it publishes
# or discards the version (`refresh.batches`).
BATCH_WAIT_NOTE = "The new version waits for the other tables of its batch."


class StagedRunFailedError(AutoloaderError):
    """Every file of a staged run failed: its new version is discarded."""

    error_code = "RUN_FAILED"


def stage_of(run: Run, *, engine: Engine, replacing: list[str] | None = None) -> Stage:
    """The run's staged version: begun on its first attempt, the same one when resumed.

    `replacing`: a selective refresh's version starts as the live rows less these files'.
    """
    if run.stage_write_to:
        return Stage(
            table_name=run.ingestion.table_identifier,
            write_to=run.stage_write_to,
            branch=run.stage_branch or None,
            base=run.stage_base,
        )
    stage = engine.stage_begin(
        run.ingestion.table_identifier, name=run.stage_name, replacing=replacing
    )
    run.stage_replacing = replacing
    Run.objects.filter(pk=run.pk).update(
        stage_replacing=replacing,
        stage_write_to=stage.write_to,
        stage_branch=stage.branch or "",
        stage_base=stage.base,
        publish_state=PublishState.STAGING,
    )
    run.stage_write_to, run.stage_branch, run.stage_base = (
        stage.write_to,
        stage.branch or "",
        stage.base,
    )
    return stage


def staged_publish(*, run: Run, engine: Engine) -> None:
    """Publish a staged run's version and its history; idempotent, resumable at any point.

    The table swap is one Iceberg commit (or rename); the history follows in one database
    transaction. Killed between the two, the resumed run finds `publishing` and redoes both
    (the swap is idempotent), so the history always ends matching the table.
    """
    Run.objects.filter(pk=run.pk).update(publish_state=PublishState.PUBLISHING)
    if run.stage_write_to:
        engine.stage_publish(stage_of(run, engine=engine))
    now = timezone.now()
    with transaction.atomic():
        if run.stage_replaces_history:
            history_archive(ingestion=run.ingestion)  # kept for undo, purged by retention
        elif run.stage_replacing is not None:
            history_replace_scope(ingestion=run.ingestion, paths=run.stage_replacing)
        committed = RunBatch.objects.filter(run=run, status=CommitStatus.COMMITTED)
        files = [
            item
            for batch_files in committed.values_list("files", flat=True)
            for item in batch_files
        ]
        known = processed_file_paths(ingestion=run.ingestion)
        _write_history(run, [item for item in files if item["path"] not in known], loaded_at=now)
        Run.objects.filter(pk=run.pk).update(publish_state=PublishState.PUBLISHED, published_at=now)
        hooks.publish("run.published", run=run)
    logger.info("run %s published its new version of %s", run.public_id, run.ingestion_id)


def staged_discard(*, run: Run, engine: Engine) -> None:
    """Throw a staged run's version away: the live table and the history stay as they were."""
    if run.stage_write_to:
        engine.stage_discard(stage_of(run, engine=engine))
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(publish_state=PublishState.DISCARDED)
        hooks.publish("run.discarded", run=run)


def _discard_staged(run: Run, engine: Engine | None) -> None:
    """A staged run that failed or was cancelled publishes nothing."""
    run.refresh_from_db()
    if not run.stage_name or run.publish_state in (
        PublishState.PUBLISHED,
        PublishState.PUBLISHING,
        PublishState.DISCARDED,
    ):
        return
    try:
        staged_discard(run=run, engine=engine or load_engine(run.ingestion.engine))
    except AutoloaderError:
        logger.warning("could not discard the staged version of run %s", run.public_id)


def batch_resolve(*, batch: RunBatch, engine: Engine) -> str:
    """Decide a PENDING batch from the table itself: committed if a snapshot names it."""
    snapshot = engine.find_snapshot(batch.table_name, key=SNAPSHOT_BATCH_KEY, value=batch.batch_key)
    if snapshot is not None:
        batch_mark_committed(batch=batch, snapshot_id=snapshot.snapshot_id)
        return CommitStatus.COMMITTED
    RunBatch.objects.filter(pk=batch.pk, status=CommitStatus.PENDING).update(
        status=CommitStatus.ABANDONED
    )
    return CommitStatus.ABANDONED


def batches_recover(*, ingestion: Ingestion, engine: Engine) -> dict[str, int]:
    """Resolve every PENDING batch an interrupted run of `ingestion` left behind."""
    outcome = {CommitStatus.COMMITTED: 0, CommitStatus.ABANDONED: 0}
    pending = RunBatch.objects.filter(
        run__ingestion=ingestion, status=CommitStatus.PENDING
    ).select_related("run")
    for batch in pending:
        outcome[batch_resolve(batch=batch, engine=engine)] += 1
    if any(outcome.values()):
        logger.info("recovered batches of %s: %s", ingestion.public_id, outcome)
    return outcome


# --- recovering runs whose worker died -------------------------------------------------


def runs_recover_stale() -> list[str]:
    """Re-queue runs whose worker died, so a live worker resumes them.

    A RUNNING run with a stale heartbeat goes back to QUEUED with a fresh task (its worker
    id cleared, so a worker that was only slow stops before its next commit). A QUEUED run
    whose task is no longer waiting (its worker died between taking the task and claiming
    the run) gets a fresh task too.
    """
    from django_tasks_db.models import DBTaskResult

    from .tasks import execute_run

    stale_before = timezone.now() - timedelta(seconds=settings.AUTOLOADER_RUN_STALE_SECONDS)
    requeued: list[str] = []
    for run in Run.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=stale_before):
        with transaction.atomic():
            taken = Run.objects.filter(
                pk=run.pk, status=RunStatus.RUNNING, heartbeat_at__lt=stale_before
            ).update(status=RunStatus.QUEUED, worker_id="")
            if taken:
                result = execute_run.enqueue(run.public_id)
                Run.objects.filter(pk=run.pk).update(task_id=str(result.id))
                requeued.append(run.public_id)
    for run in Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=stale_before):
        waiting = DBTaskResult.objects.filter(id=run.task_id, status="READY").exists()
        if not waiting:
            with transaction.atomic():
                result = execute_run.enqueue(run.public_id)
                Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
                    task_id=str(result.id)
                )
            requeued.append(run.public_id)
    if requeued:
        logger.warning("re-queued runs whose worker died: %s", ", ".join(requeued))
    close_old_connections()
    return requeued
