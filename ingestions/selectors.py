"""Reads of the domain, always scoped to a tenant, with the joins their callers need."""

from collections.abc import Container, Iterator

from django.db import connection
from django.db.models import (
    Aggregate,
    BigIntegerField,
    Case,
    Count,
    Func,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    When,
)

from .errors import IngestionNotFoundError, RunNotFoundError
from .models import ACTIVE_RUN_STATUSES, Ingestion, Membership, ProcessedFile, Run, Tenant


def ingestion_list(*, tenant: Tenant) -> QuerySet[Ingestion]:
    """Ingestions of a tenant, each annotated with its latest run's primary key."""
    latest_run = Run.objects.filter(ingestion=OuterRef("pk")).order_by("-created_at", "-id")
    return Ingestion.objects.filter(tenant=tenant).annotate(
        latest_run_pk=Subquery(latest_run.values("pk")[:1])
    )


def ingestion_get(*, tenant: Tenant, ingestion_id: str) -> Ingestion:
    """One ingestion by public id.

    Raises:
        IngestionNotFoundError: no such ingestion in this tenant (another tenant's included).
    """
    try:
        return Ingestion.objects.select_related("tenant").get(tenant=tenant, public_id=ingestion_id)
    except Ingestion.DoesNotExist:
        raise IngestionNotFoundError("Ingestion not found") from None


def runs_by_pk(pks) -> dict[int, Run]:
    return {run.pk: run for run in Run.objects.filter(pk__in=[pk for pk in pks if pk])}


def run_list(*, ingestion: Ingestion) -> QuerySet[Run]:
    return Run.objects.filter(ingestion=ingestion).select_related("ingestion")


def run_get(*, tenant: Tenant, run_id: str) -> Run:
    """One run by public id.

    Raises:
        RunNotFoundError: no such run in this tenant (another tenant's included).
    """
    try:
        return Run.objects.select_related("ingestion", "ingestion__tenant").get(
            public_id=run_id, ingestion__tenant=tenant
        )
    except Run.DoesNotExist:
        raise RunNotFoundError("Run not found") from None


def run_active(*, ingestion: Ingestion) -> Run | None:
    return Run.objects.filter(ingestion=ingestion, status__in=ACTIVE_RUN_STATUSES).first()


def run_latest(*, ingestion: Ingestion) -> Run | None:
    return Run.objects.filter(ingestion=ingestion).order_by("-created_at", "-id").first()


def processed_file_list(*, ingestion: Ingestion) -> QuerySet[ProcessedFile]:
    return ProcessedFile.objects.filter(ingestion=ingestion).select_related("run")


def processed_file_paths(*, ingestion: Ingestion) -> set[str]:
    """Every path in the history, as one set (one query; the history can be millions long)."""
    return set(
        ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", flat=True).iterator()
    )


# History paths joined into one string by the database per block of this many, in path order.
HISTORY_BLOCK = 65_536


def processed_file_paths_into(
    paths: set[str], *, ingestion: Ingestion, leave_out: Container[str] = ()
) -> None:
    """Add every path in the history to `paths` (except those in `leave_out`), block by
    block, so that another thread testing `paths` (a listing's `skip`) sees them arrive.

    The database joins each block's paths into one string (GROUP_CONCAT / STRING_AGG over
    the next HISTORY_BLOCK paths after the last block's, a range of the history's unique
    index): a million paths come as a few dozen rows, built while this process waits
    without holding the GIL, instead of a million Python rows that a listing thread
    would queue behind. A block whose count disagrees with its pieces (a path with a
    newline in it) is read again row by row.
    """
    live = ProcessedFile.all_generations.filter(
        ingestion=ingestion, generation=ingestion.history_generation
    )
    after = None
    while True:
        block = live.filter(path__gt=after) if after is not None else live
        block = block.order_by("path").values("path")[:HISTORY_BLOCK]
        found = block.aggregate(joined=JoinedPaths("path"), count=Count("path"), last=Max("path"))
        if not found["count"]:
            return
        pieces = found["joined"].split("\n")
        if len(pieces) != found["count"]:
            pieces = list(block.values_list("path", flat=True))
        if leave_out:
            paths.update(path for path in pieces if path not in leave_out)
        else:
            paths.update(pieces)
        if found["count"] < HISTORY_BLOCK:
            return
        after = found["last"]


class JoinedPaths(Aggregate):
    """A group's strings joined with newlines."""

    function = "STRING_AGG"
    template = "%(function)s(%(expressions)s, E'\\n')"
    output_field = TextField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            function="GROUP_CONCAT",
            template="%(function)s(%(expressions)s, char(10))",
            **extra_context,
        )


def processed_file_signatures(*, ingestion: Ingestion) -> dict[str, tuple]:
    """Every path in the history with the signature it had when loaded: (size, modification
    time in integer microseconds since the epoch or None, ETag or "", the change a run
    already reported, the listed time in nanoseconds or None) — what
    `source_changes.file_changed` compares a listed file with."""
    signatures = {}
    for rows in processed_file_signature_rows(ingestion=ingestion):
        for row in rows:
            signatures[row[0]] = row[1:6]
    return signatures


def processed_file_signature_rows(
    *, ingestion: Ingestion, chunk: int = 10_000
) -> Iterator[list[tuple]]:
    """The history in force, `chunk` rows at a time (a million entries never as one list):
    (path, then the signature `processed_file_signatures` gives, then the rows loaded).

    One query whose rows are plain integers and strings, read on a plain cursor, no model:
    an entry's listed time comes as it was stored (`modified_ns`); the database turns
    `modified_at` into microseconds only for entries without it (written before it was
    kept), so no row costs a datetime (Django's SQLite converter parses each with a regular
    expression) and none costs SQLite's date functions, which took half of this read
    (`bench/changed_files.py`, docs/benchmarks.md §11).
    """
    query = (
        ProcessedFile.objects.filter(ingestion=ingestion)
        .annotate(
            modified_us=Case(
                When(modified_ns__isnull=True, then=EpochMicros("modified_at")),
                default=None,
                output_field=BigIntegerField(),
            )
        )
        .values_list(
            "path", "size_bytes", "modified_us", "etag", "noticed_change", "modified_ns", "rows"
        )
        .query
    )
    sql, params = query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk):
            yield rows


class EpochMicros(Func):
    """A datetime column as integer microseconds since the epoch (NULL stays NULL), exact
    on both databases: no floating point."""

    arity = 1
    output_field = BigIntegerField()
    # EXTRACT gives numeric (exact) on PostgreSQL 14 and later.
    template = "CAST(EXTRACT(EPOCH FROM %(expressions)s) * 1000000 AS BIGINT)"

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]": the whole seconds
        # and the microseconds apart, since strftime('%s') of the whole text rounds
        # ".9996" up to the next second. ("%%%%s" is strftime's %s once Func and the
        # cursor have each unescaped it.)
        return self.as_sql(
            compiler,
            connection,
            template=(
                "CAST(strftime('%%%%s', substr(%(expressions)s, 1, 19)) AS INTEGER) * 1000000"
                " + CAST(substr(%(expressions)s, 21, 6) AS INTEGER)"
            ),
            **extra_context,
        )


def paths_loaded_before(*, ingestion: Ingestion, paths: list[str]) -> set[str]:
    """Which of `paths` an archived generation of the history holds: files whose rows may
    still be in the table although the live history does not know them (a history clear)."""
    found: set[str] = set()
    live = ingestion.history_generation
    for start in range(0, len(paths), 1000):
        found.update(
            ProcessedFile.all_generations.filter(
                ingestion=ingestion, path__in=paths[start : start + 1000]
            )
            .exclude(generation=live)
            .values_list("path", flat=True)
        )
    return found


HISTORY_PAGE_SIZE = 100


def history_page(
    *, ingestion: Ingestion, prefix: str = "", after: str = "", size: int | None = None
) -> tuple[list[ProcessedFile], str | None]:
    """One page of the processed-file history in path order, optionally of the paths that
    start with `prefix`, after the path `after` (a cursor, not an offset: one bounded index
    range read whatever the page, at a million rows as at ten).

    Returns:
        The page's files and the cursor of the next page (None on the last one).
    """
    size = size or HISTORY_PAGE_SIZE
    files = ProcessedFile.objects.filter(ingestion=ingestion).select_related("run")
    if prefix:
        files = files.filter(path__startswith=prefix)
    if after:
        files = files.filter(path__gt=after)
    page = list(files.order_by("path")[: size + 1])
    if len(page) > size:
        return page[:size], page[size - 1].path
    return page, None


def processed_file_summary(*, ingestion: Ingestion) -> dict:
    """Count, total bytes, first and last path (in path order, which dated folders make
    chronological) and load-time range of the history, in one query."""
    summary = ProcessedFile.objects.filter(ingestion=ingestion).aggregate(
        count=Count("id"),
        total_bytes=Sum("size_bytes"),
        oldest=Min("path"),
        newest=Max("path"),
        oldest_loaded_at=Min("loaded_at"),
        newest_loaded_at=Max("loaded_at"),
    )
    summary["total_bytes"] = summary["total_bytes"] or 0
    return summary


def table_state(*, ingestion: Ingestion) -> dict:
    """The destination table's state from the engine's metadata (never a scan).

    An unreachable engine does not fail the caller: the state says so in `error`.
    """
    from .engines import load_engine
    from .errors import AutoloaderError

    try:
        info = load_engine(ingestion.engine).describe_table(ingestion.table_identifier)
    except AutoloaderError as exc:
        return {
            "identifier": ingestion.table_identifier,
            "exists": None,
            "row_count": None,
            "size_bytes": None,
            "file_count": None,
            "snapshot_id": None,
            "last_updated_at": None,
            "error": str(exc),
        }
    return {
        "identifier": ingestion.table_identifier,
        "exists": info.exists,
        "row_count": info.row_count,
        "size_bytes": info.size_bytes,
        "file_count": info.file_count,
        "snapshot_id": info.snapshot_id,
        "last_updated_at": info.last_updated_at,
    }


TABLE_SAMPLE_ROWS = 50
TABLE_SNAPSHOTS_SHOWN = 50
SAMPLE_VALUE_CHARACTERS = 200


def table_overview(*, ingestion: Ingestion) -> dict:
    """The destination table for a person: its schema (lineage columns marked), its newest
    snapshots with the run or maintenance behind each, and its first rows (bounded).

    An unreachable engine does not fail the caller: the overview says so in `error`.
    """
    from .engines import load_engine
    from .engines.type_names import iceberg_type_name
    from .errors import AutoloaderError
    from .maintenance import SNAPSHOT_MAINTENANCE_KEY
    from .runs import SNAPSHOT_RUN_KEY
    from .sources.readers import METADATA_COLUMNS

    engine = load_engine(ingestion.engine)
    name = ingestion.table_identifier
    try:
        schema = engine.table_schema(name)
        if schema is None:
            return {"exists": False, "error": ""}
        every = engine.list_snapshots(name)
        lineage = engine.table_lineage(name)
        sample = engine.sample_rows(name, limit=TABLE_SAMPLE_ROWS)
    except AutoloaderError as exc:
        return {"exists": None, "error": str(exc)}
    columns = [
        {
            "name": field.name,
            "type": iceberg_type_name(field.type),  # the names Check source shows too
            "lineage": field.name in METADATA_COLUMNS,
        }
        for field in schema
    ]
    rows = []
    if sample is not None:
        for row in sample.slice(0, TABLE_SAMPLE_ROWS).to_pylist():
            rows.append([_shown(row.get(column["name"])) for column in columns])
    return {
        "exists": True,
        "error": "",
        "columns": columns,
        "rows": rows,
        **_snapshot_history(
            every, lineage, run_key=SNAPSHOT_RUN_KEY, maintenance_key=SNAPSHOT_MAINTENANCE_KEY
        ),
    }


def _snapshot_history(every, lineage, *, run_key: str, maintenance_key: str) -> dict:
    """Main's history as readers saw it, newest first (with each row's change in rows from
    the one before), and the other branches and tags in their own list. Without a lineage
    (an engine that cannot tell) every snapshot is main's."""

    def shown(snapshot) -> dict:
        return {
            "snapshot_id": snapshot.snapshot_id,
            "committed_at": snapshot.committed_at,
            "operation": snapshot.properties.get("operation", ""),
            "run_id": snapshot.properties.get(run_key, ""),
            "maintenance": snapshot.properties.get(maintenance_key, ""),
            "added_records": snapshot.properties.get("added-records", ""),
            "total_records": snapshot.properties.get("total-records", ""),
        }

    by_id = {snapshot.snapshot_id: snapshot for snapshot in every}
    main_ids = lineage.main if lineage is not None else [s.snapshot_id for s in every]
    main = [shown(by_id[snapshot_id]) for snapshot_id in main_ids if snapshot_id in by_id]
    previous = None
    for row in main:
        total = int(row["total_records"]) if row["total_records"] != "" else None
        row["rows_change"] = None if total is None or previous is None else total - previous
        previous = total if total is not None else previous
    refs = []
    for ref in lineage.refs if lineage is not None else []:
        snapshot = by_id.get(ref.snapshot_id)
        refs.append(
            {
                "name": ref.name,
                "kind": ref.kind,
                **(shown(snapshot) if snapshot else {"snapshot_id": ref.snapshot_id}),
            }
        )
    return {
        "snapshots": main[-TABLE_SNAPSHOTS_SHOWN:][::-1],
        # Commits neither on main nor the head of a branch or tag: a staged version's own.
        "snapshots_hidden": len(set(by_id) - set(main_ids) - {ref["snapshot_id"] for ref in refs}),
        "refs": refs,
    }


def _shown(value) -> str:
    """A cell as text, cut to SAMPLE_VALUE_CHARACTERS; None as an empty cell."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if len(text) > SAMPLE_VALUE_CHARACTERS:
        return text[: SAMPLE_VALUE_CHARACTERS - 1] + "…"
    return text


def memberships_of(*, user) -> list[Membership]:
    """The user's memberships, with their tenants, by tenant name."""
    return list(
        Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name")
    )
