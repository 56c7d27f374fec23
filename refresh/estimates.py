"""How long a load takes: each engine's calibrated costs, blended into the ingestion's own fit.

A run costs a fixed start (listing, history, the run's records), a cost per file (open,
parse, history row, a share of a batch's commit) and a cost per byte (read, write). Bytes
alone cannot tell 200,000 small files from one large one, so both are counted:

- **Cold** (no measured run): the engine's costs, calibrated by `bench/estimate_error.py
  --calibrate` and shipped as settings (`REFRESH_DEFAULT_*` for the embedded engine,
  `REFRESH_SPARK_DEFAULT_*` for the spark engine).
- **Blended** (fewer than `REFRESH_ESTIMATE_MIN_RUNS` runs, N): a least-squares fit of the
  runs in which the calibrated costs per file and per byte also count as one measurement
  each, weighted (N - runs) / N, as if a load of 20,000 files and one of 1 GB had shown
  them (`PRIOR_LOAD`): a cost the runs exercise follows them, one they barely exercise (per
  file, per byte, for a few small files) stays near the calibration; the start follows the
  runs from the first.
- **Own fit** (N runs or more, of two shapes or more): the runs alone.
- Runs that cannot tell the costs apart (all of one shape, or time that does not grow with
  the load): the cold model scaled by one factor to the runs' measured seconds.

The spark engine also pays the start of the worker's Spark application when it has none
live (stopped after `AUTOLOADER_SPARK_IDLE_SECONDS`): `REFRESH_SPARK_STARTUP_SECONDS` is
added then, and taken out of the measured seconds of the runs that paid it.
"""

from dataclasses import dataclass, replace
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from ingestions.formats import size
from ingestions.models import Ingestion, Run, RunStatus

# Each engine's cold costs: the settings of (start seconds, seconds per file, MB/s).
COLD_COST_SETTINGS = {
    "iceberg": (
        "REFRESH_DEFAULT_START_SECONDS",
        "REFRESH_DEFAULT_SECONDS_PER_FILE",
        "REFRESH_DEFAULT_THROUGHPUT_MB_PER_S",
    ),
    "spark": (
        "REFRESH_SPARK_DEFAULT_START_SECONDS",
        "REFRESH_SPARK_DEFAULT_SECONDS_PER_FILE",
        "REFRESH_SPARK_DEFAULT_THROUGHPUT_MB_PER_S",
    ),
}
ENGINE_WORDS = {"iceberg": "the embedded engine", "spark": "the spark engine"}
# How much load each calibrated cost stands for in a blend: (start, files, bytes), as if
# 20,000 files and 1 GB had been measured at the calibrated costs. None for the start: it
# is what every run measures (listing, history, the table's metadata), so it follows them.
PRIOR_LOAD = (0.0, 20_000.0, 1e9)


@dataclass(frozen=True)
class DurationModel:
    """`seconds = startup_seconds + start_seconds + seconds_per_file * files +
    seconds_per_byte * bytes`; `startup_seconds` is the Spark application's start when the
    worker has none live (0 otherwise, and for the embedded engine)."""

    start_seconds: float
    seconds_per_file: float
    seconds_per_byte: float
    source: str  # "measured" (past runs) or "default" (the engine's calibrated costs)
    basis: str  # where the costs come from, for people: "from the last 5 runs"
    startup_seconds: float = 0.0

    def seconds(self, *, files: int, size_bytes: int) -> float:
        """Expected seconds to load `files` files of `size_bytes` in all (0 for nothing)."""
        if not files:
            return 0.0
        return (
            self.startup_seconds
            + self.start_seconds
            + self.seconds_per_file * files
            + self.seconds_per_byte * size_bytes
        )

    def explained(self) -> str:
        """The basis and the costs: "from the last 5 runs: 0.4 ms per file + 25.0 MB/s"."""
        terms = []
        if self.seconds_per_file:
            terms.append(f"{self.seconds_per_file * 1000:.2g} ms per file")
        if self.seconds_per_byte:
            terms.append(f"{size(round(1 / self.seconds_per_byte))}/s")
        if self.start_seconds:
            terms.append(f"{self.start_seconds:.2g} s to start")
        text = f"{self.basis}: {' + '.join(terms) or 'no measurable cost'}"
        if self.startup_seconds:
            text += (
                f"; includes ~{self.startup_seconds:,.0f} s to start Spark (the worker has no "
                "live Spark application)"
            )
        return text


def engine_words(engine: str) -> str:
    return ENGINE_WORDS.get(engine, f"the {engine} engine")


def cold_duration_model(engine: str) -> DurationModel:
    """The engine's calibrated costs, before an ingestion has a measured run."""
    names = COLD_COST_SETTINGS.get(engine, COLD_COST_SETTINGS["iceberg"])
    start, per_file, throughput = (getattr(settings, name) for name in names)
    return DurationModel(
        start_seconds=start,
        seconds_per_file=per_file,
        seconds_per_byte=1 / (throughput * 1_000_000),
        source="default",
        basis=f"from {engine_words(engine)}'s calibrated costs (no measured run yet)",
    )


def _spark_idle_window() -> timedelta | None:
    """How long the worker keeps an unused Spark application (None: until it exits)."""
    idle = settings.AUTOLOADER_SPARK_IDLE_SECONDS
    return timedelta(seconds=idle) if idle > 0 else None


def spark_application_live() -> bool:
    """Whether the worker has a Spark application now, judged from the runs: a spark run is
    running, or one ended within `AUTOLOADER_SPARK_IDLE_SECONDS` (the worker stops its
    application once unused that long; web processes start none).

    The worker's application serves every tenant's spark ingestions, so every spark run
    counts; the answer says no more than whether a start-up is likely.
    """
    runs = Run.objects.filter(ingestion__engine="spark", started_at__isnull=False)
    window = _spark_idle_window()
    if window is not None:
        runs = runs.filter(
            Q(status=RunStatus.RUNNING, finished_at__isnull=True)
            | Q(finished_at__gte=timezone.now() - window)
        )
    return runs.exists()


def spark_startup_seconds(ingestion: Ingestion) -> float:
    """The Spark start-up a run of `ingestion` would pay now (0 on the embedded engine)."""
    if ingestion.engine != "spark" or spark_application_live():
        return 0.0
    return settings.REFRESH_SPARK_STARTUP_SECONDS


def measured_runs(ingestion: Ingestion) -> list[tuple[int, int, float]]:
    """(files, bytes, seconds) of the ingestion's last finished runs that loaded something.

    Resumed runs are left out: their wall time includes the time their first worker was dead.
    On the spark engine, a run that started with no live Spark application paid its start:
    `REFRESH_SPARK_STARTUP_SECONDS` is taken out of its seconds (the estimate adds it back
    when the next run will pay it too).
    """
    recent = Run.objects.filter(
        ingestion=ingestion,
        status__in=(RunStatus.SUCCESS, RunStatus.PARTIAL_SUCCESS),
        files_loaded__gt=0,
        attempts__lte=1,
        started_at__isnull=False,
        finished_at__gt=F("started_at"),
    ).order_by("-finished_at", "-id")
    spark = ingestion.engine == "spark"
    if spark:
        # Another spark run was running when it started, or had ended within the idle time.
        before = Run.objects.filter(
            ingestion__engine="spark", started_at__lt=OuterRef("started_at")
        ).exclude(pk=OuterRef("pk"))
        window = _spark_idle_window()
        if window is not None:
            before = before.filter(
                Q(status=RunStatus.RUNNING, finished_at__isnull=True)
                | Q(finished_at__gte=OuterRef("started_at") - window)
            )
        recent = recent.annotate(spark_live=Exists(before))
    fields = ["files_loaded", "files_failed", "bytes_read", "started_at", "finished_at"]
    startup = settings.REFRESH_SPARK_STARTUP_SECONDS if spark else 0.0
    runs = []
    for run in recent.values(*fields, *(["spark_live"] if spark else []))[
        : settings.REFRESH_ESTIMATE_RUNS
    ]:
        seconds = (run["finished_at"] - run["started_at"]).total_seconds()
        if spark and not run["spark_live"]:
            seconds = max(0.0, seconds - startup)
        runs.append((run["files_loaded"] + run["files_failed"], run["bytes_read"], seconds))
    return runs


def duration_model(ingestion: Ingestion) -> DurationModel:
    """The ingestion's costs now: its engine's calibration, blended into its own fit as its
    runs accumulate (the module's docstring says how), plus the Spark start-up if due."""
    cold = cold_duration_model(ingestion.engine)
    startup = spark_startup_seconds(ingestion)
    runs = measured_runs(ingestion)
    if not runs:
        return replace(cold, startup_seconds=startup)
    label = "the last run" if len(runs) == 1 else f"the last {len(runs)} runs"
    needed = max(1, settings.REFRESH_ESTIMATE_MIN_RUNS)
    prior_weight = max(0, needed - len(runs)) / needed
    basis = f"from {label}"
    prior = None
    if prior_weight:
        prior = (cold.start_seconds, cold.seconds_per_file, cold.seconds_per_byte)
        basis += f" blended with {engine_words(ingestion.engine)}'s calibration"
    if prior is not None or len({(files, size_bytes) for files, size_bytes, _ in runs}) >= 2:
        fitted = fit_costs(runs, prior=prior, prior_weight=prior_weight)
        if fitted is not None and (fitted[1] > 0 or fitted[2] > 0):
            return DurationModel(*fitted, source="measured", basis=basis, startup_seconds=startup)
    predicted = sum(cold.seconds(files=files, size_bytes=size) for files, size, _ in runs)
    factor = sum(seconds for *_, seconds in runs) / predicted if predicted else 1.0
    return DurationModel(
        start_seconds=cold.start_seconds * factor,
        seconds_per_file=cold.seconds_per_file * factor,
        seconds_per_byte=cold.seconds_per_byte * factor,
        source="measured",
        basis=f"from {engine_words(ingestion.engine)}'s calibration scaled to {label}",
        startup_seconds=startup,
    )


def fit_costs(
    runs: list[tuple[int, int, float]],
    *,
    prior: tuple[float, float, float] | None = None,
    prior_weight: float = 0.0,
) -> tuple[float, float, float] | None:
    """(start, per file, per byte) seconds, all >= 0, that best explain the runs' seconds.

    Least squares on seconds: long runs weigh most, as they should (they are what an
    estimate is for, and their times are the least noisy). With a `prior` (the calibrated
    costs), each cost also counts as one measurement of `PRIOR_LOAD` at that cost, weighted
    `prior_weight` (a run weighs 1). Non-negative: every subset of the three costs is
    fitted, and the best one with no negative cost wins (exact for three unknowns; ties go
    to more costs). None when no subset can be fitted.
    """
    rows = [[1.0, float(files), float(size)] for files, size, _ in runs]
    seconds = [float(measured) for *_, measured in runs]
    if prior is not None and prior_weight > 0:
        root = prior_weight**0.5
        for column, (load, cost) in enumerate(zip(PRIOR_LOAD, prior, strict=True)):
            rows.append([load * root if c == column else 0.0 for c in range(3)])
            seconds.append(load * cost * root)
    if not rows:
        return None
    # Columns scaled to at most 1, so that bytes (1e9) and the start (1) are solved alike.
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
