"""Estimates before a first run: each engine's calibrated costs, the Spark application's
start when the worker has none live, and the ingestion's own fit taking over as its runs
accumulate. Asserts on the model's figures, never on timings."""

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestions.models import RunStatus
from refresh.estimates import (
    cold_duration_model,
    duration_model,
    fit_costs,
    measured_runs,
    spark_application_live,
)
from refresh.planning import estimate_impact

from ..factories import IngestionFactory, RunFactory
from ..helpers import write_csv_files

pytestmark = pytest.mark.django_db

# The issue's workloads, (files, bytes): 200,000 tiny files, 1 GB in 40 files, 20,000 small.
TINY, LARGE, SMALL = (200_000, 9_000_000), (40, 1_000_000_000), (20_000, 30_000_000)


def run_of(ingestion, files: int, size_bytes: int, seconds: float, *, ended=None, **fields):
    """A finished run as the worker leaves it, ending at `ended` (default: a day ago)."""
    ended = ended or timezone.now() - timedelta(days=1)
    values = {
        "status": RunStatus.SUCCESS,
        "files_found": files,
        "files_loaded": files,
        "bytes_read": size_bytes,
        "attempts": 1,
        "started_at": ended - timedelta(seconds=seconds),
        "finished_at": ended,
        **fields,
    }
    return RunFactory(ingestion=ingestion, **values)


@pytest.mark.parametrize("engine", ["iceberg", "spark"])
def test_the_cold_model_grows_with_files_and_with_bytes(engine):
    model = cold_duration_model(engine)

    by_files = [model.seconds(files=files, size_bytes=10**6) for files in (1, 10, 10**3, 10**6)]
    by_bytes = [model.seconds(files=10, size_bytes=size) for size in (0, 10**6, 10**9, 10**12)]

    assert by_files == sorted(by_files) and len(set(by_files)) == len(by_files)
    assert by_bytes == sorted(by_bytes) and len(set(by_bytes)) == len(by_bytes)
    assert model.source == "default"
    assert model.seconds(files=0, size_bytes=0) == 0


def test_the_embedded_engines_cold_figures_are_sane_for_the_issues_shapes():
    model = cold_duration_model("iceberg")
    tiny, large, small = (model.seconds(files=f, size_bytes=b) for f, b in (TINY, LARGE, SMALL))

    # The old defaults said 41 minutes for 200,000 tiny files the engine loads in ~77 s;
    # the calibration says a minute or two, and orders the shapes as the engine does.
    assert 30 < tiny < 300
    assert 3 < large < 60
    assert 3 < small < 60
    assert small < tiny
    # Bytes alone would put the 1 GB load far above 200,000 tiny files: files count.
    assert model.seconds(files=1, size_bytes=TINY[1]) < tiny


def test_the_spark_engine_has_its_own_cold_costs(settings):
    settings.REFRESH_SPARK_DEFAULT_SECONDS_PER_FILE = 0.05
    settings.REFRESH_DEFAULT_SECONDS_PER_FILE = 0.001

    spark, embedded = cold_duration_model("spark"), cold_duration_model("iceberg")

    assert (spark.seconds_per_file, embedded.seconds_per_file) == (0.05, 0.001)
    assert spark.basis == "from the spark engine's calibrated costs (no measured run yet)"


def test_without_a_live_spark_application_the_estimate_includes_its_start(tenant, settings):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    ingestion = IngestionFactory(tenant=tenant, engine="spark")
    cold = cold_duration_model("spark")

    impact = estimate_impact(
        ingestion=ingestion, files_to_process=40, bytes_to_process=10**9, files_skipped=0
    )

    expected = 40 + cold.seconds(files=40, size_bytes=10**9)
    assert impact.engine_startup_seconds == 40
    assert impact.estimated_duration_seconds == pytest.approx(expected, abs=0.01)
    # Still one figure: the API's minutes are its seconds rounded up.
    assert impact.estimated_duration_minutes == math.ceil(impact.estimated_duration_seconds / 60)
    assert "; includes ~40 s to start Spark (the worker has no live Spark application)" in (
        impact.estimate_basis
    )


def test_a_live_spark_application_is_not_started_again(tenant, other_tenant, settings):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    settings.AUTOLOADER_SPARK_IDLE_SECONDS = 30
    ingestion = IngestionFactory(tenant=tenant, engine="spark")
    # Any tenant's spark run keeps the worker's one application alive.
    elsewhere = IngestionFactory(tenant=other_tenant, engine="spark")
    run = run_of(elsewhere, 10, 10_000, 5.0, ended=timezone.now() - timedelta(seconds=5))

    assert spark_application_live()
    assert duration_model(ingestion).startup_seconds == 0
    impact = estimate_impact(
        ingestion=ingestion, files_to_process=4, bytes_to_process=4_000, files_skipped=0
    )
    assert impact.engine_startup_seconds == 0
    assert "to start Spark" not in impact.estimate_basis

    # Idle longer than AUTOLOADER_SPARK_IDLE_SECONDS: the worker stopped it.
    run.finished_at = timezone.now() - timedelta(seconds=31)
    run.save(update_fields=["finished_at"])
    assert not spark_application_live()
    assert duration_model(ingestion).startup_seconds == 40

    # A spark run in progress holds it.
    RunFactory(ingestion=elsewhere, status=RunStatus.RUNNING, started_at=timezone.now())
    assert duration_model(ingestion).startup_seconds == 0


def test_only_spark_runs_keep_a_spark_application_and_only_spark_pays_it(tenant, settings):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    embedded = IngestionFactory(tenant=tenant)
    spark = IngestionFactory(tenant=tenant, engine="spark")
    run_of(embedded, 10, 10_000, 5.0, ended=timezone.now())

    assert duration_model(spark).startup_seconds == 40
    assert duration_model(embedded).startup_seconds == 0


def test_an_application_never_stopped_when_idle_stays_live(tenant, settings):
    settings.AUTOLOADER_SPARK_IDLE_SECONDS = 0  # never stopped
    spark = IngestionFactory(tenant=tenant, engine="spark")
    assert duration_model(spark).startup_seconds == settings.REFRESH_SPARK_STARTUP_SECONDS

    run_of(spark, 10, 10_000, 5.0, ended=timezone.now() - timedelta(days=2))

    assert duration_model(spark).startup_seconds == 0


def test_runs_that_started_spark_count_without_its_start(tenant, settings):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    settings.AUTOLOADER_SPARK_IDLE_SECONDS = 30
    spark = IngestionFactory(tenant=tenant, engine="spark")
    day = timezone.now() - timedelta(days=1)
    run_of(spark, 100, 10**6, 50.0, ended=day)  # nothing before it: it started Spark
    run_of(spark, 200, 2 * 10**6, 12.0, ended=day + timedelta(seconds=20))  # 8 s after

    assert sorted(measured_runs(spark)) == [(100, 10**6, 10.0), (200, 2 * 10**6, 12.0)]
    # An hour later, while another ingestion's spark run is still running: warm too.
    other = IngestionFactory(tenant=tenant, engine="spark")
    RunFactory(ingestion=other, status=RunStatus.RUNNING, started_at=day + timedelta(minutes=50))
    run_of(spark, 300, 3 * 10**6, 14.0, ended=day + timedelta(hours=1))
    assert (300, 3 * 10**6, 14.0) in measured_runs(spark)
    # The embedded engine's runs are taken as measured.
    embedded = IngestionFactory(tenant=tenant)
    run_of(embedded, 100, 10**6, 50.0, ended=day - timedelta(hours=1))
    assert measured_runs(embedded) == [(100, 10**6, 50.0)]


def test_the_first_runs_blend_with_the_calibration_and_the_fit_takes_over(tenant, settings):
    settings.REFRESH_ESTIMATE_MIN_RUNS = 3
    ingestion = IngestionFactory(tenant=tenant)
    cold = cold_duration_model("iceberg")
    # This ingestion's storage is three times slower than the calibration's.
    runs = [(2_000, 3 * 10**6), (50, 4 * 10**8), (500, 5 * 10**7)]

    def seconds(files, size_bytes):
        return 3 * cold.seconds(files=files, size_bytes=size_bytes)

    estimates = []
    for count, (files, size_bytes) in enumerate(runs, start=1):
        run_of(
            ingestion,
            files,
            size_bytes,
            seconds(files, size_bytes),
            ended=timezone.now() - timedelta(hours=10 - count),
        )
        model = duration_model(ingestion)
        estimates.append(model.seconds(files=TINY[0], size_bytes=TINY[1]))
        label = "the last run" if count == 1 else f"the last {count} runs"
        if count < 3:
            assert model.basis == f"from {label} blended with the embedded engine's calibration"
        else:
            assert model.basis == f"from {label}"
            fitted = fit_costs([(f, b, seconds(f, b)) for f, b in runs])
            assert (model.start_seconds, model.seconds_per_file, model.seconds_per_byte) == (
                pytest.approx(fitted, rel=1e-4)
            )
        assert model.source == "measured"

    # The runs measure small loads: 200,000 files stay near the calibration until the
    # ingestion's own fit takes over, at the third run.
    cold_tiny, true_tiny = cold.seconds(files=TINY[0], size_bytes=TINY[1]), seconds(*TINY)
    assert 0.9 * cold_tiny < estimates[0] < true_tiny
    assert 0.9 * cold_tiny < estimates[1] < true_tiny
    assert estimates[2] == pytest.approx(true_tiny, rel=1e-4)


def test_one_run_is_met_where_it_measured_and_the_calibration_holds_elsewhere(tenant):
    ingestion = IngestionFactory(tenant=tenant)
    cold = cold_duration_model("iceberg")
    run_of(ingestion, 5, 5_000, 2.0)  # a few small files, slower to start than calibrated

    model = duration_model(ingestion)

    # The start follows the run; the costs per file and per byte stay calibrated.
    assert model.seconds(files=5, size_bytes=5_000) == pytest.approx(2.0, rel=0.05)
    assert model.seconds_per_file == pytest.approx(cold.seconds_per_file, rel=0.05)
    assert model.seconds_per_byte == pytest.approx(cold.seconds_per_byte, rel=0.05)


def test_a_spark_preview_says_it_includes_the_start_of_spark(
    tenant, source_dir, admin_client, settings
):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    write_csv_files(source_dir, files=3, rows=5)
    IngestionFactory(
        tenant=tenant,
        public_id="sales",
        source_uri=str(source_dir),
        destination_table="raw.sales",
        engine="spark",
    )

    response = admin_client.post(
        "/api/v1/ingestions/sales/fresh-start", {"dry_run": True}, format="json"
    )

    body = response.json()
    assert response.status_code == 200, body
    estimate = body["estimate"]
    assert estimate["engine_startup_seconds"] == 40
    assert estimate["source"] == "default"
    assert estimate["basis"].startswith("from the spark engine's calibrated costs")
    assert estimate["basis"].endswith(
        "includes ~40 s to start Spark (the worker has no live Spark application)"
    )
    assert body["impact"]["estimated_duration_minutes"] == math.ceil(
        estimate["estimated_duration_seconds"] / 60
    )
    assert any("includes ~40 s to start Spark" in note for note in body["notes"])
