"""S3 sources and an S3 warehouse, against a real S3 API on loopback (moto's server)."""

import psycopg
import pytest

from ingestions.engines import load_engine
from ingestions.errors import SourceUnavailableError
from ingestions.locations import source_open
from ingestions.models import Ingestion, ProcessedFile, RunStatus, StorageLocation
from ingestions.run_executor import run_execute
from ingestions.runs import run_request
from ingestions.sources import list_source_files, read_source_file

from ..factories import IngestionFactory, grant_location

pytestmark = pytest.mark.django_db(transaction=True)


def csv_body(file_index: int, rows: int) -> bytes:
    lines = ["id,name,amount"]
    lines += [f"{file_index * 1000 + row},name-{row},{row * 1.5}" for row in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def open_table_from_outside(table_name: str, *, catalog_uri: str, warehouse: str, endpoint: str):
    """Plain pyiceberg, as a user outside the product opens the table."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "test",
        uri=catalog_uri,
        warehouse=warehouse,
        **{
            "s3.endpoint": endpoint,
            "s3.region": "us-east-1",
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
        },
    )
    return catalog.load_table(table_name)


def open_granted(tenant, location: str, uri: str | None = None):
    """Grant `tenant` the S3 `location` (no keys of its own: the AUTOLOADER_S3_* settings)
    and open `uri` (the location itself by default) through it."""
    assert grant_location(tenant, location) is not None
    return source_open(tenant=tenant, uri=uri or location)


def s3_ingestion(tenant, bucket, prefix: str = "landing/sales") -> Ingestion:
    return IngestionFactory(
        tenant=tenant,
        public_id="s3-sales",
        source_uri=bucket.uri(prefix),
        source_format="csv",
        source_pattern="*.csv",
        destination_table="raw.s3_sales",
    )


def test_listing_paginates_over_ten_thousand_objects(tenant, s3_bucket):
    # S3 answers at most 1,000 keys per request: 10,500 objects need 11 pages.
    keys = [f"big/day={index % 7}/part-{index:05d}.csv" for index in range(10_500)]
    s3_bucket.seed(keys)
    s3_bucket.seed(["big/_SUCCESS", "big/.part-00001.csv.crc", "other/outside.csv"])

    listing = list_source_files(source=open_granted(tenant, s3_bucket.uri("big")), pattern="*.csv")

    paths = [source.path for source in listing]
    assert len(paths) == 10_500
    assert len(set(paths)) == 10_500
    assert paths == sorted(key.removeprefix("big/") for key in keys)
    assert all(source.size_bytes == 5 and source.modified_at.tzinfo for source in listing)


def test_listing_and_reading_a_source_under_a_prefix(tenant, s3_bucket):
    s3_bucket.put("landing/a.csv", csv_body(1, 3))
    s3_bucket.put("landing/nested/b.csv", csv_body(2, 2))
    s3_bucket.put("landing/notes.txt", b"not data")
    s3_bucket.put("landing-other/c.csv", csv_body(3, 1))

    source = open_granted(tenant, s3_bucket.uri("landing"), s3_bucket.uri("landing/"))
    listing = list_source_files(source=source, pattern="*.csv")
    data = read_source_file(
        source=source_open(tenant=tenant, uri=s3_bucket.uri("landing")),
        path="nested/b.csv",
        file_format="csv",
    )

    assert [source.path for source in listing] == ["a.csv", "nested/b.csv"]
    assert data["id"].to_pylist() == [2000, 2001]


def test_s3a_uris_reach_the_same_bucket(tenant, s3_bucket):
    s3_bucket.put("in/a.csv", csv_body(1, 1))

    # Granted as s3://, opened as s3a://: the same location.
    source = open_granted(tenant, s3_bucket.uri("in"), f"s3a://{s3_bucket.name}/in")
    listing = list_source_files(source=source)

    assert [source.path for source in listing] == ["a.csv"]


def test_a_missing_prefix_is_reported_as_unavailable(tenant, s3_bucket):
    source = open_granted(tenant, s3_bucket.uri("no"), s3_bucket.uri("no/such/prefix"))

    with pytest.raises(SourceUnavailableError, match="does not exist"):
        list_source_files(source=source)


def test_an_unreachable_endpoint_is_reported_as_unavailable(tenant, s3_bucket, settings):
    settings.AUTOLOADER_S3_ENDPOINT_URL = "http://127.0.0.1:9"  # discard port: nothing there
    source = open_granted(tenant, s3_bucket.uri("landing"))

    with pytest.raises(SourceUnavailableError, match="Cannot list source"):
        list_source_files(source=source)


def test_credentials_stay_out_of_the_database(tenant, s3_bucket):
    ingestion = s3_ingestion(tenant, s3_bucket)

    stored = Ingestion.objects.filter(pk=ingestion.pk).values().get()
    # The location was granted without keys of its own: the settings' keys are not copied.
    locations = list(StorageLocation.objects.filter(tenant=tenant).values())

    assert stored["source_uri"] == f"s3://{s3_bucket.name}/landing/sales"
    assert [location["uri"] for location in locations] == [f"s3://{s3_bucket.name}/landing/sales/"]
    assert "testing" not in repr(stored) + repr(locations)


def run_s3_ingestion(tenant, bucket, *, files: int, rows: int):
    for index in range(files):
        bucket.put(f"landing/sales/part-{index:03d}.csv", csv_body(index, rows))
    ingestion = s3_ingestion(tenant, bucket)
    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return ingestion, run


def test_an_ingestion_from_s3_into_an_s3_warehouse(tenant, s3_bucket, settings):
    settings.AUTOLOADER_WAREHOUSE = s3_bucket.uri("warehouse")
    settings.AUTOLOADER_BATCH_MAX_FILES = 2

    ingestion, run = run_s3_ingestion(tenant, s3_bucket, files=5, rows=4)

    assert (run.files_loaded, run.rows_written) == (5, 20)
    assert ProcessedFile.objects.filter(ingestion=ingestion).count() == 5
    data_files = [key for key in s3_bucket.keys("warehouse") if key.endswith(".parquet")]
    assert data_files, "the data files must be in S3"
    table = open_table_from_outside(
        ingestion.table_identifier,
        catalog_uri=settings.AUTOLOADER_CATALOG_URI,
        warehouse=settings.AUTOLOADER_WAREHOUSE,
        endpoint=settings.AUTOLOADER_S3_ENDPOINT_URL,
    )
    assert table.metadata_location.startswith(f"s3://{s3_bucket.name}/warehouse/")
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == sorted(
        index * 1000 + row for index in range(5) for row in range(4)
    )
    assert len(table.snapshots()) == 3  # 2 + 2 + 1 files

    # Purge reaches S3 too: the data files go with the table.
    assert load_engine().drop_table(ingestion.table_identifier) is True
    assert not [key for key in s3_bucket.keys("warehouse") if key.endswith(".parquet")]


def test_s3_source_s3_warehouse_and_a_postgresql_catalog(
    tenant, s3_bucket, settings, postgres_catalog_uri
):
    settings.AUTOLOADER_CATALOG_URI = postgres_catalog_uri
    settings.AUTOLOADER_WAREHOUSE = s3_bucket.uri("warehouse")

    ingestion, run = run_s3_ingestion(tenant, s3_bucket, files=3, rows=5)

    # The catalog row is in PostgreSQL ...
    url = postgres_catalog_uri.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as catalog_db:
        rows = catalog_db.execute(
            "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables"
        ).fetchall()
    assert [(namespace, name) for namespace, name, _ in rows] == [("acme__raw", "s3_sales")]
    assert rows[0][2].startswith(f"s3://{s3_bucket.name}/warehouse/")
    # ... the data in S3, and any pyiceberg opens it.
    assert any(key.endswith(".parquet") for key in s3_bucket.keys("warehouse"))
    table = open_table_from_outside(
        ingestion.table_identifier,
        catalog_uri=postgres_catalog_uri,
        warehouse=settings.AUTOLOADER_WAREHOUSE,
        endpoint=settings.AUTOLOADER_S3_ENDPOINT_URL,
    )
    assert table.scan().to_arrow().num_rows == 15
    batch_keys = {
        snapshot.summary.additional_properties.get("autoloader.batch-key")
        for snapshot in table.snapshots()
    }
    assert all(key and key.startswith(run.public_id) for key in batch_keys)
    assert ProcessedFile.objects.filter(ingestion=ingestion).count() == 3
