"""The spark engine in the product: Spark's executors read the files and write Iceberg tables.

Spark local[2] with Iceberg's own Spark runtime; its JDBC catalog shares the embedded
engine's catalog database, so every table here is also read with plain pyiceberg, as any
other Iceberg reader would. The engine behaviour suite shared with the iceberg engine is in
test_engines.py.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from django.conf import settings
from django.utils import timezone

from ingestions import run_executor
from ingestions.engines import load_engine
from ingestions.engines.spark import SparkEngine
from ingestions.engines.spark import reading as spark_reading
from ingestions.engines.spark import sessions as spark_sessions
from ingestions.models import CommitStatus, ProcessedFile, Role, Run, RunBatch, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import SNAPSHOT_BATCH_KEY, run_cancel, run_request, runs_recover_stale

from ..factories import IngestionFactory
from ..helpers import (
    FaultyEngine,
    WorkerKilled,
    database_url,
    drain_queue,
    open_table,
    write_csv_files,
)
from .conftest import SPARK_TEST_MASTER, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spark_ingestion(tenant, source_dir, spark_settings):
    return IngestionFactory(
        tenant=tenant,
        public_id="sales-on-spark",
        source_uri=str(source_dir),
        source_format="csv",
        destination_table="raw.sales",
        engine="spark",
    )


@pytest.fixture
def no_reads_in_the_worker(monkeypatch):
    """Any read of a source file by the worker process fails the test."""

    def refuse(**kwargs):
        raise AssertionError(f"the worker read {kwargs.get('path')} itself")

    monkeypatch.setattr(run_executor, "read_source_file", refuse)


def rows_by_file(table_name: str) -> dict[str, int]:
    """What any Iceberg reader sees in the table: plain pyiceberg on the same catalog."""
    rows = open_table(table_name).scan(selected_fields=("_source_file",)).to_arrow()
    counts = rows.group_by("_source_file").aggregate([("_source_file", "count")])
    return dict(zip(*counts.to_pydict().values(), strict=True))


def test_load_engine_shares_the_embedded_engines_catalog(spark_settings):
    settings = spark_settings

    engine = load_engine("spark")

    assert isinstance(engine, SparkEngine)
    assert (engine.master, engine.catalog) == (SPARK_TEST_MASTER, "test")
    prefix = "spark.sql.catalog.test"
    database = settings.AUTOLOADER_CATALOG_URI.removeprefix("sqlite:///")
    assert engine.conf[prefix] == "org.apache.iceberg.spark.SparkCatalog"
    assert engine.conf[f"{prefix}.uri"] == f"jdbc:sqlite:{database}"
    assert engine.conf[f"{prefix}.warehouse"] == settings.AUTOLOADER_WAREHOUSE
    assert engine.conf[f"{prefix}.jdbc.init-catalog-tables"] == "false"
    jars = engine.conf["spark.jars"].split(",")
    assert [jar.rsplit("/", 1)[1] for jar in jars] == [
        spark_sessions.ICEBERG_RUNTIME_JAR,
        "sqlite-jdbc.jar",
    ]


def test_a_postgresql_catalog_is_reached_through_its_jdbc_driver():
    conf = spark_sessions.shared_catalog_conf(
        catalog_name="autoloader",
        catalog_uri="postgresql+psycopg://loader:s3cret@db.internal:5433/catalog",
        warehouse="file:///data/warehouse",
    )

    assert conf["spark.sql.catalog.autoloader.uri"] == "jdbc:postgresql://db.internal:5433/catalog"
    assert conf["spark.sql.catalog.autoloader.jdbc.user"] == "loader"
    assert conf["spark.sql.catalog.autoloader.jdbc.password"] == "s3cret"
    assert conf["spark.jars"].endswith("/usr/share/java/postgresql.jar")


def test_a_cluster_catalog_in_the_configuration_is_used_as_it_is(spark_settings, tmp_path):
    """A catalog of the cluster's own (here Iceberg's hadoop catalog), passed through verbatim."""
    lake = {
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.type": "hadoop",
        "spark.sql.catalog.lake.warehouse": (tmp_path / "lake").as_uri(),
    }
    spark_settings.AUTOLOADER_SPARK_CATALOG = "lake"
    spark_settings.AUTOLOADER_SPARK_CONF = lake

    engine = load_engine("spark")
    snapshot_id = engine.append("raw.orders", pa.table({"id": [1, 2]}), properties={"k": "v"})

    assert engine.conf == lake and engine.shared_catalog_uri is None
    # Branches and tags of a catalog the product does not share are not its to make.
    assert not engine.can_stage and not engine.can_retain
    assert engine.describe_table("raw.orders").snapshot_id == snapshot_id
    assert list((tmp_path / "lake" / "raw" / "orders" / "metadata").glob("*.metadata.json"))


def test_spark_connect_is_refused_with_the_reason(spark_settings):
    spark_settings.AUTOLOADER_SPARK_MASTER = "sc://spark.example.internal:15002"

    with pytest.raises(ValueError, match="Spark Connect"):
        load_engine("spark")


def test_a_spark_run_loads_every_row_once_and_the_worker_reads_no_file(
    spark_settings, spark_ingestion, source_dir, no_reads_in_the_worker
):
    spark_settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=6)

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert (run.files_loaded, run.rows_written) == (5, 30)
    table = spark_ingestion.table_identifier
    assert table == "acme__raw.sales"  # the tenant's physical table behind "raw.sales"
    assert rows_by_file(table) == {f"part-{index:04d}.csv": 6 for index in range(5)}
    snapshots = load_engine("spark").list_snapshots(table)
    assert [snapshot.properties[SNAPSHOT_BATCH_KEY] for snapshot in snapshots] == list(
        RunBatch.objects.filter(run=run).order_by("id").values_list("batch_key", flat=True)
    )
    # Both engines describe the same table the same way, from its metadata.
    spark_info, iceberg_info = (
        load_engine("spark").describe_table(table),
        load_engine("iceberg").describe_table(table),
    )
    assert (spark_info.row_count, spark_info.snapshot_id) == (30, snapshots[-1].snapshot_id)
    assert (iceberg_info.row_count, iceberg_info.snapshot_id) == (30, snapshots[-1].snapshot_id)
    # The tenant's folder of the warehouse, like the embedded engine's tables.
    assert open_table(table).location().endswith("/warehouse/acme/raw/sales")
    lineage = open_table(table).scan(selected_fields=("_ingested_at",)).to_arrow()
    assert str(lineage.schema.field("_ingested_at").type) == "timestamp[us, tz=UTC]"


def test_a_malformed_file_fails_alone_and_a_new_column_is_merged(
    spark_settings, spark_session, spark_ingestion, source_dir, no_reads_in_the_worker
):
    write_csv_files(source_dir, files=3, rows=4)
    (source_dir / "b-short-row.csv").write_text("id,name,amount\n1,a,2.5\n2,b\n")
    (source_dir / "c-wider.csv").write_text("id,name,amount,region\n100,x,1.5,north\n")

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.PARTIAL_SUCCESS, run.error
    assert [item["path"] for item in run.failed_files] == ["b-short-row.csv"]
    assert "malformed" in run.failed_files[0]["error"]
    assert run.failed_files[0]["error_code"] == "FILE_READ_ERROR"
    table = spark_ingestion.table_identifier
    assert rows_by_file(table) == {
        **{f"part-{index:04d}.csv": 4 for index in range(3)},
        "c-wider.csv": 1,
    }
    assert "region" in open_table(table).schema().column_names
    # Reading them once gave up (a malformed row): its scratch branch is gone.
    assert set(open_table(table).metadata.refs) == {"main"}
    assert set(
        ProcessedFile.objects.filter(ingestion=spark_ingestion).values_list("path", flat=True)
    ) == {"part-0000.csv", "part-0001.csv", "part-0002.csv", "c-wider.csv"}
    # The files were read one at a time (the wider one's header differs): every frame Spark
    # kept for the batch is freed.
    assert spark_session.sparkContext._jsc.getPersistentRDDs().isEmpty()


@pytest.mark.parametrize(
    ("after_real_call", "cluster_maintenance"),
    [(True, False), (False, False), (True, True)],
    ids=["after-commit", "before-commit", "after-commit-then-snapshots-expired"],
)
def test_a_spark_run_whose_worker_died_mid_batch_resumes_exactly_once(
    spark_settings, spark_ingestion, source_dir, after_real_call, cluster_maintenance
):
    spark_settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=7)
    run = run_request(ingestion=spark_ingestion)
    dying = FaultyEngine(
        load_engine("spark"),
        fail_on="append_files",
        after_real_call=after_real_call,
        exception=WorkerKilled(),
    )
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.public_id, engine=dying)
    if cluster_maintenance:
        # Between the crash and the recovery, the cluster's routine maintenance (Iceberg's
        # own procedures) rewrites the files and expires the batch's snapshot: recovery
        # must still see that the batch committed, from its rows.
        spark = load_engine("spark")._session()
        table = f"{spark_settings.AUTOLOADER_CATALOG_NAME}.{spark_ingestion.table_identifier}"
        spark.sql(
            f"CALL {spark_settings.AUTOLOADER_CATALOG_NAME}.system.rewrite_data_files("
            f"table => '{spark_ingestion.table_identifier}', "
            "options => map('rewrite-all', 'true'))"
        ).collect()
        spark.sql(
            f"CALL {spark_settings.AUTOLOADER_CATALOG_NAME}.system.expire_snapshots("
            f"table => '{spark_ingestion.table_identifier}', "
            "older_than => TIMESTAMP '2999-01-01 00:00:00', retain_last => 1)"
        ).collect()
        batch = RunBatch.objects.get(status=CommitStatus.PENDING)
        assert (
            load_engine("spark").find_snapshot(
                spark_ingestion.table_identifier, key=SNAPSHOT_BATCH_KEY, value=batch.batch_key
            )
            is None
        ), f"{table}: the batch's snapshot is still there"
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert runs_recover_stale() == [run.public_id]

    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    assert rows_by_file(spark_ingestion.table_identifier) == {
        f"part-{index:04d}.csv": 7 for index in range(5)
    }
    assert ProcessedFile.objects.filter(ingestion=spark_ingestion).count() == 5
    assert not RunBatch.objects.filter(status=CommitStatus.PENDING).exists()


def test_cancelling_a_run_interrupts_its_spark_job(
    spark_settings, spark_session, spark_ingestion, source_dir, monkeypatch
):
    spark_settings.AUTOLOADER_RUN_STALE_SECONDS = 1.2  # the heartbeat looks every 0.2 s
    write_csv_files(source_dir, files=2, rows=3)
    real_frame = spark_reading.Reader._frame
    real_strict = spark_reading.Reader.read_strictly

    def sleepy(batches):
        # A Spark job that would take a minute: each partition sleeps in a Python worker.
        time.sleep(60)
        yield from batches

    def slow_frame(reader, uris, sample):
        frame = real_frame(reader, uris, sample)
        return frame.mapInArrow(sleepy, frame.schema)

    def slow_strict(reader, uris, schema):  # the same for a batch read once
        frame = real_strict(reader, uris, schema)
        return frame.mapInArrow(sleepy, frame.schema)

    monkeypatch.setattr(spark_reading.Reader, "_frame", slow_frame)
    monkeypatch.setattr(spark_reading.Reader, "read_strictly", slow_strict)
    run = run_request(ingestion=spark_ingestion)
    finished = []
    worker = threading.Thread(
        target=lambda: finished.append(run_execute(run_id=run.public_id)), daemon=True
    )
    started = time.monotonic()
    worker.start()
    deadline = time.monotonic() + 60
    while not spark_session.sparkContext.statusTracker().getActiveJobsIds():
        assert time.monotonic() < deadline, "the Spark job never started"
        time.sleep(0.1)

    run_cancel(run=run)
    worker.join(timeout=45)

    assert not worker.is_alive(), "the run did not stop"
    assert time.monotonic() - started < 45  # interrupted, not waited for
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED, run.error
    assert not load_engine("spark").table_exists(spark_ingestion.table_identifier)
    assert ProcessedFile.objects.filter(ingestion=spark_ingestion).count() == 0


def test_a_table_written_by_spark_is_adopted_file_by_file(spark_settings, tenant, source_dir):
    write_csv_files(source_dir, files=3, rows=5)
    first = IngestionFactory(
        tenant=tenant,
        public_id="first",
        source_uri=str(source_dir),
        destination_table="raw.sales",
        engine="spark",
    )
    run_execute(run_id=run_request(ingestion=first).public_id)

    counts = load_engine("spark").source_file_rows(first.table_identifier)

    assert counts == {f"part-{index:04d}.csv": 5 for index in range(3)}
    # A verification's form, data file by data file with progress: the same counts.
    seen: list[tuple[int, int]] = []
    counted = load_engine("spark").source_file_rows(
        first.table_identifier, progress=lambda done, total: seen.append((done, total))
    )
    assert counted == counts
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] >= 1


def test_spark_and_the_embedded_engine_share_a_postgresql_catalog(
    spark_settings, postgres_catalog_uri, tenant, source_dir
):
    """Production's catalog database: Spark's JDBC catalog and pyiceberg's SQL catalog in one
    PostgreSQL database, each reading and dropping the other's tables (PostgreSQL pass only)."""
    spark_settings.AUTOLOADER_CATALOG_URI = postgres_catalog_uri
    write_csv_files(source_dir, files=2, rows=3)
    on_spark = IngestionFactory(
        tenant=tenant, public_id="on-spark", source_uri=str(source_dir), engine="spark"
    )
    run = run_execute(run_id=run_request(ingestion=on_spark).public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    embedded, spark = load_engine("iceberg"), load_engine("spark")
    assert spark.conf[f"spark.sql.catalog.{spark.catalog}.uri"].startswith("jdbc:postgresql://")

    # The embedded engine sees Spark's table and its batch; Spark sees the embedded engine's.
    assert embedded.describe_table(on_spark.table_identifier).row_count == 6
    assert embedded.find_snapshot(
        on_spark.table_identifier,
        key=SNAPSHOT_BATCH_KEY,
        value=RunBatch.objects.get(run=run).batch_key,
    )
    embedded.append("acme__raw.other", pa.table({"id": [1, 2, 3]}), properties={"by": "pyiceberg"})
    assert spark.describe_table("acme__raw.other").row_count == 3
    assert spark.drop_table("acme__raw.other") is True
    assert not embedded.table_exists("acme__raw.other")


def test_a_zero_downtime_refresh_on_spark_publishes_whole_and_can_be_undone(
    spark_settings, spark_ingestion, source_dir, member
):
    """The new version is written by Spark into a branch of the live table (Iceberg's
    `branch_<name>`), published in one step, and undone to the old rows and history."""
    from ingestions.models import Role
    from refresh.models import OperationStatus, RefreshOperation
    from refresh.services import refresh_execute
    from refresh.sync import operation_sync
    from refresh.undo import refresh_undo

    write_csv_files(source_dir, files=2, rows=5)
    run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)
    write_csv_files(source_dir, files=1, rows=5, start=2)
    admin = member(Role.ADMIN).user
    table = spark_ingestion.table_identifier
    before = open_table(table).current_snapshot().snapshot_id

    operation = refresh_execute(
        ingestion=spark_ingestion, kind="full_refresh", actor=admin, confirm=True
    )
    assert operation.steps.first().details["replaced_at_publish"]
    assert open_table(table).current_snapshot().snapshot_id == before  # not yet published
    drain_queue()

    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.PUBLISHED, operation.error
    assert rows_by_file(table) == {f"part-{index:04d}.csv": 5 for index in range(3)}
    assert load_engine("spark").describe_table(table).row_count == 15

    refresh_undo(operation=operation, actor=admin, confirm=True)

    assert open_table(table).current_snapshot().snapshot_id == before
    assert rows_by_file(table) == {f"part-{index:04d}.csv": 5 for index in range(2)}
    assert ProcessedFile.objects.filter(ingestion=spark_ingestion).count() == 2


def test_a_file_named_like_a_pattern_is_read_alone_not_as_a_glob(
    spark_settings, spark_ingestion, source_dir
):
    """Spark expands globs in paths: "part-*.csv" would read every part file again."""
    write_csv_files(source_dir, files=3, rows=4)
    (source_dir / "part-*.csv").write_text("id,name,amount\n99,star,1.0\n")
    (source_dir / "{a,b}.csv").write_text("id,name,amount\n98,brace,2.0\n")
    (source_dir / "100%20 done?.csv").write_text("id,name,amount\n97,percent,3.0\n")

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.failed_files
    assert rows_by_file(spark_ingestion.table_identifier) == {
        **{f"part-{index:04d}.csv": 4 for index in range(3)},
        "part-*.csv": 1,
        "{a,b}.csv": 1,
        "100%20 done?.csv": 1,
    }


def test_a_file_spark_cannot_read_fails_alone_saying_why_by_its_own_name(
    spark_settings, spark_ingestion, source_dir
):
    write_csv_files(source_dir, files=2, rows=3)
    (source_dir / "broken.csv.gz").write_bytes(b"this is not gzip at all")

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.PARTIAL_SUCCESS, run.error
    [failure] = run.failed_files
    assert failure["path"] == "broken.csv.gz"
    assert "GZIP" in failure["error"] or "gzip" in failure["error"], failure["error"]
    assert "An error occurred while calling" not in failure["error"]
    assert str(source_dir) not in failure["error"]  # no server path in what users read
    assert rows_by_file(spark_ingestion.table_identifier) == {
        "part-0000.csv": 3,
        "part-0001.csv": 3,
    }


def test_the_console_shows_a_spark_ingestion_and_who_maintains_its_table(
    spark_settings, spark_ingestion, source_dir, member
):
    from django.test import Client

    from ingestions.models import Role

    write_csv_files(source_dir, files=1, rows=4)
    run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)
    client = Client()
    client.force_login(member(Role.VIEWER).user)

    page = client.get(f"/ingestions/{spark_ingestion.public_id}/")

    assert page.status_code == 200
    text = page.content.decode()
    assert "maintained by the cluster's own Iceberg procedures" in text
    table_page = client.get(f"/ingestions/{spark_ingestion.public_id}/table/").content.decode()
    assert ">lineage<" in table_page and "part-0000.csv" in table_page  # read through Spark


def test_spark_never_reads_a_file_that_resolves_outside_the_location(
    spark_settings, tenant, source_dir, tmp_path
):
    """Links planted in a granted source (after its listing) give Spark nothing to read."""
    from ingestions.locations import source_open

    outside = tmp_path / "someone-elses"
    outside.mkdir()
    (outside / "secret.csv").write_text("id,name,amount\n1,secret,9.9\n")
    write_csv_files(source_dir, files=1, rows=3)
    (source_dir / "theirs.csv").symlink_to(outside / "secret.csv")
    (source_dir / "passwd.csv").symlink_to("/etc/passwd")
    engine = load_engine("spark")
    source = source_open(tenant=tenant, uri=str(source_dir))

    batch = engine.read_files(
        source=source,
        paths=["part-0000.csv", "theirs.csv", "passwd.csv", "../someone-elses/secret.csv"],
        file_format="csv",
        options={},
    )
    try:
        assert batch.rows == {"part-0000.csv": 3}
        assert set(batch.failures) == {"theirs.csv", "passwd.csv", "../someone-elses/secret.csv"}
        assert "outside the storage location" in str(batch.failures["../someone-elses/secret.csv"])
        # Spark reads by path: it takes no link at all (one could be swapped under it).
        assert "symbolic link" in str(batch.failures["theirs.csv"])
        assert "symbolic link" in str(batch.failures["passwd.csv"])
        engine.append_files("acme__raw.sales", batch, properties={}, ingested_at=timezone.now())
    finally:
        engine.release_files(batch)
    assert rows_by_file("acme__raw.sales") == {"part-0000.csv": 3}
    assert (outside / "secret.csv").read_text() == "id,name,amount\n1,secret,9.9\n"


# --- one table schema, whatever the engine ---------------------------------------------

TYPED_CSV = (
    "order_id,amount,event_time,event_tz,day,flag,name\n"
    "{id},12.75,2026-01-01 10:00:00,2026-01-01T10:00:00Z,2026-01-01,true,alice\n"
    "{next},1.5,2026-01-02 11:30:00,2026-01-02T11:30:00+01:00,2026-01-02,false,bob\n"
)


def table_contents(table_name: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """The table's Iceberg schema (names and types, lineage columns included) and its rows
    (without `_ingested_at`), as plain pyiceberg reads them."""
    table = open_table(table_name)
    schema = [(field.name, str(field.field_type)) for field in table.schema().fields]
    rows = table.scan().to_arrow().drop_columns(["_ingested_at"]).sort_by("order_id").to_pylist()
    return schema, rows


def test_both_engines_give_the_same_files_the_same_table_and_append_to_each_others(
    spark_settings, tenant, tmp_path
):
    """Issue 23: the same CSV through either engine is one Iceberg schema (64-bit integers,
    a zone-less timestamp as `timestamp`, a zoned one as `timestamptz`) and the same rows,
    and a table moves between engines: each appends to the table the other wrote."""
    source = tmp_path / "landing" / "typed"
    source.mkdir(parents=True)
    (source / "a.csv").write_text(TYPED_CSV.format(id=1, next=2))
    ingestions = {
        engine: IngestionFactory(
            tenant=tenant,
            public_id=f"typed-{engine}",
            source_uri=str(source),
            destination_table=f"raw.typed_{engine}",
            engine=engine,
        )
        for engine in ("iceberg", "spark")
    }
    for ingestion in ingestions.values():
        run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
        assert run.status == RunStatus.SUCCESS, run.error

    embedded = table_contents(ingestions["iceberg"].table_identifier)
    on_spark = table_contents(ingestions["spark"].table_identifier)
    assert on_spark == embedded
    assert dict(embedded[0]) == {
        "order_id": "long",
        "amount": "double",
        "event_time": "timestamp",
        "event_tz": "timestamptz",
        "day": "date",
        "flag": "boolean",
        "name": "string",
        "_source_file": "string",
        "_ingested_at": "timestamptz",
    }

    # Each ingestion now runs on the other engine, onto the table the first one wrote.
    (source / "b.csv").write_text(TYPED_CSV.format(id=3, next=4))
    for engine, ingestion in ingestions.items():
        ingestion.engine = "spark" if engine == "iceberg" else "iceberg"
        ingestion.save(update_fields=["engine"])
        run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
        assert run.status == RunStatus.SUCCESS, run.error
        assert run.files_loaded == 1

    embedded_then_spark = table_contents(ingestions["iceberg"].table_identifier)
    spark_then_embedded = table_contents(ingestions["spark"].table_identifier)
    assert embedded_then_spark == spark_then_embedded
    assert embedded_then_spark[0] == embedded[0]  # no column widened or added
    assert [row["order_id"] for row in embedded_then_spark[1]] == [1, 2, 3, 4]
    assert embedded_then_spark[1][1]["event_tz"] == embedded[1][1]["event_tz"]  # 10:30 UTC


# --- Spark only where the work is -------------------------------------------------------


def test_web_requests_start_no_spark_application(
    spark_settings, spark_ingestion, source_dir, member, tmp_path
):
    """Issue 23: a real web process (gunicorn, console.wsgi) answers the ingestion, its
    preview, a zero-downtime refresh and a drop of a spark ingestion's table without ever
    starting Spark (no JVM among its processes): metadata is read through the shared catalog,
    the run is the worker's."""
    write_csv_files(source_dir, files=2, rows=3)
    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)  # the worker
    assert run.status == RunStatus.SUCCESS, run.error
    admin = member(Role.ADMIN)
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "AUTOLOADER_", "DATABASE_URL"))
    }
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_DEBUG="1",
        AUTOLOADER_DATA_DIR=str(tmp_path / "data"),
        AUTOLOADER_CATALOG_URI=settings.AUTOLOADER_CATALOG_URI,
        AUTOLOADER_WAREHOUSE=settings.AUTOLOADER_WAREHOUSE,
        AUTOLOADER_CATALOG_NAME=settings.AUTOLOADER_CATALOG_NAME,
        AUTOLOADER_SECRETS_KEY=settings.AUTOLOADER_SECRETS_KEY,
        AUTOLOADER_SPARK_MASTER="local[1]",
    )
    log = tmp_path / "web.log"
    with log.open("wb") as output:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "console.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "120"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # every process it starts is in its session
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1/ingestions/{spark_ingestion.public_id}"

    def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            url,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {admin.token_key}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    try:
        wait_for_port(port, timeout=60, process=web)
        status, detail = call("GET", base)
        assert status == 200, detail
        assert detail["table"]["exists"] is True and detail["table"]["row_count"] == 6
        status, preview = call("POST", f"{base}/full-refresh", {"dry_run": True})
        assert status == 200, preview
        assert preview["impact"]["files_to_process"] == 2
        status, refresh = call("POST", f"{base}/full-refresh", {"confirm": True})
        assert status == 202, refresh  # staged; its run waits for the worker
        status, drop = call("DELETE", f"{base}/table?dry_run=true")
        assert status == 200, drop
        assert drop["status"] == "dry_run"
        jvms = subprocess.run(
            ["pgrep", "-s", str(web.pid), "-f", "java"], capture_output=True, text=True
        ).stdout.split()
        assert jvms == [], f"the web process started Spark: {jvms}"
        assert "SparkContext" not in log.read_text()
    finally:
        web.terminate()
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)  # its own session only
            web.wait()


LIFE_OF_A_WORKERS_SPARK = """
import django, time
django.setup()
import pyarrow as pa
from ingestions.apps import spark_stop_idle
from ingestions.engines import load_engine
from ingestions.engines.spark import sessions

engine = load_engine("spark")
table = "acme__raw.life"

def append(value):
    engine.append(table, pa.table({"id": [value]}), properties={"value": str(value)})

append(1)
first = sessions.running(engine.master)
# What a cluster does when it removes the application (a master or worker restarted):
# the JVM's context stops, pyspark's objects do not know.
first.sparkContext._jsc.sc().stop()
append(2)  # a new application, no restart of this process
second = sessions.running(engine.master)
assert second is not None and second is not first
assert spark_stop_idle() == []  # just used
time.sleep(1.2)
assert spark_stop_idle() == [engine.master]  # idle: its cores go back to the cluster
assert sessions.running(engine.master) is None
append(3)  # the next run starts one again
assert engine.describe_table(table).row_count == 3
print("ok")
"""


def test_the_worker_rebuilds_a_stopped_spark_application_and_stops_an_idle_one(
    spark_settings, tmp_path
):
    """Issue 23: a worker whose Spark application was stopped under it (a cluster restart)
    starts a new one for the next call instead of failing until restarted; one unused for
    AUTOLOADER_SPARK_IDLE_SECONDS is stopped by the worker's periodic pass, and the next
    call starts one again. Its own process: the suite's SparkContext stays up."""
    env = {
        **os.environ,
        "AUTOLOADER_CATALOG_URI": settings.AUTOLOADER_CATALOG_URI,
        "AUTOLOADER_WAREHOUSE": settings.AUTOLOADER_WAREHOUSE,
        "AUTOLOADER_CATALOG_NAME": settings.AUTOLOADER_CATALOG_NAME,
        "AUTOLOADER_SPARK_MASTER": "local[1]",
        "AUTOLOADER_SPARK_IDLE_SECONDS": "1",
        "AUTOLOADER_SPARK_CONF": json.dumps(
            {"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1"}
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", LIFE_OF_A_WORKERS_SPARK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


# --- read once ---------------------------------------------------------------------------


def test_types_are_inferred_from_a_sample_and_a_file_that_does_not_fit_is_read_alone(
    spark_settings, spark_ingestion, source_dir, monkeypatch
):
    """Issue 23: CSV types come from the batch's first files (here: the first only), every
    file is read once with them; a later file whose values are wider is read again by
    itself, as the embedded engine would read it, and a truly malformed one fails alone."""
    monkeypatch.setattr(spark_reading, "INFER_SAMPLE_BYTES", 1)
    (source_dir / "a.csv").write_text("id,amount\n1,10\n2,20\n")
    (source_dir / "b.csv").write_text("id,amount\n3,1.5\n4,2.5\n")  # wider than the sample
    (source_dir / "c.csv").write_text("id,amount\n5,50\n")
    (source_dir / "d.csv").write_text("id,amount\n6,60\n7,60,extra,fields\n")  # malformed

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.PARTIAL_SUCCESS, run.error
    assert [failure["path"] for failure in run.failed_files] == ["d.csv"]
    assert "malformed" in run.failed_files[0]["error"]
    assert rows_by_file(spark_ingestion.table_identifier) == {"a.csv": 2, "b.csv": 2, "c.csv": 1}
    table = open_table(spark_ingestion.table_identifier)
    assert str(table.schema().find_field("amount").field_type) == "double"
    amounts = sorted(table.scan().to_arrow().column("amount").to_pylist())
    assert amounts == [1.5, 2.5, 10.0, 20.0, 50.0]


def test_the_inference_sample_is_the_first_files_up_to_its_bytes(monkeypatch):
    monkeypatch.setattr(spark_reading, "INFER_SAMPLE_BYTES", 100)
    paths = ["a", "b", "c", "d"]

    assert spark_reading.inference_sample(paths, {"a": 60, "b": 40, "c": 1, "d": 1}) == {"a", "b"}
    assert spark_reading.inference_sample(paths, {"a": 500, "b": 1}) == {"a"}  # at least one
    assert spark_reading.inference_sample(paths, None) == set(paths)  # sizes unknown: all


def test_a_corrected_file_is_reloaded_by_spark_in_one_overwrite(spark_ingestion, source_dir):
    """Issue 24 on the spark engine: the file's old rows out and its new rows in, one
    commit (an overwrite by `_source_file`)."""
    write_csv_files(source_dir, files=2, rows=5)
    assert run_execute(run_id=run_request(ingestion=spark_ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    versions = main_heads(spark_ingestion.table_identifier)
    path = source_dir / "part-0001.csv"
    mtime = path.stat().st_mtime_ns
    path.write_text("id,name,amount\n1,corrected,1275.0\n2,corrected,20.0\n")
    os.utime(path, ns=(mtime, mtime + 1_000_000_000))

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert [(item["path"], item["action"]) for item in run.changed_files] == [
        ("part-0001.csv", "reloaded")
    ]
    assert rows_by_file(spark_ingestion.table_identifier) == {
        "part-0000.csv": 5,
        "part-0001.csv": 2,
    }
    # Readers of main see one change: the scratch branch the rows were written to first
    # (read once) is no version of main.
    heads = main_heads(spark_ingestion.table_identifier)
    assert heads[: len(versions)] == versions
    assert len(set(heads[len(versions) :]) - set(versions)) == 1
    assert set(open_table(spark_ingestion.table_identifier).metadata.refs) == {"main"}


def main_heads(table_name: str) -> list[int | None]:
    """Main's snapshot in each version of the table's metadata, oldest first, repeats
    collapsed: what a reader polling main could have seen."""
    from pyiceberg.serializers import FromInputFile

    table = open_table(table_name)
    heads: list[int | None] = []
    for entry in table.metadata.metadata_log:
        metadata = FromInputFile.table_metadata(table.io.new_input(entry.metadata_file))
        heads.append(metadata.current_snapshot_id)
    heads.append(table.metadata.current_snapshot_id)
    return [head for index, head in enumerate(heads) if index == 0 or heads[index - 1] != head]


def records_read(spark_session) -> int:
    """Rows Spark's scans have read from files since the application started (its stages'
    input records, once its listeners have seen every event)."""
    context = spark_session.sparkContext
    context._jsc.sc().listenerBus().waitUntilEmpty()
    jvm = context._jvm
    stages = (
        context._jsc.sc()
        .statusStore()
        .stageList(
            None, False, False, context._gateway.new_array(jvm.double, 0), jvm.java.util.ArrayList()
        )
    )
    return sum(stages.apply(index).inputRecords() for index in range(stages.size()))


def test_a_spark_run_reads_each_csv_file_once(
    spark_settings, spark_session, spark_ingestion, source_dir, monkeypatch
):
    """Issue 23: the rows are written in the pass that reads them (to a scratch branch,
    counted from what was written, then committed): a new table's types come from the
    first file; once the table exists, from the table itself, and no file is read twice."""
    monkeypatch.setattr(spark_reading, "INFER_SAMPLE_BYTES", 1)  # the sample: one file
    write_csv_files(source_dir, files=4, rows=25)

    before = records_read(spark_session)
    first = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)
    first_read = records_read(spark_session) - before

    assert first.status == RunStatus.SUCCESS, first.error
    assert first.rows_written == 100
    # Each file once, and the one file of the inference sample a second time (at most).
    assert 100 <= first_read <= 100 + 2 * (25 + 1)
    write_csv_files(source_dir, files=3, rows=40, start=10)

    before = records_read(spark_session)
    second = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)
    second_read = records_read(spark_session) - before

    assert second.status == RunStatus.SUCCESS, second.error
    assert (second.files_loaded, second.rows_written) == (3, 120)
    assert second_read == 120  # the table's types: no inference pass, each file once
    table = spark_ingestion.table_identifier
    assert rows_by_file(table) == {
        **{f"part-{index:04d}.csv": 25 for index in range(4)},
        **{f"part-{index:04d}.csv": 40 for index in range(10, 13)},
    }
    assert set(open_table(table).metadata.refs) == {"main"}  # no scratch branch left
    snapshots = load_engine("spark").list_snapshots(table)
    assert [snapshot.properties[SNAPSHOT_BATCH_KEY] for snapshot in snapshots] == list(
        RunBatch.objects.filter(run__ingestion=spark_ingestion)
        .order_by("id")
        .values_list("batch_key", flat=True)
    )
    # Each batch names the `_ingested_at` its rows carry (what recovery counts by).
    for batch in RunBatch.objects.filter(run__ingestion=spark_ingestion):
        assert load_engine("spark").holds_rows_ingested_at(table, batch.ingested_at)


def test_a_batch_read_once_after_spark_merged_mains_manifests_keeps_every_row(
    spark_settings, spark_ingestion, source_dir
):
    """Past `commit.manifest.min-count-to-merge`, Spark's append to the scratch branch writes
    one merged manifest that also lists main's files as EXISTING: only the files the write
    ADDED are the batch's. Taking the others published them twice or, when the pass gave
    up, deleted main's live data files (found by review: at the 20th batch, with the
    catalog's min count of 20; here the count is 2)."""
    write_csv_files(source_dir, files=1, rows=10)
    assert run_execute(run_id=run_request(ingestion=spark_ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    table = open_table(spark_ingestion.table_identifier)
    with table.transaction() as transaction:
        transaction.set_properties({"commit.manifest.min-count-to-merge": "2"})
    for start in (1, 2, 3):
        write_csv_files(source_dir, files=1, rows=10 + start, start=start)
        run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)
        assert run.status == RunStatus.SUCCESS, run.error

    assert rows_by_file(spark_ingestion.table_identifier) == {
        "part-0000.csv": 10,
        "part-0001.csv": 11,
        "part-0002.csv": 12,
        "part-0003.csv": 13,
    }
    assert set(open_table(spark_ingestion.table_identifier).metadata.refs) == {"main"}


def test_a_scratch_branch_a_killed_worker_left_is_dropped_by_the_next_read(
    spark_settings, spark_ingestion, source_dir
):
    """A worker killed between the one-pass read and its commit leaves its scratch branch
    (rows no reader of main sees): the next batch on that table drops it, with the snapshot
    only it held, and main's rows are exactly the files' once."""
    write_csv_files(source_dir, files=2, rows=10)
    assert run_execute(run_id=run_request(ingestion=spark_ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    table = open_table(spark_ingestion.table_identifier)
    main_before = table.metadata.current_snapshot_id
    left = "autoloader_read_" + "0" * 16
    table.manage_snapshots().create_branch(main_before, left).commit()
    written = table.scan().to_arrow().slice(0, 5)  # a batch that never reached main
    table.append(written, branch=left)
    orphan_snapshot = open_table(spark_ingestion.table_identifier).metadata.refs[left].snapshot_id
    write_csv_files(source_dir, files=1, rows=7, start=5)

    run = run_execute(run_id=run_request(ingestion=spark_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    after = open_table(spark_ingestion.table_identifier).metadata
    assert set(after.refs) == {"main"}
    assert orphan_snapshot not in {snapshot.snapshot_id for snapshot in after.snapshots}
    assert main_before in {snapshot.snapshot_id for snapshot in after.snapshots}  # main's kept
    assert rows_by_file(spark_ingestion.table_identifier) == {
        "part-0000.csv": 10,
        "part-0001.csv": 10,
        "part-0005.csv": 7,
    }
