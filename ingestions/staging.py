"""The exactly-once batch protocol and staged runs.

Every batch of files is recorded as a PENDING `RunBatch` before it is committed to Iceberg,
the commit carries the batch key in its snapshot summary, and the history rows are written
together with the batch's COMMITTED mark (DESIGN §5.1). A staged run (a zero-downtime
refresh) loads a new version beside the live table and publishes it, history and all, in
one step when it ends; a failed or cancelled one publishes nothing.
"""

import logging
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import hooks
from .engines import Engine, Stage, load_engine
from .errors import AutoloaderError
from .models import CommitStatus, Ingestion, ProcessedFile, PublishState, Run, RunBatch
from .quarantine import failures_forget
from .runs import SNAPSHOT_BATCH_KEY
from .selectors import processed_file_paths
from .services import history_archive, history_replace_scope

logger = logging.getLogger("ingestions.runs")  # one logger for a run's whole life


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
            # A reloaded file's entry is replaced: its new size, time, rows and run.
            reloaded = [item["path"] for item in batch.files if item.get("replaces")]
            if reloaded:
                ProcessedFile.objects.filter(
                    ingestion_id=batch.run.ingestion_id, path__in=reloaded
                ).delete()
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
    "modified_ns",
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
            item.get("modified_ns"),
            item.get("etag", ""),
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
    """Decide a PENDING batch from the table itself: committed if a snapshot names it, or,
    once that snapshot was expired (a cluster's routine `expire_snapshots`), if the table
    holds rows marked with the batch's `_ingested_at`."""
    snapshot = engine.find_snapshot(batch.table_name, key=SNAPSHOT_BATCH_KEY, value=batch.batch_key)
    if snapshot is not None:
        batch_mark_committed(batch=batch, snapshot_id=snapshot.snapshot_id)
        return CommitStatus.COMMITTED
    if batch.ingested_at is not None and engine.holds_rows_ingested_at(
        batch.table_name, batch.ingested_at, branch=batch.run.stage_branch or None
    ):
        batch_mark_committed(batch=batch, snapshot_id=None)
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
