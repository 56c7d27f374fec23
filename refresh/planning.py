"""Dry-run planning: what an operation would do and cost, from the real listing and history."""

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db.models import F

from ingestions.engines import load_engine
from ingestions.locations import source_open
from ingestions.models import Ingestion, Run, RunStatus
from ingestions.selectors import processed_file_paths, processed_file_summary
from ingestions.sources import list_source_entries

from .models import OperationKind, StepName

BYTES_PER_GB = 1_000_000_000  # decimal GB, as cloud bills count them

STEPS_BY_KIND = {
    OperationKind.FULL_REFRESH: [
        StepName.TABLE_DROPPED,
        StepName.PROCESSED_FILES_CLEARED,
        StepName.RUN_TRIGGERED,
    ],
    OperationKind.FRESH_START: [StepName.TABLE_DROPPED, StepName.RUN_TRIGGERED],
    OperationKind.DROP_TABLE: [StepName.TABLE_DROPPED],
    OperationKind.CLEAR_PROCESSED_FILES: [StepName.PROCESSED_FILES_CLEARED],
}


def gigabytes(size_bytes: int) -> float:
    return round(size_bytes / BYTES_PER_GB, 3)


def size_text(size_bytes: int) -> str:
    """A size for people: GB with one decimal from 1 GB, else MB or KB (decimal units)."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:,.1f} {unit}"
    return f"{size_bytes / 1e3:,.1f} KB"


# The PRD's `impact` fields; the stored record also keeps bytes and the throughput source.
IMPACT_FIELDS = (
    "files_to_process",
    "files_skipped",
    "estimated_data_size_gb",
    "estimated_cost_usd",
    "estimated_duration_minutes",
)


def public_impact(record: dict) -> dict:
    """The PRD's `impact` object from a stored impact record."""
    return {key: record.get(key) for key in IMPACT_FIELDS}


@dataclass
class Impact:
    files_to_process: int
    files_skipped: int
    bytes_to_process: int
    estimated_data_size_gb: float
    estimated_cost_usd: float
    estimated_duration_minutes: int
    throughput_source: str  # "measured" (past runs) or "default" (setting)

    def as_response(self) -> dict:
        """The PRD's `impact` object (internal fields left out)."""
        return public_impact(asdict(self))


@dataclass
class Plan:
    """Everything a dry-run shows; also the basis of the executed operation's record."""

    kind: str
    ingestion: Ingestion
    steps: list[str]
    table: dict  # table_name, exists, row_count, size_bytes, snapshot_id
    history: dict  # count, total_bytes, oldest, newest, oldest_loaded_at, newest_loaded_at
    impact: Impact
    would_perform: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mode: str = ""  # "atomic" / "drop_first" for a full refresh or fresh start
    plan_id: str | None = None  # set once the dry-run is recorded
    plan_required: bool = False  # executing needs this plan_id (cost above the threshold)

    def as_record(self) -> dict:
        return asdict(self.impact)


def measured_throughput_bytes_per_second(ingestion: Ingestion) -> float | None:
    """Bytes per second over the ingestion's last successful runs that read something."""
    recent = (
        Run.objects.filter(
            ingestion=ingestion,
            status=RunStatus.SUCCESS,
            bytes_read__gt=0,
            started_at__isnull=False,
            finished_at__gt=F("started_at"),
        )
        .order_by("-finished_at")
        .values("bytes_read", "started_at", "finished_at")[:10]
    )
    total_bytes = total_seconds = 0.0
    for run in recent:
        total_bytes += run["bytes_read"]
        total_seconds += (run["finished_at"] - run["started_at"]).total_seconds()
    if total_bytes <= 0 or total_seconds <= 0:
        return None
    return total_bytes / total_seconds


def estimate_impact(
    *, ingestion: Ingestion, files_to_process: int, bytes_to_process: int, files_skipped: int
) -> Impact:
    throughput = measured_throughput_bytes_per_second(ingestion)
    source = "measured"
    if throughput is None:
        throughput = settings.REFRESH_DEFAULT_THROUGHPUT_MB_PER_S * 1_000_000
        source = "default"
    minutes = 0
    if files_to_process:
        minutes = max(1, math.ceil(bytes_to_process / throughput / 60))
    size_gb = gigabytes(bytes_to_process)
    return Impact(
        files_to_process=files_to_process,
        files_skipped=files_skipped,
        bytes_to_process=bytes_to_process,
        estimated_data_size_gb=size_gb,
        estimated_cost_usd=round(
            bytes_to_process / BYTES_PER_GB * float(ingestion.cost_per_gb_usd), 2
        ),
        estimated_duration_minutes=minutes,
        throughput_source=source,
    )


def plan_operation(*, ingestion: Ingestion, kind: str, engine=None, mode: str = "") -> Plan:
    """What `kind` would do to `ingestion` now; reads the listing, history and table only.

    `mode` is the full refresh / fresh start mode ("atomic" or "drop_first"; see
    `refresh.services.effective_mode`), which changes what the preview says of downtime.
    """
    steps = STEPS_BY_KIND[OperationKind(kind)]
    engine = engine or load_engine(ingestion.engine)
    # Checked against the tenant's locations before anything is listed.
    source = (
        source_open(tenant=ingestion.tenant, uri=ingestion.source_uri)
        if StepName.RUN_TRIGGERED in steps
        else None
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The listing (object-store I/O, no database) runs while this thread reads the
        # history: a 100,000-file dry-run costs about the slower of the two, not the sum.
        listing = (
            pool.submit(
                list_source_entries,
                source=source,
                pattern=ingestion.source_pattern or None,
            )
            if source is not None
            else None
        )
        info = engine.describe_table(ingestion.table_identifier)
        history = processed_file_summary(ingestion=ingestion)
        known = (
            processed_file_paths(ingestion=ingestion)
            if listing is not None and kind == OperationKind.FRESH_START
            else set()
        )
        entries = listing.result() if listing is not None else []
    table = {
        "table_name": ingestion.destination_table,
        "identifier": ingestion.table_identifier,
        "exists": info.exists,
        "row_count": info.row_count,
        "size_bytes": info.size_bytes,
        "snapshot_id": info.snapshot_id,
    }
    if listing is not None:
        to_process = [size for path, size, _ in entries if path not in known]
        impact = estimate_impact(
            ingestion=ingestion,
            files_to_process=len(to_process),
            bytes_to_process=sum(to_process),
            files_skipped=history["count"] if kind == OperationKind.FRESH_START else 0,
        )
    else:
        impact = estimate_impact(
            ingestion=ingestion, files_to_process=0, bytes_to_process=0, files_skipped=0
        )

    plan = Plan(
        kind=kind,
        ingestion=ingestion,
        steps=steps,
        table=table,
        history=history,
        impact=impact,
        mode=mode,
    )
    plan.would_perform = [_would_perform(step, plan) for step in steps]
    plan.warnings = _warnings(plan)
    plan.notes = _notes(plan)
    return plan


def _would_perform(step: str, plan: Plan) -> dict:
    if step == StepName.TABLE_DROPPED:
        details = {
            "table_name": plan.table["table_name"],
            "table_exists": plan.table["exists"],
            "current_size_gb": gigabytes(plan.table["size_bytes"]),
            "current_row_count": plan.table["row_count"],
        }
    elif step == StepName.PROCESSED_FILES_CLEARED:
        details = {
            "files_to_clear": plan.history["count"],
            "date_range": _date_range(plan.history),
            "oldest_file": plan.history["oldest"],
            "newest_file": plan.history["newest"],
        }
    else:
        details = {
            "files_to_process": plan.impact.files_to_process,
            "data_size_gb": plan.impact.estimated_data_size_gb,
        }
        if plan.kind == OperationKind.FRESH_START:
            details["new_files_only"] = True
    return {"operation": step, "details": details}


def _date_range(history: dict) -> str | None:
    oldest, newest = history.get("oldest_loaded_at"), history.get("newest_loaded_at")
    if not oldest or not newest:
        return None
    return f"{oldest:%Y-%m-%d} to {newest:%Y-%m-%d}"


def _warnings(plan: Plan) -> list[str]:
    impact, warnings = plan.impact, []
    if plan.kind == OperationKind.FULL_REFRESH:
        warnings.append(
            f"This will reprocess ALL {impact.files_to_process:,} files from scratch "
            f"({size_text(impact.bytes_to_process)})"
        )
    if impact.estimated_cost_usd > settings.REFRESH_HIGH_COST_USD:
        warnings.append(f"HIGH COST OPERATION: Estimated ${impact.estimated_cost_usd:,.2f}")
    if impact.files_to_process > settings.REFRESH_LARGE_OPERATION_FILES:
        warnings.append(f"LARGE OPERATION: Processing {impact.files_to_process:,} files")
    if StepName.TABLE_DROPPED in plan.steps and plan.table["exists"]:
        fate = "replaced when the run ends" if plan.mode == "atomic" else "deleted"
        warnings.append(
            f"Current table {plan.table['table_name']} ({plan.table['row_count']:,} rows, "
            f"{size_text(plan.table['size_bytes'])}) will be {fate}"
        )
    if StepName.PROCESSED_FILES_CLEARED in plan.steps and plan.history["count"]:
        warnings.append(f"The history of {plan.history['count']:,} processed files will be cleared")
    if plan.ingestion.protected:
        warnings.append("This ingestion is protected: executing will be refused (423)")
    if impact.estimated_cost_usd > settings.REFRESH_PLAN_REQUIRED_ABOVE_USD:
        warnings.append(
            f"Above ${settings.REFRESH_PLAN_REQUIRED_ABOVE_USD:,.0f}: send this dry-run's "
            "plan_id with confirm=true to execute"
        )
    return warnings


def _notes(plan: Plan) -> list[str]:
    notes = _kind_notes(plan)
    if plan.mode == "atomic":
        notes.append(
            "No downtime: the table keeps its current rows until the new version is "
            "published, in one step, when the run ends; a failed or cancelled run "
            "publishes nothing"
        )
    elif plan.mode == "drop_first":
        notes.append(
            "drop_first: the table is dropped at once and stays empty or missing until the "
            "run has loaded it again"
        )
    return notes


def _kind_notes(plan: Plan) -> list[str]:
    history_count = plan.history["count"]
    if plan.kind == OperationKind.FRESH_START:
        return [
            "Table will be replaced by a new version when the run ends"
            if plan.mode == "atomic"
            else "Table will be dropped and recreated",
            f"Only {plan.impact.files_to_process:,} NEW files will be processed",
            f"Processed file history preserved ({history_count:,} files remain marked as "
            "processed and will be skipped)",
        ]
    if plan.kind == OperationKind.FULL_REFRESH and plan.mode == "atomic":
        return ["Every source file is loaded again into a new version of the table"]
    if plan.kind == OperationKind.FULL_REFRESH:
        return [
            "Table will be dropped, the history cleared, and every source file loaded again",
        ]
    if plan.kind == OperationKind.DROP_TABLE:
        return [
            f"Processed file history NOT affected ({history_count:,} files still marked as "
            "processed)",
            "No ingestion run triggered",
            "Table will be recreated on next run",
        ]
    return [
        "The table is NOT affected",
        "No ingestion run triggered: the next run loads every source file again",
    ]
