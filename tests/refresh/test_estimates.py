"""Duration estimates that learn: each engine's calibrated costs before a first run, blended
into the costs per file and per byte fitted on the ingestion's own runs as they accumulate."""

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestions.models import Run, RunStatus
from ingestions.runs import run_request
from refresh.estimates import (
    duration_model,
    fit_costs,
    measured_runs,
)
from refresh.planning import estimate_impact

from ..factories import IngestionFactory, RunFactory
from ..helpers import drain_queue, write_csv_files

pytestmark = pytest.mark.django_db

START, PER_FILE, PER_BYTE = 0.5, 0.002, 1 / 40e6  # 0.5 s + 2 ms a file + 40 MB/s
SHAPES = [(10, 200_000_000), (2_000, 2_000_000), (400, 80_000_000), (50, 5_000_000)]


def true_seconds(files: int, size_bytes: int) -> float:
    return START + PER_FILE * files + PER_BYTE * size_bytes


@pytest.fixture
def ingestion(tenant):
    return IngestionFactory(tenant=tenant)


@pytest.fixture
def finished_run(ingestion):
    """`finished_run(files, bytes, seconds, **fields)` -> a run as the worker leaves it."""
    ended = [timezone.now() - timedelta(days=1)]

    def make(files: int, size_bytes: int, seconds: float, **fields) -> Run:
        ended[0] += timedelta(minutes=10)  # each run newer than the one before
        values = {
            "status": RunStatus.SUCCESS,
            "files_found": files,
            "files_loaded": files,
            "bytes_read": size_bytes,
            "attempts": 1,
            "started_at": ended[0] - timedelta(seconds=seconds),
            "finished_at": ended[0],
            **fields,
        }
        return RunFactory(ingestion=ingestion, **values)

    return make


def test_costs_per_file_per_byte_and_start_are_recovered_from_exact_runs(ingestion, finished_run):
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, true_seconds(files, size_bytes))

    model = duration_model(ingestion)

    assert model.source == "measured"
    assert model.basis == "from the last 4 runs"
    assert model.start_seconds == pytest.approx(START, rel=1e-3)
    assert model.seconds_per_file == pytest.approx(PER_FILE, rel=1e-3)
    assert model.seconds_per_byte == pytest.approx(PER_BYTE, rel=1e-3)
    assert model.explained() == "from the last 4 runs: 2 ms per file + 40.0 MB/s + 0.5 s to start"


def test_many_small_files_cost_more_than_their_bytes(ingestion, finished_run):
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, true_seconds(files, size_bytes))

    small = estimate_impact(
        ingestion=ingestion, files_to_process=200_000, bytes_to_process=200_000_000, files_skipped=0
    )
    large = estimate_impact(
        ingestion=ingestion, files_to_process=2, bytes_to_process=200_000_000, files_skipped=0
    )

    # Same bytes; 200,000 files cost 400 s more (2 ms each).
    assert small.estimated_duration_seconds == pytest.approx(true_seconds(200_000, 2e8), rel=1e-3)
    assert large.estimated_duration_seconds == pytest.approx(true_seconds(2, 2e8), rel=1e-3)
    assert small.estimated_duration_minutes == math.ceil(true_seconds(200_000, 2e8) / 60) == 7
    assert large.estimated_duration_minutes == 1


def test_without_runs_the_engine_calibration_counts_files_too(ingestion, settings):
    settings.REFRESH_DEFAULT_SECONDS_PER_FILE = 0.012
    settings.REFRESH_DEFAULT_THROUGHPUT_MB_PER_S = 20
    settings.REFRESH_DEFAULT_START_SECONDS = 1

    impact = estimate_impact(
        ingestion=ingestion, files_to_process=200_000, bytes_to_process=200_000_000, files_skipped=0
    )

    # 1 s + 200,000 x 12 ms + 200 MB at 20 MB/s = 2,411 s: 41 minutes, not 1.
    assert impact.throughput_source == "default"
    assert impact.estimated_duration_seconds == pytest.approx(2411)
    assert impact.estimated_duration_minutes == 41
    assert impact.estimate_basis.startswith(
        "from the embedded engine's calibrated costs (no measured run yet): 12 ms per file"
    )
    assert impact.engine_startup_seconds == 0


def test_nothing_to_load_takes_no_time(ingestion, finished_run):
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, true_seconds(files, size_bytes))

    impact = estimate_impact(
        ingestion=ingestion, files_to_process=0, bytes_to_process=0, files_skipped=0
    )

    assert (impact.estimated_duration_seconds, impact.estimated_duration_minutes) == (0, 0)


def test_a_quick_load_is_one_minute_and_its_seconds(ingestion, finished_run):
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, true_seconds(files, size_bytes))

    impact = estimate_impact(
        ingestion=ingestion, files_to_process=3, bytes_to_process=3_000, files_skipped=0
    )

    assert impact.estimated_duration_minutes == 1
    assert impact.estimated_duration_seconds == pytest.approx(0.51, abs=0.01)


def test_no_cost_is_ever_negative(ingestion, finished_run):
    # Noisy runs where the larger loads went faster: unconstrained, the fit would give a
    # negative cost per byte and promise less time for more data.
    for files, size_bytes, seconds in [
        (10, 1_000_000, 2.0),
        (20, 50_000_000, 1.5),
        (40, 100_000_000, 1.8),
        (80, 200_000_000, 2.2),
    ]:
        finished_run(files, size_bytes, seconds)

    model = duration_model(ingestion)

    assert min(model.start_seconds, model.seconds_per_file, model.seconds_per_byte) >= 0
    assert model.seconds(files=80, size_bytes=400_000_000) >= model.seconds(
        files=80, size_bytes=200_000_000
    )


def test_only_the_last_runs_that_measured_a_load_count(ingestion, finished_run, settings):
    settings.REFRESH_ESTIMATE_RUNS = 4
    finished_run(10, 10_000, 900.0)  # old, beyond the last 4: ignored
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, true_seconds(files, size_bytes))
    finished_run(100, 1_000, 999.0, status=RunStatus.FAILED)
    finished_run(100, 1_000, 999.0, status=RunStatus.CANCELLED)
    finished_run(0, 0, 999.0)  # loaded nothing
    finished_run(100, 1_000, 999.0, attempts=2)  # resumed: its first worker died mid-way

    assert sorted(measured_runs(ingestion)) == sorted(
        (files, size_bytes, pytest.approx(true_seconds(files, size_bytes)))
        for files, size_bytes in SHAPES
    )
    assert duration_model(ingestion).seconds_per_file == pytest.approx(PER_FILE, rel=1e-3)


def test_a_partial_run_counts_its_failed_files(ingestion, finished_run):
    finished_run(90, 1_000, 1.0, status=RunStatus.PARTIAL_SUCCESS, files_failed=10)

    assert measured_runs(ingestion) == [(100, 1_000, 1.0)]


def test_runs_all_of_one_shape_scale_the_defaults(ingestion, finished_run):
    for seconds in (1.0, 1.2, 0.8):
        finished_run(100, 10_000_000, seconds)

    model = duration_model(ingestion)

    assert model.basis == "from the embedded engine's calibration scaled to the last 3 runs"
    assert model.seconds(files=100, size_bytes=10_000_000) == pytest.approx(1.0)


def test_runs_whose_time_does_not_grow_with_the_load_scale_the_defaults(ingestion, finished_run):
    for files, size_bytes in SHAPES:
        finished_run(files, size_bytes, 2.0)

    model = duration_model(ingestion)

    # A fit would be "2 s whatever the load": no cost per file or byte to extrapolate with.
    assert model.basis == "from the embedded engine's calibration scaled to the last 4 runs"
    assert model.seconds_per_file > 0 and model.seconds_per_byte > 0


def test_the_fit_minimizes_the_error_in_seconds():
    # Two runs of one shape at 1 s and 3 s: the fit lands on their mean, 2 s (a fit of the
    # relative error would say 1.2 s); the third run, alone of its shape, is met exactly.
    runs = [(10, 0, 1.0), (10, 0, 3.0), (1_000, 0, 10.0)]

    start, per_file, per_byte = fit_costs(runs)

    assert start + per_file * 10 == pytest.approx(2.0)
    assert start + per_file * 1_000 == pytest.approx(10.0)
    assert per_byte == 0


@pytest.mark.django_db(transaction=True)  # the real worker runs the loads
def test_the_preview_shows_seconds_and_where_they_come_from(loaded, admin_client, source_dir):
    # Real runs of different shapes: 4 files (the fixture), then 12, then 1 large file.
    write_csv_files(source_dir, files=12, rows=5, start=10)
    run_request(ingestion=loaded)
    drain_queue()
    write_csv_files(source_dir, files=1, rows=20_000, start=40)
    run_request(ingestion=loaded)
    drain_queue()
    runs = measured_runs(loaded)
    assert sorted(files for files, _, _ in runs) == [1, 4, 12]

    response = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh", {"dry_run": True}, format="json"
    )

    body = response.json()
    assert response.status_code == 200, body
    model = duration_model(loaded)
    size_bytes = sum(path.stat().st_size for path in source_dir.glob("*.csv"))
    seconds = model.seconds(files=17, size_bytes=size_bytes)
    assert body["estimate"] == {
        "estimated_duration_seconds": pytest.approx(seconds, abs=0.01),
        "source": "measured",
        # Fitted, or the calibration scaled if these quick runs' times do not tell costs apart.
        "basis": model.explained(),
        "engine_startup_seconds": 0.0,
    }
    assert "the last 3 runs: " in body["estimate"]["basis"]
    assert body["impact"]["estimated_duration_minutes"] == max(1, math.ceil(seconds / 60))
    shown = body["estimate"]["estimated_duration_seconds"]
    assert f"Estimated duration {shown:,.1f} s, {model.explained()}" in body["notes"]


@pytest.mark.django_db(transaction=True)
def test_the_executed_operation_keeps_its_estimate(loaded, admin_client):
    response = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh", {"confirm": True}, format="json"
    )

    body = response.json()
    assert response.status_code == 202, body
    assert body["estimate"]["source"] == "measured"
    assert body["estimate"]["estimated_duration_seconds"] > 0
    assert body["estimate"]["basis"].startswith(
        "from the last run blended with the embedded engine's calibration: "
    )
