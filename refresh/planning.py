"""Dry-run planning: what an operation would do and cost, from the real listing and history."""

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.db.models import F

from ingestions.engines import load_engine
from ingestions.formats import counted
from ingestions.locations import source_open
from ingestions.models import Ingestion, Run, RunStatus
from ingestions.quarantine import quarantined_paths
from ingestions.scope import Scope, scope_replacing
from ingestions.selectors import processed_file_paths, processed_file_summary
from ingestions.sources import list_source_entries

from .end_state import plan_end_state
from .models import OperationKind, StepName
from .specs import spec_of

BYTES_PER_GB = 1_000_000_000  # decimal GB, as cloud bills count them


def gigabytes(size_bytes: int) -> float:
    return round(size_bytes / BYTES_PER_GB, 3)


def size_text(size_bytes: int) -> str:
    """A size for people: GB with one decimal from 1 GB, else MB or KB (decimal units)."""
    for unit, factor in (("GB", 1e9), ("MB", 1e6)):
        if size_bytes >= factor:
            return f"{size_bytes / factor:,.1f} {unit}"
    return f"{size_bytes / 1e3:,.1f} KB"


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
    }


@dataclass
class Impact:
    files_to_process: int
    files_skipped: int
    bytes_to_process: int
    estimated_data_size_gb: float
    estimated_cost_usd: float
    estimated_duration_minutes: int
    throughput_source: str  # "measured" (past runs) or "default" (settings)
    estimated_duration_seconds: float = 0.0
    estimate_basis: str = ""  # e.g. "from the last 5 runs: 0.4 ms per file + 25.0 MB/s"

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


# --- How long a load takes -------------------------------------------------------------
# A run costs a fixed start (listing, history, the run's records), a cost per file (open,
# parse, history row, a share of a batch's commit) and a cost per byte (read, write). Bytes
# alone cannot tell 200,000 small files from one large one, so both are fitted on the
# ingestion's own past runs.


@dataclass(frozen=True)
class DurationModel:
    """`seconds = start_seconds + seconds_per_file * files + seconds_per_byte * bytes`."""

    start_seconds: float
    seconds_per_file: float
    seconds_per_byte: float
    source: str  # "measured" (past runs) or "default" (settings)
    basis: str  # where the costs come from, for people: "from the last 5 runs"

    def seconds(self, *, files: int, size_bytes: int) -> float:
        """Expected seconds to load `files` files of `size_bytes` in all (0 for nothing)."""
        if not files:
            return 0.0
        return (
            self.start_seconds + self.seconds_per_file * files + self.seconds_per_byte * size_bytes
        )

    def explained(self) -> str:
        """The basis and the costs: "from the last 5 runs: 0.4 ms per file + 25.0 MB/s"."""
        terms = []
        if self.seconds_per_file:
            terms.append(f"{self.seconds_per_file * 1000:.2g} ms per file")
        if self.seconds_per_byte:
            terms.append(f"{size_text(round(1 / self.seconds_per_byte))}/s")
        if self.start_seconds:
            terms.append(f"{self.start_seconds:.2g} s to start")
        return f"{self.basis}: {' + '.join(terms) or 'no measurable cost'}"


def default_duration_model() -> DurationModel:
    return DurationModel(
        start_seconds=settings.REFRESH_DEFAULT_START_SECONDS,
        seconds_per_file=settings.REFRESH_DEFAULT_SECONDS_PER_FILE,
        seconds_per_byte=1 / (settings.REFRESH_DEFAULT_THROUGHPUT_MB_PER_S * 1_000_000),
        source="default",
        basis="from defaults (no measured run yet)",
    )


def measured_runs(ingestion: Ingestion) -> list[tuple[int, int, float]]:
    """(files, bytes, seconds) of the ingestion's last finished runs that loaded something.

    Resumed runs are left out: their wall time includes the time their first worker was dead.
    """
    recent = (
        Run.objects.filter(
            ingestion=ingestion,
            status__in=(RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS),
            files_loaded__gt=0,
            attempts__lte=1,
            started_at__isnull=False,
            finished_at__gt=F("started_at"),
        )
        .order_by("-finished_at", "-id")
        .values("files_loaded", "files_failed", "bytes_read", "started_at", "finished_at")
    )[: settings.REFRESH_ESTIMATE_RUNS]
    return [
        (
            run["files_loaded"] + run["files_failed"],
            run["bytes_read"],
            (run["finished_at"] - run["started_at"]).total_seconds(),
        )
        for run in recent
    ]


def duration_model(ingestion: Ingestion) -> DurationModel:
    """The ingestion's costs: fitted on its last runs, else the defaults scaled to them.

    - At least `REFRESH_ESTIMATE_MIN_RUNS` runs of two or more shapes (files, bytes): the
      costs are a non-negative least-squares fit of the runs' measured seconds.
    - Fewer runs, runs all of one shape, or a fit with no cost per file or byte: the default
      costs, scaled by one factor so that they add up to the runs' measured seconds.
    - No run: the defaults (`REFRESH_DEFAULT_*`).
    """
    runs = measured_runs(ingestion)
    default = default_duration_model()
    if not runs:
        return default
    label = "the last run" if len(runs) == 1 else f"the last {len(runs)} runs"
    shapes = {(files, size_bytes) for files, size_bytes, _ in runs}
    if len(runs) >= settings.REFRESH_ESTIMATE_MIN_RUNS and len(shapes) >= 2:
        fitted = fit_costs(runs)
        if fitted is not None and (fitted[1] > 0 or fitted[2] > 0):
            return DurationModel(*fitted, source="measured", basis=f"from {label}")
    predicted = sum(default.seconds(files=files, size_bytes=size) for files, size, _ in runs)
    factor = sum(seconds for *_, seconds in runs) / predicted if predicted else 1.0
    return DurationModel(
        start_seconds=default.start_seconds * factor,
        seconds_per_file=default.seconds_per_file * factor,
        seconds_per_byte=default.seconds_per_byte * factor,
        source="measured",
        basis=f"from the defaults scaled to {label}",
    )


def fit_costs(runs: list[tuple[int, int, float]]) -> tuple[float, float, float] | None:
    """(start, per file, per byte) seconds, all >= 0, that best explain the runs' seconds.

    Least squares on seconds: long runs weigh most, as they should (they are what an
    estimate is for, and their times are the least noisy). Non-negative: every subset of
    the three costs is fitted, and the best one with no negative cost wins (exact for three
    unknowns; ties go to more costs). None when no subset can be fitted.
    """
    # Columns scaled to at most 1, so that bytes (1e9) and the start (1) are solved alike.
    rows = [(1.0, float(files), float(size)) for files, size, _ in runs]
    seconds = [seconds for *_, seconds in runs]
    scale = [max(row[column] for row in rows) or 1.0 for column in range(3)]
    rows = [[value / scale[column] for column, value in enumerate(row)] for row in rows]
    best = None
    for columns in ((0, 1, 2), (0, 1), (0, 2), (1, 2), (1,), (2,), (0,)):
        solution = _least_squares([[row[c] for c in columns] for row in rows], seconds)
        if solution is None or min(solution) < 0:
            continue
        costs = [0.0, 0.0, 0.0]
        for column, value in zip(columns, solution, strict=True):
            costs[column] = value
        residual = sum(
            (sum(c * v for c, v in zip(costs, row, strict=True)) - measured) ** 2
            for row, measured in zip(rows, seconds, strict=True)
        )
        if best is None or residual < best[0] * (1 - 1e-9):
            best = (residual, costs)
    if best is None:
        return None
    start, per_file, per_byte = (cost / scale[column] for column, cost in enumerate(best[1]))
    return start, per_file, per_byte


def _least_squares(rows: list[list[float]], target: list[float]) -> list[float] | None:
    """x minimizing |rows · x - target|, by the normal equations; None if they are singular."""
    size = len(rows[0])
    gram = [[sum(row[i] * row[j] for row in rows) for j in range(size)] for i in range(size)]
    moments = [
        sum(row[i] * value for row, value in zip(rows, target, strict=True)) for i in range(size)
    ]
    tolerance = 1e-10 * max(gram[i][i] for i in range(size))
    # Gaussian elimination with partial pivoting on an at most 3 x 3 system.
    for pivot in range(size):
        best = max(range(pivot, size), key=lambda r: abs(gram[r][pivot]))
        if abs(gram[best][pivot]) <= tolerance:
            return None
        gram[pivot], gram[best] = gram[best], gram[pivot]
        moments[pivot], moments[best] = moments[best], moments[pivot]
        for r in range(pivot + 1, size):
            ratio = gram[r][pivot] / gram[pivot][pivot]
            gram[r] = [a - ratio * b for a, b in zip(gram[r], gram[pivot], strict=True)]
            moments[r] -= ratio * moments[pivot]
    solution = [0.0] * size
    for r in reversed(range(size)):
        known = sum(gram[r][c] * solution[c] for c in range(r + 1, size))
        solution[r] = (moments[r] - known) / gram[r][r]
    return solution


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
    # Quarantined files are left out of every run (`ingestions.quarantine`), so of previews.
    set_aside = quarantined_paths(ingestion=ingestion) if listing is not None else set()
    listed = {path for path, _, _ in entries}
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
            f"({scope['description']}, {size_text(impact.bytes_to_process)}) and replace "
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
            f"({size_text(impact.bytes_to_process)})"
        )
    if impact.estimated_cost_usd > settings.REFRESH_HIGH_COST_USD:
        warnings.append(f"HIGH COST OPERATION: Estimated ${impact.estimated_cost_usd:,.2f}")
    if impact.files_to_process > settings.REFRESH_LARGE_OPERATION_FILES:
        warnings.append(f"LARGE OPERATION: Processing {impact.files_to_process:,} files")
    if StepName.TABLE_DROPPED in plan.steps and plan.table["exists"] and plan.scope is None:
        fate = "replaced when the run ends" if plan.mode == "atomic" else "deleted"
        warnings.append(
            f"Current table {plan.table['table_name']} ({plan.table['row_count']:,} rows, "
            f"{size_text(plan.table['size_bytes'])}) will be {fate}"
        )
    if (
        StepName.PROCESSED_FILES_CLEARED in plan.steps
        and plan.history["count"]
        and plan.scope is None
    ):
        warnings.append(f"The history of {plan.history['count']:,} processed files will be cleared")
        if (
            StepName.TABLE_DROPPED not in plan.steps
            and plan.table["exists"]
            and plan.table["row_count"]
        ):
            # The rows stay while the history goes: say what the next run will do to the
            # table before anyone confirms (issue 24).
            warnings.append(
                f"RELOAD: {plan.table['table_name']} keeps its {plan.table['row_count']:,} "
                "rows, and the next run loads every source file again, each replacing its own "
                "rows in one commit: no row is there twice. Rows of files no longer in the "
                "source stay"
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
        "The table is not changed now: it keeps every row",
        "No ingestion run triggered: the next run loads every source file again and appends "
        "its rows",
    ]
