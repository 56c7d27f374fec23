"""Dry-run planning: what an operation would do and cost, from the real listing and history."""

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

from django.conf import settings

from ingestions.engines import load_engine
from ingestions.formats import counted, size
from ingestions.locations import source_open
from ingestions.models import Ingestion
from ingestions.quarantine import quarantined_paths
from ingestions.scope import Scope, scope_replacing
from ingestions.selectors import processed_file_paths_into, processed_file_summary
from ingestions.sources import list_source_entries

from .end_state import plan_end_state
from .estimates import duration_model
from .models import OperationKind, StepName
from .specs import spec_of

BYTES_PER_GB = 1_000_000_000  # decimal GB, as cloud bills count them


def gigabytes(size_bytes: int) -> float:
    return round(size_bytes / BYTES_PER_GB, 3)


# The PRD's `impact` fields; the stored record also keeps bytes, seconds and the estimate's basis.
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


def public_estimate(record: dict) -> dict:
    """The duration in seconds and what it rests on, from a stored impact record.

    Beside `impact`, not in it: the PRD fixes the impact's fields (clients check them).
    Records made before seconds were estimated give nulls.
    """
    return {
        "estimated_duration_seconds": record.get("estimated_duration_seconds"),
        "source": record.get("throughput_source"),
        "basis": record.get("estimate_basis"),
        # Included in the seconds: the worker's Spark application must start first.
        "engine_startup_seconds": record.get("engine_startup_seconds"),
    }


@dataclass
class Impact:
    files_to_process: int
    files_skipped: int
    bytes_to_process: int
    estimated_data_size_gb: float
    estimated_cost_usd: float
    estimated_duration_minutes: int
    throughput_source: str  # "measured" (past runs) or "default" (the engine's calibration)
    estimated_duration_seconds: float = 0.0
    estimate_basis: str = ""  # e.g. "from the last 5 runs: 0.4 ms per file + 25.0 MB/s"
    engine_startup_seconds: float = 0.0  # in the seconds: the Spark application's start

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
    retain_days: int = 0  # what it replaces is kept this long, for undo (0: no undo)
    allowed: bool = False  # the previewing actor's role allows executing it
    quarantined: int = 0  # source files left out because they are quarantined
    scope: dict | None = None  # a selective full refresh's files and rows (`_scope_impact`)
    # The previewing actor's executions of this kind left in the current window
    # (`refresh.limits.Quota`); None when the kind is not rate-limited.
    quota: object | None = None
    # The source listing the plan was made from, (path, size, modified_ns) before any scope:
    # kept only inside `listings_kept()` (a conditional refresh's facts are read from it).
    listing: list[tuple[str, int, int | None]] | None = field(default=None, repr=False)
    # What the table holds once it is done (`refresh.end_state.plan_end_state`).
    end_state: dict | None = None

    def as_record(self) -> dict:
        record = asdict(self.impact)
        if self.scope is not None:
            # A plan_id vouches for this scope only (`refresh.preview.check_plan`).
            record["scope"] = self.scope["scope"]
        return record


# Off by default: a batch preview holds up to fifty plans, and must not hold fifty listings.
_keep_listing: ContextVar[bool] = ContextVar("keep_listing", default=False)


@contextmanager
def listings_kept() -> Iterator[None]:
    """Within it, every plan made keeps the listing it was made from (`Plan.listing`), so a
    caller reads facts from the very listing the preview counted instead of listing twice."""
    token = _keep_listing.set(True)
    try:
        yield
    finally:
        _keep_listing.reset(token)


def estimate_impact(
    *, ingestion: Ingestion, files_to_process: int, bytes_to_process: int, files_skipped: int
) -> Impact:
    model = duration_model(ingestion)
    seconds = model.seconds(files=files_to_process, size_bytes=bytes_to_process)
    minutes = max(1, math.ceil(seconds / 60)) if files_to_process else 0
    return Impact(
        files_to_process=files_to_process,
        files_skipped=files_skipped,
        bytes_to_process=bytes_to_process,
        estimated_data_size_gb=gigabytes(bytes_to_process),
        estimated_cost_usd=round(
            bytes_to_process / BYTES_PER_GB * float(ingestion.cost_per_gb_usd), 2
        ),
        estimated_duration_minutes=minutes,
        throughput_source=model.source,
        estimated_duration_seconds=round(seconds, 2),
        estimate_basis=model.explained(),
        engine_startup_seconds=model.startup_seconds if files_to_process else 0.0,
    )


def plan_operation(
    *, ingestion: Ingestion, kind: str, engine=None, mode: str = "", scope: Scope | None = None
) -> Plan:
    """What `kind` would do to `ingestion` now; reads the listing, history and table only.

    `mode` is the full refresh / fresh start mode ("atomic" or "drop_first"; see
    `refresh.preview.effective_mode`), which changes what the preview says of downtime.
    With `scope` (a selective full refresh), only the files in it are counted: those of the
    source are reloaded, and the rows of those in the history are replaced.
    """
    steps = list(spec_of(kind).steps)
    engine = engine or load_engine(ingestion.engine)
    # Checked against the tenant's locations before anything is listed.
    source = (
        source_open(tenant=ingestion.tenant, uri=ingestion.source_uri)
        if StepName.RUN_TRIGGERED in steps
        else None
    )
    # Quarantined files are left out of every run (`ingestions.quarantine`), so of previews.
    set_aside = quarantined_paths(ingestion=ingestion) if source is not None else set()
    # A fresh start skips the history's files: the listing thread drops each one it meets
    # in `known` as this thread fills it, so that such a file costs the walk no stat and
    # the preview no tuple (1,000,000 files: bench/dry_run_scale.py). A plan that keeps
    # its listing keeps all of it.
    known: set[str] = set()
    skip = known if kind == OperationKind.FRESH_START and not _keep_listing.get() else ()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The listing (storage I/O, no database) runs while this thread reads the history
        # and the table: a dry-run costs about the slower of the two, not the sum.
        listing = (
            pool.submit(
                list_source_entries,
                source=source,
                pattern=ingestion.source_pattern or None,
                skip=skip,
                # Counted and summed here; only a kept listing is read in path order.
                ordered=_keep_listing.get() or scope is not None,
            )
            if source is not None
            else None
        )
        if listing is not None and kind == OperationKind.FRESH_START:
            processed_file_paths_into(known, ingestion=ingestion, leave_out=set_aside)
        info = engine.describe_table(ingestion.table_identifier)
        history = processed_file_summary(ingestion=ingestion)
        entries = listing.result() if listing is not None else []
    if skip:
        # Files met before their history block arrived.
        entries = [entry for entry in entries if entry[0] not in known]
    table = {
        "table_name": ingestion.destination_table,
        "identifier": ingestion.table_identifier,
        "exists": info.exists,
        "row_count": info.row_count,
        "size_bytes": info.size_bytes,
        "snapshot_id": info.snapshot_id,
    }
    listed = {path for path, _, _ in entries} if scope is not None else set()
    if scope is not None:
        entries = [entry for entry in entries if scope.matches_listed(entry[0], entry[2])]
    if listing is not None:
        to_process = [
            size for path, size, _ in entries if path not in known and path not in set_aside
        ]
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
    plan.quarantined = sum(1 for path, _, _ in entries if path in set_aside)
    if listing is not None and _keep_listing.get():
        plan.listing = listing.result()
    if scope is not None:
        plan.scope = _scope_impact(ingestion=ingestion, scope=scope, entries=entries, listed=listed)
    plan.would_perform = [_would_perform(step, plan) for step in steps]
    plan.warnings = _warnings(plan)
    plan.notes = _notes(plan)
    plan.end_state = plan_end_state(plan)
    return plan


SCOPE_FILES_SHOWN = 100


def _scope_impact(*, ingestion: Ingestion, scope: Scope, entries, listed: set[str]) -> dict:
    """Which files a selective refresh reloads and whose rows it replaces, with the rows.

    The rows replaced are the history's count for each file (what its run wrote under its
    `_source_file`), so the preview is exact without reading the table.
    """
    matched = {path for path, _, _ in entries}
    replaced, in_history = scope_replacing(
        ingestion=ingestion, scope=scope, listed=listed, matched=matched
    )
    history = {entry.path: entry for entry in in_history}
    listed = matched
    paths = sorted(replaced)
    files = [
        {
            "path": path,
            "rows_replaced": history[path].rows if path in history else 0,
            "in_source": path in listed,
            "in_history": path in history,
        }
        for path in paths[:SCOPE_FILES_SHOWN]
    ]
    return {
        "scope": scope.as_json(),
        "description": scope.describe(),
        "files_in_scope": len(paths),
        "files_to_reload": len(listed),
        "files_gone_from_source": len(set(history) - listed),
        "history_files_in_scope": len(history),
        "rows_replaced": sum(entry.rows for entry in history.values()),
        "files": files,
        "files_truncated": len(paths) > SCOPE_FILES_SHOWN,
        # Named in the request but neither in the source nor in the history: a typo.
        "unknown_files": [path for path in scope.files if path not in replaced][:SCOPE_FILES_SHOWN],
    }


def _would_perform(step: str, plan: Plan) -> dict:
    if plan.scope is not None and step != StepName.RUN_TRIGGERED:
        return {"operation": step, "details": _scoped_step_details(step, plan)}
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


def _scoped_step_details(step: str, plan: Plan) -> dict:
    scope = plan.scope
    if step == StepName.TABLE_DROPPED:
        rows = plan.table["row_count"]
        return {
            "table_name": plan.table["table_name"],
            "scope": scope["description"],
            "rows_replaced": scope["rows_replaced"],
            "rows_kept": None if rows is None else max(0, rows - scope["rows_replaced"]),
        }
    return {
        "scope": scope["description"],
        "files_to_clear": scope["history_files_in_scope"],
    }


def _date_range(history: dict) -> str | None:
    oldest, newest = history.get("oldest_loaded_at"), history.get("newest_loaded_at")
    if not oldest or not newest:
        return None
    return f"{oldest:%Y-%m-%d} to {newest:%Y-%m-%d}"


def _warnings(plan: Plan) -> list[str]:
    impact, warnings = plan.impact, []
    if plan.scope is not None:
        scope = plan.scope
        warnings.append(
            f"This will reprocess {counted(scope['files_to_reload'], 'file')} in scope "
            f"({scope['description']}, {size(impact.bytes_to_process)}) and replace "
            f"{counted(scope['rows_replaced'], 'row')} of {plan.table['table_name']} "
            "when the run ends"
        )
        if unknown := scope["unknown_files"]:
            warnings.append(
                f"{counted(len(unknown), 'named file')} {'is' if len(unknown) == 1 else 'are'} "
                f"neither in the source nor in the history (e.g. {unknown[0]}): "
                "executing is refused"
            )
        elif not scope["files_in_scope"]:
            warnings.append("No file of the source or the history is in the scope")
        if scope["files_gone_from_source"]:
            warnings.append(
                f"{counted(scope['files_gone_from_source'], 'file')} in scope "
                f"{'is' if scope['files_gone_from_source'] == 1 else 'are'} no longer in the "
                "source: their rows are removed"
            )
    elif plan.kind == OperationKind.FULL_REFRESH:
        warnings.append(
            f"This will reprocess ALL {counted(impact.files_to_process, 'file')} from scratch "
            f"({size(impact.bytes_to_process)})"
        )
    if impact.estimated_cost_usd > settings.REFRESH_HIGH_COST_USD:
        warnings.append(f"HIGH COST OPERATION: Estimated ${impact.estimated_cost_usd:,.2f}")
    if impact.files_to_process > settings.REFRESH_LARGE_OPERATION_FILES:
        warnings.append(f"LARGE OPERATION: Processing {counted(impact.files_to_process, 'file')}")
    if StepName.TABLE_DROPPED in plan.steps and plan.table["exists"] and plan.scope is None:
        fate = "replaced when the run ends" if plan.mode == "atomic" else "deleted"
        warnings.append(
            f"Current table {plan.table['table_name']} ({counted(plan.table['row_count'], 'row')}, "
            f"{size(plan.table['size_bytes'])}) will be {fate}"
        )
    if (
        StepName.PROCESSED_FILES_CLEARED in plan.steps
        and plan.history["count"]
        and plan.scope is None
    ):
        warnings.append(
            f"The history of {counted(plan.history['count'], 'processed file')} will be cleared"
        )
        if (
            StepName.TABLE_DROPPED not in plan.steps
            and plan.table["exists"]
            and plan.table["row_count"]
        ):
            # The rows stay while the history goes: say what the next run will do to the
            # table before anyone confirms (issue 24).
            warnings.append(
                f"RELOAD: {plan.table['table_name']} keeps its "
                f"{counted(plan.table['row_count'], 'row')}, and the next run loads every "
                "source file again, each replacing its own rows in one commit: no row is there "
                "twice. Rows of files no longer in the source stay"
            )
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
    if plan.quarantined:
        notes.append(
            f"{plan.quarantined:,} quarantined files are left out (release them on the "
            "ingestion's history page to load them)"
        )
    if plan.impact.files_to_process:
        notes.append(
            f"Estimated duration {plan.impact.estimated_duration_seconds:,.1f} s, "
            f"{plan.impact.estimate_basis}"
        )
    return notes


def _kind_notes(plan: Plan) -> list[str]:
    history_count = plan.history["count"]
    if plan.scope is not None:
        return [
            f"Only the rows of the {counted(plan.scope['files_in_scope'], 'file')} in scope are "
            "replaced (found by _source_file), in one commit when the run ends; every other "
            "row and history entry is untouched"
        ]
    if plan.kind == OperationKind.FRESH_START:
        return [
            "Table will be replaced by a new version when the run ends"
            if plan.mode == "atomic"
            else "Table will be dropped and recreated",
            f"Only {counted(plan.impact.files_to_process, 'NEW file')} will be processed",
            f"Processed file history preserved ({counted(history_count, 'file')} "
            f"{'remains' if history_count == 1 else 'remain'} marked as processed and will be "
            "skipped)",
        ]
    if plan.kind == OperationKind.FULL_REFRESH and plan.mode == "atomic":
        return ["Every source file is loaded again into a new version of the table"]
    if plan.kind == OperationKind.FULL_REFRESH:
        return [
            "Table will be dropped, the history cleared, and every source file loaded again",
        ]
    if plan.kind == OperationKind.DROP_TABLE:
        return [
            f"Processed file history NOT affected ({counted(history_count, 'file')} still "
            "marked as processed)",
            "No ingestion run triggered",
            "Table will be recreated on next run",
        ]
    return [
        "The table is not changed now: it keeps every row",
        "No ingestion run triggered: the next run loads every source file again and appends "
        "its rows",
    ]
