"""Changed files on S3 (issue 24): the listing gives each object's ETag, the history keeps
it, and a rewrite that size and time cannot tell apart is reloaded exactly once."""

import pytest

from ingestions.locations import source_open
from ingestions.models import ProcessedFile, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request
from ingestions.sources import list_source_entries, list_source_files

from ..factories import IngestionFactory, grant_location
from ..helpers import open_table

pytestmark = pytest.mark.django_db(transaction=True)

OLD = b"id,name,amount\n1,first,12.75\n2,second,20.00\n"
NEW = b"id,name,amount\n1,first,99.99\n2,second,30.00\n"  # the same size, other values


def store_key(bucket, key: str):
    """The object as moto's server holds it (the server runs in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket.name, key)


def etag_of(bucket, key: str) -> str:
    return store_key(bucket, key).etag.strip('"')


def ingestion_over(tenant, bucket):
    assert grant_location(tenant, bucket.uri("landing")) is not None
    return IngestionFactory(
        tenant=tenant,
        public_id="s3-orders",
        source_uri=bucket.uri("landing"),
        source_format="csv",
        destination_table="raw.s3_orders",
    )


def amounts(ingestion) -> dict[str, list[float]]:
    rows = open_table(ingestion.table_identifier).scan().to_arrow().to_pylist()
    found: dict[str, list[float]] = {}
    for row in rows:
        found.setdefault(row["_source_file"], []).append(row["amount"])
    return {path: sorted(values) for path, values in found.items()}


def test_the_s3_listing_gives_each_objects_etag_and_the_counting_form_stays_three_items(
    tenant, s3_bucket
):
    s3_bucket.put("landing/a.csv", OLD)
    s3_bucket.put("landing/b.csv", NEW)
    assert grant_location(tenant, s3_bucket.uri("landing")) is not None
    source = source_open(tenant=tenant, uri=s3_bucket.uri("landing"))

    listing = list_source_files(source=source)

    # The store's ETag, without its quotes (pyarrow uploads in parts: "<md5 of md5s>-1").
    assert [(item.path, item.etag) for item in listing] == [
        ("a.csv", etag_of(s3_bucket, "landing/a.csv")),
        ("b.csv", etag_of(s3_bucket, "landing/b.csv")),
    ]
    assert listing[0].etag != listing[1].etag and listing[0].etag.endswith("-1")
    # The time is the store's, to the second, as pyarrow's listing gave it (histories
    # recorded before ETags still match).
    key = store_key(s3_bucket, "landing/a.csv")
    assert listing[0].modified_at.replace(microsecond=0) == key.last_modified.replace(
        microsecond=0, tzinfo=listing[0].modified_at.tzinfo
    )
    # Counting callers (dry-runs, the source check) keep their three-item tuples.
    assert [len(entry) for entry in list_source_entries(source=source)] == [3, 3]


def test_a_same_size_rewrite_in_the_same_second_is_seen_by_its_etag_and_reloaded_once(
    tenant, s3_bucket
):
    s3_bucket.put("landing/orders-1.csv", OLD)
    s3_bucket.put("landing/orders-2.csv", OLD)
    ingestion = ingestion_over(tenant, s3_bucket)
    first = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert first.status == RunStatus.SUCCESS, first.error
    entry = ProcessedFile.objects.get(ingestion=ingestion, path="orders-1.csv")
    assert entry.etag == etag_of(s3_bucket, "landing/orders-1.csv")
    loaded_time = store_key(s3_bucket, "landing/orders-1.csv").last_modified

    # Rewritten in place: the same size, and (pinned, so the test does not depend on the
    # clock) the same modification time. Only the content's checksum differs.
    s3_bucket.put("landing/orders-1.csv", NEW)
    store_key(s3_bucket, "landing/orders-1.csv").last_modified = loaded_time
    [listed] = [
        item
        for item in list_source_files(source=source_open(tenant=tenant, uri=ingestion.source_uri))
        if item.path == "orders-1.csv"
    ]
    assert (listed.size_bytes, listed.modified_at) == (entry.size_bytes, entry.modified_at)

    second = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert second.status == RunStatus.SUCCESS, second.error
    assert second.files_changed == 1
    assert [(item["path"], item["action"]) for item in second.changed_files] == [
        ("orders-1.csv", "reloaded")
    ]
    # Replaced, not duplicated: the new rows once, the untouched file's rows as they were.
    assert amounts(ingestion) == {"orders-1.csv": [30.0, 99.99], "orders-2.csv": [12.75, 20.0]}
    entry = ProcessedFile.objects.get(ingestion=ingestion, path="orders-1.csv")  # replaced
    assert (entry.etag, entry.run_id) == (etag_of(s3_bucket, "landing/orders-1.csv"), second.pk)
    assert ProcessedFile.objects.filter(ingestion=ingestion).count() == 2

    # The history now holds the new ETag: the next run finds nothing to do.
    third = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert (third.files_found, third.files_changed) == (0, 0)
    assert amounts(ingestion)["orders-1.csv"] == [30.0, 99.99]


def test_a_history_without_etags_is_judged_by_size_and_time_only(tenant, s3_bucket):
    # Entries recorded before the listing gave ETags (or by a store that gives none).
    s3_bucket.put("landing/orders-1.csv", OLD)
    ingestion = ingestion_over(tenant, s3_bucket)
    run_execute(run_id=run_request(ingestion=ingestion).public_id)
    ProcessedFile.objects.filter(ingestion=ingestion).update(etag="")

    again = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert (again.files_found, again.files_changed) == (0, 0)
