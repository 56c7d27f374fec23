"""Verify a table against its source and its history (issue 24): the report a data engineer
wants before and after any refresh.

Per file: the rows the table holds (one grouped scan of `_source_file`) against the rows
the history recorded; files changed since they loaded, gone from the source, never loaded;
rows whose `_source_file` the history does not know. Read-only: it changes no table, history
or run, and is gated like a dry-run (it lists the source).
"""

from dataclasses import dataclass, field

from django.utils import timezone

from .engines import load_engine
from .errors import PermissionDeniedError
from .locations import source_open
from .models import Ingestion, ProcessedFile
from .ratelimits import expensive_read
from .source_changes import file_changed
from .sources import list_source_files

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


def ingestion_verify(*, ingestion: Ingestion, actor, engine=None) -> Verification:
    """Compare the table, the history and the source of `ingestion`.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        RateLimitedError: the actor's or the tenant's listings are used up.
        SourceUnavailableError, SourceListingLimitError: the source cannot be listed.
    """
    if actor is not None and not actor.has_perm("ingestions.view_ingestion", ingestion):
        raise PermissionDeniedError("Your role does not allow this action (view ingestion).")
    engine = engine or load_engine(ingestion.engine)
    with expensive_read(tenant=ingestion.tenant, actor=actor):
        source = source_open(tenant=ingestion.tenant, uri=ingestion.source_uri)
        listing = {
            item.path: item
            for item in list_source_files(source=source, pattern=ingestion.source_pattern or None)
        }
    history = {
        path: ((size, modified_at, etag), rows)
        for path, size, modified_at, etag, rows in ProcessedFile.objects.filter(ingestion=ingestion)
        .values_list("path", "size_bytes", "modified_at", "etag", "rows")
        .iterator(chunk_size=10_000)
    }
    table_exists = engine.table_exists(ingestion.table_identifier)
    in_table = engine.source_file_rows(ingestion.table_identifier) if table_exists else {}
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
