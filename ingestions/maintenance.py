"""Table maintenance the worker owns: expire old snapshots, compact small files, remove orphans.

The worker's reaper calls `maintenance_due` on every pass. A table is maintained at most
every AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS, while runs keep changing it (until a
snapshot retention after its last run), or sooner once AUTOLOADER_MAINTENANCE_AFTER_RUNS
runs wrote to it since its last pass, and never while its ingestion is busy: a run queued
or running, a refresh in flight, or a staged version waiting to be published. Each action
is recorded as a `TableMaintenance` row (see docs/maintenance.md).
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.utils import timezone

from . import hooks
from .engines import Engine, load_engine
from .engines.base import MaintenanceResult
from .errors import AutoloaderError
from .models import (
    ACTIVE_RUN_STATUSES,
    MAX_SNAPSHOT_RETENTION_HOURS,
    CommitStatus,
    Ingestion,
    MaintenanceAction,
    PublishState,
    Run,
    RunBatch,
    TableMaintenance,
)

logger = logging.getLogger("ingestions.maintenance")

# Engines whose tables the worker maintains (their class sets `Engine.can_maintain`). Named
# here so that finding the due tables stays one query, without building an engine.
MAINTAINED_ENGINES = ("iceberg",)

# The summary property of a maintenance commit: it names the action, never a run's batch.
SNAPSHOT_MAINTENANCE_KEY = "autoloader.maintenance"

# A PENDING batch is recorded just before its commit; snapshots from a little earlier are
# spared too, so that clocks a little apart cannot expire the one that names it.
PENDING_BATCH_MARGIN = timedelta(minutes=5)

# A staged version is built on a branch of the live table and published only if main has
# not moved: no maintenance commit may move it meanwhile.
_STAGED_STATES = (PublishState.STAGING, PublishState.PUBLISHING, PublishState.AWAITING_DECISION)


def maintenance_due(*, now: datetime | None = None) -> list[TableMaintenance]:
    """Maintain every table whose turn has come; the worker's reaper calls it each pass.

    One query when nothing is due. An action that fails is recorded with its error and
    tried again at the next turn.

    Returns:
        The actions run, oldest first.
    """
    now = now or timezone.now()
    done: list[TableMaintenance] = []
    for ingestion in ingestions_due_for_maintenance(now=now):
        done += maintenance_run(ingestion=ingestion, now=now)
    return done


def snapshot_retention(ingestion: Ingestion) -> timedelta:
    """How long the ingestion's table keeps its snapshots: its own policy, else the server's."""
    hours = ingestion.snapshot_retention_hours
    if hours is None:
        hours = settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS
    return timedelta(hours=hours)


def ingestions_due_for_maintenance(*, now: datetime) -> list[Ingestion]:
    """Idle ingestions of a maintained engine, with maintenance on, whose table a run
    changed, and either not maintained for an interval and changed by a run within their
    snapshot retention before the last pass (the pass after that is the one that expires the
    run's snapshots), or written to by AUTOLOADER_MAINTENANCE_AFTER_RUNS runs since the last
    pass (frequent small runs: their data files are compacted before they pile up)."""
    interval = timedelta(seconds=settings.AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS)
    after_runs = settings.AUTOLOADER_MAINTENANCE_AFTER_RUNS
    default = timedelta(hours=settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS)
    widest = timedelta(hours=MAX_SNAPSHOT_RETENTION_HOURS)
    last_pass = TableMaintenance.objects.filter(ingestion=OuterRef("pk")).order_by("-started_at")
    last_change = Run.objects.filter(ingestion=OuterRef("pk"), finished_at__isnull=False)

    def changed_since_last_pass_minus(retention: timedelta) -> Q:
        return Q(
            last_change_at__gte=ExpressionWrapper(
                F("last_pass_at") - Value(retention), output_field=DateTimeField()
            )
        )

    ingestions = (
        Ingestion.objects.filter(engine__in=MAINTAINED_ENGINES, maintenance_enabled=True)
        .select_related("tenant")
        .annotate(
            last_pass_at=Subquery(last_pass.values("started_at")[:1]),
            last_change_at=Subquery(last_change.order_by("-finished_at").values("finished_at")[:1]),
        )
        .filter(last_change_at__isnull=False)
    )
    due = Q(last_pass_at__isnull=True) | (
        Q(last_pass_at__lt=now - interval)
        # An ingestion's own retention is checked below: hours times an interval is not
        # portable SQL.
        & (
            (Q(snapshot_retention_hours__isnull=True) & changed_since_last_pass_minus(default))
            | (Q(snapshot_retention_hours__isnull=False) & changed_since_last_pass_minus(widest))
        )
    )
    if after_runs > 0:
        # The start of the `after_runs`-th newest run that wrote rows: once it is after the
        # last pass, that many runs wrote since (an index range of `after_runs` rows, not a
        # count of every run).
        nth_writing_run = (
            Run.objects.filter(ingestion=OuterRef("pk"), rows_written__gt=0)
            .order_by("-created_at")
            .values("created_at")[after_runs - 1 : after_runs]
        )
        ingestions = ingestions.annotate(nth_writing_run_at=Subquery(nth_writing_run))
        due |= Q(nth_writing_run_at__gt=F("last_pass_at"))
    ingestions = ingestions.filter(due)
    return [
        ingestion
        for ingestion in _idle(ingestions)
        if ingestion.last_pass_at is None
        or ingestion.last_change_at >= ingestion.last_pass_at - snapshot_retention(ingestion)
    ]


def maintenance_run(
    *, ingestion: Ingestion, engine: Engine | None = None, now: datetime | None = None
) -> list[TableMaintenance]:
    """Compact the ingestion's table, expire its old snapshots, then remove its orphan files.

    Stops before the next action when the ingestion became busy meanwhile; the actions
    themselves are safe against a run that starts during one (see docs/maintenance.md).

    Returns:
        The recorded actions.
    """
    # A `now` in the future (a test's) must not make a file written a moment ago look old.
    now = min(now or timezone.now(), timezone.now())
    engine = engine or load_engine(ingestion.engine)
    if not engine.can_maintain:
        return []
    table_name = ingestion.table_identifier
    actions: list[tuple[str, Callable[[], MaintenanceResult]]] = [
        (
            MaintenanceAction.COMPACT_FILES,
            lambda: engine.compact_files(
                table_name,
                small_file_bytes=settings.AUTOLOADER_COMPACT_SMALL_FILE_BYTES,
                min_files=settings.AUTOLOADER_COMPACT_MIN_FILES,
                max_bytes=settings.AUTOLOADER_COMPACT_MAX_BYTES,
                properties={SNAPSHOT_MAINTENANCE_KEY: MaintenanceAction.COMPACT_FILES.value},
            ),
        ),
        (
            MaintenanceAction.EXPIRE_SNAPSHOTS,
            lambda: engine.expire_snapshots(
                table_name,
                before=snapshot_expiry_cutoff(ingestion=ingestion, now=now),
                keep_last=settings.AUTOLOADER_SNAPSHOT_RETAIN_LAST,
            ),
        ),
        (
            MaintenanceAction.REMOVE_ORPHAN_FILES,
            lambda: engine.remove_orphan_files(
                table_name,
                older_than=now - timedelta(hours=settings.AUTOLOADER_ORPHAN_MIN_AGE_HOURS),
            ),
        ),
    ]
    done = []
    for action, work in actions:
        if not _idle(Ingestion.objects.filter(pk=ingestion.pk)).exists():
            logger.info("maintenance of %s stopped: the ingestion is busy", table_name)
            break
        done.append(_record(ingestion=ingestion, action=action, work=work))
    return done


def snapshot_expiry_cutoff(*, ingestion: Ingestion, now: datetime) -> datetime:
    """The time before which the ingestion's table's snapshots may be expired.

    Its snapshot retention ago, or earlier: the exactly-once recovery resolves a PENDING batch
    by finding the snapshot that names it (`runs.batch_resolve`), so nothing committed after
    the oldest PENDING batch of the table may go.
    """
    cutoff = now - snapshot_retention(ingestion)
    oldest_pending = RunBatch.objects.filter(
        table_name=ingestion.table_identifier, status=CommitStatus.PENDING
    ).aggregate(oldest=Min("created_at"))["oldest"]
    if oldest_pending is not None:
        cutoff = min(cutoff, oldest_pending - PENDING_BATCH_MARGIN)
    return cutoff


def maintenance_list(*, ingestion: Ingestion) -> QuerySet[TableMaintenance]:
    """The maintenance actions run on the ingestion's table, newest first."""
    return TableMaintenance.objects.filter(ingestion=ingestion)


def _idle(ingestions: QuerySet[Ingestion]) -> QuerySet[Ingestion]:
    """The ingestions with no run active, no refresh in flight and no staged version."""
    active_run = Run.objects.filter(ingestion=OuterRef("pk")).filter(
        Q(status__in=ACTIVE_RUN_STATUSES) | Q(publish_state__in=_STAGED_STATES)
    )
    # A refresh operation in flight: its app says which (`ingestions.hooks`).
    return hooks.busy_excluded(ingestions.filter(~Exists(active_run)))


def _record(
    *, ingestion: Ingestion, action: str, work: Callable[[], MaintenanceResult]
) -> TableMaintenance:
    # Recorded before the work: a worker dying in the middle still counts as a pass, so the
    # table waits for its next turn instead of being tried again at every reaper pass.
    record = TableMaintenance.objects.create(
        ingestion=ingestion,
        table_name=ingestion.table_identifier,
        action=action,
        started_at=timezone.now(),
    )
    try:
        result = work()
    except AutoloaderError as exc:
        record.error = str(exc)
        logger.warning("maintenance %s of %s failed: %s", action, record.table_name, exc)
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        record.finished_at = timezone.now()
        record.save(update_fields=["error", "finished_at"])
        raise
    else:
        record.snapshots_expired = result.snapshots_expired
        record.files_removed = result.files_removed
        record.files_compacted = result.files_compacted
        record.files_written = result.files_written
        record.bytes_freed = result.bytes_freed
        record.snapshot_id = result.snapshot_id
    record.finished_at = timezone.now()
    record.save()
    return record
