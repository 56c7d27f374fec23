"""The spark engine in the product: exactly-once runs, crash recovery, cancellation, settings.

Spark local[2] on Spark's built-in catalog, whose commit log stands in for Iceberg's
snapshots (see ingestions/engines/spark.py). The engine behaviour suite shared with the
iceberg engine is in test_engines.py.
"""

import threading
import time

import pyarrow as pa
import pytest
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.engines import spark as spark_module
from ingestions.engines.spark import SparkEngine
from ingestions.errors import EngineUnavailableError
from ingestions.models import BatchStatus, ProcessedFile, Run, RunBatch, RunStatus
from ingestions.runs import (
    SNAPSHOT_BATCH_KEY,
    run_cancel,
    run_execute,
    run_request,
    runs_recover_stale,
)

from ..conftest import write_csv_files
from ..factories import IngestionFactory
from .conftest import SPARK_TEST_MASTER, spark_drop_namespaces
from .test_runs import FaultyEngine, WorkerKilled, drain_queue

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "raw.sales"


@pytest.fixture
def spark(spark_session, settings):
    settings.AUTOLOADER_SPARK_MASTER = SPARK_TEST_MASTER
    settings.AUTOLOADER_SPARK_CATALOG = "spark_catalog"
    settings.AUTOLOADER_SPARK_CONF = {}
    yield spark_session
    spark_drop_namespaces(spark_session)


@pytest.fixture
def spark_ingestion(tenant, source_dir):
    return IngestionFactory(
        tenant=tenant,
        public_id="sales-on-spark",
        source_uri=str(source_dir),
        source_format="csv",
        destination_table=TABLE,
        engine="spark",
    )


def rows_by_file(spark, table_name: str) -> dict[str, int]:
    """What a Spark SQL user sees in the table."""
    rows = spark.table(f"spark_catalog.{table_name}").groupBy("_source_file").count().collect()
    return {row["_source_file"]: row["count"] for row in rows}


def test_load_engine_builds_the_spark_engine_from_settings(settings, tmp_path):
    settings.AUTOLOADER_SPARK_MASTER = "sc://spark.example.internal:15002"
    settings.AUTOLOADER_SPARK_CATALOG = "lake"
    settings.AUTOLOADER_SPARK_CONF = {
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog"
    }

    engine = load_engine("spark")

    assert isinstance(engine, SparkEngine)
    assert (engine.master, engine.catalog, engine.is_connect) == (
        "sc://spark.example.internal:15002",
        "lake",
        True,
    )
    assert engine.warehouse == settings.AUTOLOADER_WAREHOUSE
    assert engine.uses_iceberg is True  # read from the configuration, no session needed


def test_a_spark_run_loads_every_row_once_into_a_table_spark_sql_reads(
    spark, settings, spark_ingestion, source_dir
):
    settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=6)

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert (run.files_loaded, run.rows_written) == (5, 30)
    # The tenant's physical table, behind the user's "raw.sales".
    assert spark_ingestion.table_identifier == "acme__raw.sales"
    assert rows_by_file(spark, spark_ingestion.table_identifier) == {
        f"part-{index:04d}.csv": 6 for index in range(5)
    }
    snapshots = load_engine("spark").list_snapshots(spark_ingestion.table_identifier)
    assert [snapshot.properties[SNAPSHOT_BATCH_KEY] for snapshot in snapshots] == list(
        RunBatch.objects.filter(run=run).order_by("id").values_list("batch_key", flat=True)
    )
    info = load_engine("spark").describe_table(spark_ingestion.table_identifier)
    assert (info.row_count, info.snapshot_id) == (30, snapshots[-1].snapshot_id)


@pytest.mark.parametrize("after_real_call", [True, False], ids=["after-commit", "before-commit"])
def test_a_spark_run_whose_worker_died_mid_batch_resumes_exactly_once(
    spark, settings, spark_ingestion, source_dir, after_real_call
):
    settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=7)
    run = run_request(ingestion=spark_ingestion)
    dying = FaultyEngine(
        load_engine("spark"),
        fail_on="append",
        after_real_call=after_real_call,
        exception=WorkerKilled(),
    )
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.public_id, engine=dying)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert runs_recover_stale() == [run.public_id]

    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    assert rows_by_file(spark, spark_ingestion.table_identifier) == {
        f"part-{index:04d}.csv": 7 for index in range(5)
    }
    assert ProcessedFile.objects.filter(ingestion=spark_ingestion).count() == 5
    assert not RunBatch.objects.filter(status=BatchStatus.PENDING).exists()


def test_a_crash_after_the_commit_record_is_rolled_forward(spark, monkeypatch, tmp_path):
    engine = SparkEngine(master=SPARK_TEST_MASTER, warehouse=(tmp_path / "wh").as_uri())
    engine.append(TABLE, pa.table({"id": [1, 2]}), properties={"batch": "a"})
    real_publish = spark_module._ParquetTables._publish

    def die_before_publishing(self, filesystem, location, record):
        raise WorkerKilled()

    monkeypatch.setattr(spark_module._ParquetTables, "_publish", die_before_publishing)
    with pytest.raises(WorkerKilled):
        engine.append(TABLE, pa.table({"id": [3, 4, 5]}), properties={"batch": "b"})
    monkeypatch.setattr(spark_module._ParquetTables, "_publish", real_publish)

    # The record is the commit: recovery finds the batch, and reading publishes its files.
    found = engine.find_snapshot(TABLE, key="batch", value="b")
    assert found is not None
    assert not list((tmp_path / "wh").rglob("_staging/*/*.parquet"))
    assert sorted(row.id for row in spark.table(f"spark_catalog.{TABLE}").collect()) == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert engine.describe_table(TABLE).row_count == 5


def test_a_crash_before_the_commit_record_leaves_nothing_visible(spark, monkeypatch, tmp_path):
    engine = SparkEngine(master=SPARK_TEST_MASTER, warehouse=(tmp_path / "wh").as_uri())
    engine.append(TABLE, pa.table({"id": [1]}), properties={"batch": "a"})

    def die_before_the_record(self, filesystem, location, record):
        raise WorkerKilled()

    monkeypatch.setattr(spark_module._ParquetTables, "_write_record", die_before_the_record)
    with pytest.raises(WorkerKilled):
        engine.append(TABLE, pa.table({"id": [2]}), properties={"batch": "b"})
    monkeypatch.undo()

    assert engine.find_snapshot(TABLE, key="batch", value="b") is None
    assert [row.id for row in spark.table(f"spark_catalog.{TABLE}").collect()] == [1]
    assert list((tmp_path / "wh").rglob("_staging/*/*.parquet"))  # invisible leftovers ...
    engine.append(TABLE, pa.table({"id": [2]}), properties={"batch": "b-again"})
    assert not list((tmp_path / "wh").rglob("_staging/*/*.parquet"))  # ... dropped by the writer
    assert sorted(row.id for row in spark.table(f"spark_catalog.{TABLE}").collect()) == [1, 2]


def test_cancelling_a_run_interrupts_its_spark_job(
    spark, settings, spark_ingestion, source_dir, monkeypatch
):
    settings.AUTOLOADER_RUN_STALE_SECONDS = 1.2  # the heartbeat looks every 0.2 s
    write_csv_files(source_dir, files=2, rows=3)
    real_dataframe = spark_module._dataframe

    def slow_dataframe(session, data, schema):
        # A Spark job that would take a minute: each partition sleeps in a Python worker.
        def sleepy(batches):
            time.sleep(60)
            yield from batches

        return real_dataframe(session, data, schema).mapInArrow(sleepy, schema)

    monkeypatch.setattr(spark_module, "_dataframe", slow_dataframe)
    run = run_request(ingestion=spark_ingestion)
    finished = []
    worker = threading.Thread(
        target=lambda: finished.append(run_execute(run_id=run.public_id)), daemon=True
    )
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 60
    while not spark.sparkContext.statusTracker().getActiveJobsIds():
        assert time.monotonic() < deadline, "the Spark job never started"
        time.sleep(0.1)

    run_cancel(run=run)
    worker.join(timeout=45)

    assert not worker.is_alive(), "the run did not stop"
    assert time.monotonic() - started < 45  # interrupted, not waited for
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, run.error
    assert RunBatch.objects.get(run=run).status == BatchStatus.ABANDONED
    assert not load_engine("spark").table_exists(spark_ingestion.table_identifier)
    assert ProcessedFile.objects.filter(ingestion=spark_ingestion).count() == 0


def test_catalog_configuration_is_passed_through_verbatim(spark, tmp_path):
    conf = {
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.type": "hadoop",
        "spark.sql.catalog.lake.warehouse": (tmp_path / "lake").as_uri(),
    }
    engine = SparkEngine(
        master=SPARK_TEST_MASTER, catalog="lake", warehouse=tmp_path.as_uri(), conf=conf
    )
    try:
        session = engine._session()
        assert {key: session.conf.get(key) for key in conf} == conf
        assert engine.uses_iceberg is True
        # No Iceberg runtime jar can be fetched here: the engine says what is missing.
        with pytest.raises(EngineUnavailableError, match="iceberg-spark-runtime") as raised:
            engine.ping()
        assert raised.value.error_code == "CLUSTER_UNAVAILABLE"
    finally:
        for key in conf:
            spark.conf.unset(key)


def test_the_built_in_catalog_is_detected_without_configuration(spark, tmp_path):
    engine = SparkEngine(master=SPARK_TEST_MASTER, warehouse=tmp_path.as_uri())

    engine.ping()

    assert engine.uses_iceberg is False
