"""Executing a run: claim it, read and load its files batch by batch under the exactly-once
protocol (`ingestions.staging` records each commit), keep its heartbeat, finish it once."""

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, JSONField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from . import hooks
from .batching import BatchFitter, batch_failure, split_batches
from .engines import Engine, load_engine
from .engines.base import FileBatch
from .engines.writing import DataWriter, WrittenData
from .errors import AutoloaderError, RunCancelledError, RunOwnershipLostError
from .formats import counted
from .locations import source_open
from .models import (
    CommitStatus,
    OnPartialFailure,
    PublishState,
    Run,
    RunBatch,
    RunStatus,
)
from .quarantine import failures_record, quarantined_paths
from .run_heartbeat import RunHeartbeat
from .runs import SNAPSHOT_BATCH_KEY, SNAPSHOT_INGESTION_KEY, SNAPSHOT_RUN_KEY
from .scope import Scope, scope_replacing
from .selectors import paths_loaded_before, processed_file_paths, processed_file_signatures
from .source_changes import changed_files_classify, gone_files_apply
from .sources import SourceFile, list_source_files, read_source_file
from .sources.discovery import collector_paused
from .staging import (
    BATCH_WAIT_NOTE,
    StagedRunFailedError,
    _discard_staged,
    batch_mark_committed,
    batch_resolve,
    batches_recover,
    stage_of,
    staged_discard,
    staged_publish,
)

logger = logging.getLogger("ingestions.runs")  # one logger for a run's whole life


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
    heartbeat = RunHeartbeat(run_pk=run.pk, worker_id=worker_id)
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


@dataclass
class _LoadedFile:
    source: SourceFile
    rows: int


class _RunExecutor:
    """Loads an ingestion's new files in batches, each one Iceberg commit."""

    def __init__(self, *, run: Run, engine: Engine, heartbeat: RunHeartbeat):
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
        # Files whose rows a commit replaces (changed, or loaded before a history clear).
        self.replacing: set[str] = set()

    def execute(self) -> None:
        batches_recover(ingestion=self.ingestion, engine=self.engine)
        if self.run.stage_name and self.run.publish_state == PublishState.PUBLISHING:
            # Killed while publishing: every batch is in; finish the swap, nothing more.
            failed = self.run.files_failed
            self._finish_staged(
                RunStatus.PARTIAL_SUCCESS if failed else RunStatus.SUCCESS,
                error=failed_to_load(failed) if failed else "",
            )
            return
        # Checked against the tenant's locations now, not only when the ingestion was saved:
        # a revoked location or a symlink changed since then reaches nothing.
        self.source = source_open(tenant=self.ingestion.tenant, uri=self.ingestion.source_uri)
        listing, signatures = self._listing_and_history()
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
        history = self._known_paths(signatures)
        # Quarantined files are left out until released (`ingestions.quarantine`).
        set_aside = quarantined_paths(ingestion=self.ingestion)
        new_files, known_listed = [], 0
        for source in listing:
            if source.path in history:
                known_listed += 1
            elif source.path not in set_aside:
                new_files.append(source)
        gone: list[str] = []
        if not self.run.stage_name:
            if known_listed < len(history):  # some history files were not listed
                listed_paths = {source.path for source in listing}
                gone = sorted(path for path in history if path not in listed_paths)
            # A plain run: files loaded before that changed, and files loaded before a
            # history clear, replace their old rows instead of adding a second copy.
            reloads = changed_files_classify(
                run=self.run,
                ingestion=self.ingestion,
                listing=listing,
                signatures=signatures,
                set_aside=set_aside,
            )
            self.replacing = {source.path for source in reloads} | paths_loaded_before(
                ingestion=self.ingestion, paths=[source.path for source in new_files]
            )
            new_files = sorted([*new_files, *reloads], key=lambda source: source.path)
        self.run.refresh_from_db(fields=["files_loaded"])
        Run.objects.filter(pk=self.run.pk).update(
            files_found=self.run.files_loaded + len(new_files)
        )
        failed: list[dict] = []
        for batch in split_batches(new_files):
            self._check_cancel()
            batch_failures = self._load_batch(batch)
            failed.extend(batch_failures)
            if batch_failures:
                Run.objects.filter(pk=self.run.pk).update(
                    files_failed=len(failed), failed_files=failed
                )
                failures_record(run=self.run, failures=batch_failures)
        if gone:
            self._gone_files(gone, history_size=len(history))
        self.run.refresh_from_db()
        if failed and self.run.files_loaded == 0 and len(failed) == len(new_files):
            status = RunStatus.FAILED
            error = (
                "The file failed to load."
                if len(failed) == 1
                else f"All {failed_to_load(len(failed))}"
            )
        elif failed:
            status, error = RunStatus.PARTIAL_SUCCESS, failed_to_load(len(failed))
        else:
            status, error = RunStatus.SUCCESS, ""
        if self.run.stage_name:
            if status == RunStatus.FAILED:
                raise StagedRunFailedError(error)  # discarded by run_execute
            self._finish_staged(status, error=error)
            return
        _finish(self.run, self.heartbeat.worker_id, status, error=error)

    def _gone_files(self, gone: list[str], *, history_size: int) -> None:
        self._check_cancel()
        gone_files_apply(
            run=self.run,
            ingestion=self.ingestion,
            engine=self.engine,
            table_name=self.table_name,
            gone=gone,
            history_size=history_size,
        )

    def _listing_and_history(self) -> tuple[list[SourceFile], dict[str, tuple] | None]:
        """The listing, and the history's signatures (a plain run's: a staged run's history
        is its batches). An object store's listing waits on the network, so it runs on a
        thread meanwhile; a local one is Python work like the history read, and the two
        contending for the GIL took longer than one after the other (~80 ms against ~60 ms
        for 10,100 files, `bench/changed_files.py`)."""
        pattern = self.ingestion.source_pattern or None
        with collector_paused():  # an object per file, no cycles: see collector_paused
            if self.run.stage_name:
                return list_source_files(source=self.source, pattern=pattern), None
            if self.source.local_boundary is not None:
                listing = list_source_files(source=self.source, pattern=pattern)
                return listing, processed_file_signatures(ingestion=self.ingestion)
            with ThreadPoolExecutor(max_workers=1) as pool:
                listing_done = pool.submit(list_source_files, source=self.source, pattern=pattern)
                signatures = processed_file_signatures(ingestion=self.ingestion)
                return listing_done.result(), signatures

    def _known_paths(self, signatures: dict | None) -> set[str]:
        """Files not to load: the history (unless the staged version replaces it) and what
        this run committed already (a resumed staged run keeps its batches, not history)."""
        known = set()
        if not self.run.stage_replaces_history and not self.run.stage_scope:
            known = (
                set(signatures)
                if signatures is not None
                else processed_file_paths(ingestion=self.ingestion)
            )
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
            # The engine's writer takes each file's rows as they are read and writes them as
            # the table's data files; the commit then adds those files (`WrittenData`).
            writer = self.engine.open_writer(
                self.table_name, branch=self.stage.branch if self.stage else None
            )
            try:
                data, loaded, batch, ingested_at = self._read_files(batch, failures, writer)
                if writer is not None:
                    data = writer.finish()
                if loaded:
                    self._check_cancel()
            except BaseException:
                if writer is not None:
                    writer.discard()  # nothing was committed: no reader ever saw them
                raise
            if loaded:
                self._commit(
                    loaded,
                    rows=_rows_of(data),
                    data=data,
                    ingested_at=ingested_at,
                    writer=writer,
                )
                if data is not None and (
                    self.table_schema is None or not data.schema.equals(self.table_schema)
                ):
                    # The commit created the table or changed its schema: read it again.
                    self.table_schema_known = False
            elif writer is not None:
                writer.discard()
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
                sizes={path: source.size_bytes for path, source in files.items()},
                table_name=self.table_name,
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
                # An engine that wrote the rows while reading them set their `_ingested_at`.
                self._commit(loaded, rows=read.total_rows, files=read, ingested_at=read.ingested_at)
        finally:
            self.engine.release_files(read)
        return [batch_failure(files[path], exc) for path, exc in read.failures.items()]

    def _read_files(
        self, files: list[SourceFile], failures: list[dict], writer: DataWriter | None
    ) -> tuple[pa.Table | None, list[_LoadedFile], list[SourceFile], datetime]:
        """Read `files` until the batch's row or time bound; returns the data (None when no
        file had rows, or when `writer` took it), the files it holds, the files left unread
        and the batch's `_ingested_at`. Failures are added to `failures`."""
        max_rows = max(1, settings.AUTOLOADER_BATCH_MAX_ROWS)
        deadline = time.monotonic() + settings.AUTOLOADER_BATCH_MAX_SECONDS
        fitter = BatchFitter(
            schema=self._table_schema(),
            failures=failures,
            sink=writer.write if writer is not None else None,
        )
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
                failures.append(batch_failure(source, exc))
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
        return data, loaded, rest, fitter.ingested_at

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
        data: pa.Table | WrittenData | None = None,
        files: FileBatch | None = None,
        ingested_at: datetime | None = None,
        writer: DataWriter | None = None,
    ) -> None:
        """Commit a batch (exactly-once protocol): `data` read here (whole, or written by
        the engine's `writer` as uncommitted data files), or `files` read by the engine; no
        commit to the table when the files have no rows.

        The writer's files are deleted when the batch does not commit: when anything fails
        before the commit is attempted, and when the table, asked after a failed commit,
        does not hold the batch. A worker killed in between leaves them unreferenced, never
        visible: the orphan-file maintenance deletes them.
        """
        try:
            batch = self._record_pending(loaded, rows=rows, ingested_at=ingested_at)
            self.heartbeat.check()
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        properties = {
            SNAPSHOT_RUN_KEY: self.run.public_id,
            SNAPSHOT_BATCH_KEY: batch.batch_key,
            SNAPSHOT_INGESTION_KEY: self.ingestion.public_id,
        }
        branch = self.stage.branch if self.stage else None
        replacing = sorted(
            item.source.path for item in loaded if item.source.path in self.replacing
        )
        if not rows and not replacing:
            # No rows, so no Iceberg commit to wait for: the history is the whole batch.
            batch_mark_committed(batch=batch, snapshot_id=None)
            if writer is not None:
                writer.discard()
            return
        try:
            if not rows:
                # Files reloaded with no rows now (a header alone): their old rows go, in a
                # commit with the batch key (a killed worker's batch is resolved by it).
                if writer is not None:
                    writer.discard()
                self.engine.remove_source_files(self.table_name, replacing, properties=properties)
                snapshot_id = None
            elif files is not None:
                snapshot_id = self.engine.append_files(
                    self.table_name,
                    files,
                    properties=properties,
                    ingested_at=batch.ingested_at,
                    branch=branch,
                    replacing=replacing or None,
                )
            else:
                snapshot_id = self.engine.append(
                    self.table_name,
                    data,
                    branch=branch,
                    properties=properties,
                    replacing=replacing or None,
                )
        except Exception:
            # The commit may or may not have reached the table: let the table decide.
            if batch_resolve(batch=batch, engine=self.engine) == CommitStatus.ABANDONED and (
                writer is not None
            ):
                writer.discard()
            self._check_cancel()  # an append interrupted by a cancel ends the run CANCELLED
            raise
        batch_mark_committed(batch=batch, snapshot_id=snapshot_id)

    def _record_pending(
        self, loaded: list[_LoadedFile], *, rows: int, ingested_at: datetime | None
    ) -> RunBatch:
        """The batch's PENDING record, written before its commit is attempted."""
        return RunBatch.objects.create(
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
                    "modified_ns": item.source.modified_ns,
                    "rows": item.rows,
                    **({"etag": item.source.etag} if item.source.etag else {}),
                    **({"replaces": True} if item.source.path in self.replacing else {}),
                }
                for item in loaded
            ],
            rows=rows,
            bytes=sum(item.source.size_bytes for item in loaded),
            ingested_at=ingested_at or timezone.now(),
        )


def _rows_of(data: pa.Table | WrittenData | None) -> int:
    if isinstance(data, WrittenData):
        return data.rows
    return data.num_rows if data is not None else 0


def failed_to_load(count: int) -> str:
    """A run's error line: "1 file failed to load.", "5 files failed to load."."""
    return f"{counted(count, 'file')} failed to load."
