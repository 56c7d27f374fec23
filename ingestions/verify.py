"""Verify a table against its source and its history (issue 24): the report a data engineer
wants before and after any refresh.

Per file: the rows the table holds (one grouped scan of `_source_file`) against the rows
the history recorded; files changed since they loaded, gone from the source, never loaded;
rows whose `_source_file` the history does not know. Read-only: it changes no table, history
or run, and is gated like a dry-run (it lists the source).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.utils import timezone

from .engines import load_engine
from .errors import PermissionDeniedError
from .locations import source_open
from .models import Ingestion, ProcessedFile
from .ratelimits import expensive_read
from .selectors import processed_file_signature_rows
from .source_changes import file_changed
from .sources import SourceFile, list_source_files

# Files named per category (all are counted).
LISTED_PER_CATEGORY = 100
CATEGORIES = ("rows_differ", "missing_from_table", "changed", "gone", "never_loaded", "unknown")


@dataclass
class Verification:
    ingestion: Ingestion
    table_exists: bool
    table_rows: int
    history_files: int
    history_rows: int
    source_files: int
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, list] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        """The table holds exactly what the history says, and nothing the history does not
        know (changed, gone and new files are the source moving on, not an inconsistency)."""
        return not any(
            self.counts[name] for name in ("rows_differ", "missing_from_table", "unknown")
        )

    def as_response(self) -> dict:
        return {
            "ingestion_id": self.ingestion.public_id,
            "checked_at": timezone.now().isoformat(),
            "consistent": self.consistent,
            "table": {
                "identifier": self.ingestion.table_identifier,
                "exists": self.table_exists,
                "rows": self.table_rows,
            },
            "history": {"files": self.history_files, "rows": self.history_rows},
            "source": {"files": self.source_files},
            "counts": self.counts,
            "files": self.files,
        }


# Verification's stages, as `report(stage, done, total)` hears them (`models.VerifyStage`).
LISTING, HISTORY, SCANNING = "listing", "history", "scanning"
HISTORY_CHUNK = 10_000

ProgressReport = Callable[[str, int, int | None], None]


def ingestion_verify(*, ingestion: Ingestion, actor, engine=None) -> Verification:
    """Compare the table, the history and the source of `ingestion`, now (the synchronous
    form; `verify_jobs` runs the same in the worker, with progress).

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        RateLimitedError: the actor's or the tenant's listings are used up.
        SourceUnavailableError, SourceListingLimitError: the source cannot be listed.
    """
    verify_authorize(actor=actor, ingestion=ingestion)
    with expensive_read(tenant=ingestion.tenant, actor=actor):
        listing = source_listing(ingestion=ingestion)
    return verification_compute(
        ingestion=ingestion, engine=engine or load_engine(ingestion.engine), listing=listing
    )


def verify_authorize(*, actor, ingestion: Ingestion) -> None:
    """Who may verify: who may view the ingestion (it changes nothing).

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
    """
    if actor is not None and not actor.has_perm("ingestions.view_ingestion", ingestion):
        raise PermissionDeniedError("Your role does not allow this action (view ingestion).")


def source_listing(*, ingestion: Ingestion) -> dict[str, SourceFile]:
    """The ingestion's source files by relative path (one listing).

    Raises:
        SourceUnavailableError, SourceListingLimitError: the source cannot be listed.
    """
    source = source_open(tenant=ingestion.tenant, uri=ingestion.source_uri)
    return {
        item.path: item
        for item in list_source_files(source=source, pattern=ingestion.source_pattern or None)
    }


def verification_compute(
    *,
    ingestion: Ingestion,
    engine,
    listing: dict[str, SourceFile],
    report: ProgressReport | None = None,
) -> Verification:
    """The report from a listing of the source: the history read in chunks, the table's
    `_source_file` counted in one scan; `report(stage, done, total)` hears the progress.

    Raises:
        EngineError: the engine cannot read the table.
    """
    report = report or (lambda stage, done, total: None)
    history_total = ProcessedFile.objects.filter(ingestion=ingestion).count()
    report(HISTORY, 0, history_total)
    history: dict[str, tuple] = {}
    # The history as a run reads it (`selectors.processed_file_signature_rows`).
    for chunk in processed_file_signature_rows(ingestion=ingestion, chunk=HISTORY_CHUNK):
        for row in chunk:
            history[row[0]] = (row[1:6], row[6])
        report(HISTORY, len(history), max(history_total, len(history)))
    report(HISTORY, len(history), len(history))
    table_exists = engine.table_exists(ingestion.table_identifier)
    in_table = (
        engine.source_file_rows(
            ingestion.table_identifier,
            progress=lambda done, total: report(SCANNING, done, total),
        )
        if table_exists
        else {}
    )
    found: dict[str, list] = {name: [] for name in CATEGORIES}
    for path, (recorded, rows) in sorted(history.items()):
        held = in_table.get(path, 0)
        if held == 0 and rows:
            found["missing_from_table"].append({"path": path, "history_rows": rows})
        elif held != rows:
            found["rows_differ"].append({"path": path, "history_rows": rows, "table_rows": held})
        listed = listing.get(path)
        if listed is None:
            found["gone"].append({"path": path})
        elif file_changed(recorded, listed):
            found["changed"].append(
                {"path": path, "size_bytes": listed.size_bytes, "was_size_bytes": recorded[0]}
            )
    found["never_loaded"] = [{"path": path} for path in sorted(listing) if path not in history]
    found["unknown"] = [
        {"path": path, "table_rows": rows}
        for path, rows in sorted(in_table.items())
        if path not in history
    ]
    return Verification(
        ingestion=ingestion,
        table_exists=table_exists,
        table_rows=sum(in_table.values()),
        history_files=len(history),
        history_rows=sum(rows for _, rows in history.values()),
        source_files=len(listing),
        counts={name: len(items) for name, items in found.items()},
        files={name: items[:LISTED_PER_CATEGORY] for name, items in found.items()},
    )
