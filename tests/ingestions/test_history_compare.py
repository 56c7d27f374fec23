"""Comparing a listing with the processed-file history at scale (issues 23 and 24): the
history's signatures read as integers, its paths read in blocks the database joins, and
the walk that skips known files. Each test pins a boundary the fast paths cross: a
history past one read batch, paths past one id block, a time a hair before the next
second, a listing that outruns the history."""

import os
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

import ingestions.selectors
import refresh.planning
from ingestions.errors import SourceListingLimitError
from ingestions.locations import source_open
from ingestions.models import FileFailure, ProcessedFile, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request
from ingestions.selectors import processed_file_paths_into, processed_file_signatures
from ingestions.source_changes import file_changed, stored_micros
from ingestions.sources import SourceFile, list_source_entries, list_source_files

from ..factories import IngestionFactory, grant_location

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def record_history(ingestion, listing, *, with_ns: bool = True, **fields) -> None:
    """The history a run would have written for `listing` (its sizes and times); without
    `with_ns`, as entries written before the listed nanoseconds were kept."""
    now = timezone.now()
    ProcessedFile.objects.bulk_create(
        ProcessedFile(
            ingestion=ingestion,
            path=item.path,
            size_bytes=item.size_bytes,
            modified_at=item.modified_at,
            modified_ns=item.modified_ns if with_ns else None,
            loaded_at=now,
            **fields,
        )
        for item in listing
    )


@pytest.mark.django_db
def test_history_signatures_are_the_stored_times_to_the_microsecond(tenant):
    """The database turns each stored time into microseconds; SQLite's strftime('%s')
    alone rounds 19:49:02.999573 up to 19:49:03, which flagged unchanged files."""
    ingestion = IngestionFactory(tenant=tenant)
    moments = {
        "late-in-second.csv": datetime(2026, 12, 6, 19, 49, 2, 999573, tzinfo=UTC),
        "last-microsecond.csv": datetime(2026, 12, 6, 19, 49, 2, 999999, tzinfo=UTC),
        "whole-second.csv": datetime(2026, 12, 6, 19, 49, 3, tzinfo=UTC),
        "one-microsecond.csv": datetime(2026, 12, 6, 19, 49, 3, 1, tzinfo=UTC),
        "half-second.csv": datetime(2026, 12, 6, 19, 49, 3, 500000, tzinfo=UTC),
        "before-1970.csv": datetime(1969, 12, 31, 23, 59, 59, 250000, tzinfo=UTC),
        "no-time.csv": None,
    }
    now = timezone.now()
    ProcessedFile.objects.bulk_create(
        ProcessedFile(
            ingestion=ingestion, path=path, size_bytes=7, modified_at=moment, loaded_at=now
        )
        for path, moment in moments.items()
    )

    signatures = processed_file_signatures(ingestion=ingestion)

    assert {path: signature[1] for path, signature in signatures.items()} == {
        path: None if moment is None else (moment - EPOCH) // MICROSECOND
        for path, moment in moments.items()
    }
    assert all(signature[0] == 7 and signature[2] == "" for signature in signatures.values())
    assert all(signature[4] is None for signature in signatures.values())


@pytest.mark.django_db
def test_an_entry_with_its_listed_nanoseconds_is_read_without_date_arithmetic(tenant):
    """An entry a run wrote keeps the listed time as given: the signature carries those
    nanoseconds and no microseconds (nothing computed from `modified_at`), and a listing
    with another time in the same microsecond is not a change, as before."""
    ingestion = IngestionFactory(tenant=tenant)
    listed = SourceFile("a.csv", 7, 1_796_586_542_999_573_400)
    record_history(ingestion, [listed])

    signature = processed_file_signatures(ingestion=ingestion)["a.csv"]

    assert (signature[0], signature[1], signature[4]) == (7, None, listed.modified_ns)
    assert not file_changed(signature, listed)
    assert not file_changed(signature, listed._replace(modified_ns=listed.modified_ns + 100))
    assert file_changed(signature, listed._replace(modified_ns=listed.modified_ns + 1000))
    assert file_changed(signature, listed._replace(size_bytes=8))


def test_a_listed_time_compares_as_the_datetime_a_run_records():
    """`stored_micros` is what `SourceFile.modified_at` gives, to the microsecond, for
    every nanosecond time, including the half-microseconds where rounding decides."""
    chooser = random.Random(24)
    times = [chooser.randrange(-(10**18), 2 * 10**18) for _ in range(20_000)]
    second = 1_796_586_542 * 10**9
    times += [second + offset for offset in (0, 499, 500, 501, 1500, 2500, 999_999_500)]
    for modified_ns in times:
        recorded = SourceFile("f.csv", 1, modified_ns).modified_at
        assert stored_micros(modified_ns) == (recorded - EPOCH) // MICROSECOND, modified_ns
        # The same rule whether the history gives microseconds or a datetime (verify).
        listed = SourceFile("f.csv", 1, modified_ns)
        assert not file_changed((1, stored_micros(modified_ns), ""), listed)
        assert not file_changed((1, recorded, ""), listed)
        assert file_changed((1, stored_micros(modified_ns) + 1, ""), listed)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_ns", [True, False], ids=["listed-ns", "written-before-ns"])
def test_a_run_classifies_new_unchanged_changed_and_gone_past_one_read_batch(
    tenant, source_dir, with_ns
):
    """A history longer than one read batch (10,000 rows): of 10,004 loaded files, one
    grew, one only moved by a microsecond, one is gone; one new file appears. The run
    names exactly those, loads the new one, and flags nothing else — whether the history
    kept the listed nanoseconds or only the stored time (entries written before)."""
    base_ns = 1_796_586_542_123_456_000  # whole microseconds: no rounding to argue about
    for index in range(10_004):
        path = source_dir / f"part-{index:05d}.csv"
        path.write_text(f"id\n{index}\n")
        os.utime(path, ns=(base_ns, base_ns + index * 1000))
    ingestion = IngestionFactory(
        tenant=tenant, source_uri=str(source_dir), changed_files="warn", gone_files="keep"
    )
    record_history(
        ingestion,
        list_source_files(source=source_open(tenant=tenant, uri=str(source_dir))),
        with_ns=with_ns,
    )
    grown, moved, gone = (source_dir / f"part-{index:05d}.csv" for index in (0, 5_000, 10_003))
    grown.write_text("id\n0\n1\n")
    os.utime(grown, ns=(base_ns, base_ns))
    os.utime(moved, ns=(base_ns, base_ns + 5_000 * 1000 + 1000))
    gone.unlink()
    (source_dir / "part-99999.csv").write_text("id\n99999\n")

    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert sorted(item["path"] for item in run.changed_files) == [
        "part-00000.csv",
        "part-05000.csv",
    ]
    assert run.files_changed == 2
    assert (run.files_gone, run.gone_files) == (1, ["part-10003.csv"])
    assert run.files_loaded == 1
    assert ProcessedFile.objects.filter(ingestion=ingestion, path="part-99999.csv").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("block", [2, 3, 7, 100])
def test_history_paths_arrive_whole_across_blocks(tenant, other_tenant, monkeypatch, block):
    """Paths joined by the database a block at a time (shrunk here to cross its edges):
    full and partial blocks, a path with a newline in it (its block is read again row by
    row), another ingestion's and an archived generation's rows (never included), and
    the paths left out."""
    monkeypatch.setattr(ingestions.selectors, "HISTORY_BLOCK", block)
    ingestion = IngestionFactory(tenant=tenant)
    other = IngestionFactory(tenant=other_tenant)
    now = timezone.now()
    mine = [f"f-{index}.csv" for index in range(6)] + ["odd\nname.csv", "held.csv"]
    ProcessedFile.all_generations.bulk_create(
        [ProcessedFile(ingestion=ingestion, path=path, loaded_at=now) for path in mine]
        + [
            ProcessedFile(ingestion=other, path="f-10.csv", loaded_at=now),
            ProcessedFile(
                ingestion=ingestion,
                generation=ingestion.history_generation + 1,
                path="f-2b.csv",
                loaded_at=now,
            ),
        ]
    )

    paths: set[str] = {"already-there.csv"}
    processed_file_paths_into(paths, ingestion=ingestion, leave_out={"held.csv"})

    assert paths == {"already-there.csv", *mine} - {"held.csv"}


def test_a_skipped_file_is_not_listed_but_counts_against_the_bound(
    source_dir, open_source, settings
):
    """Exactly one block of the walk's bound (1,024 files) is allowed and one file more is
    refused, whether the files are listed or skipped as known."""
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 1024
    for index in range(1024):
        (source_dir / f"p-{index:04d}.csv").write_text("x")
    known = {f"p-{index:04d}.csv" for index in range(0, 1024, 2)}

    listed = list_source_entries(source=open_source(), skip=known)

    assert [entry[0] for entry in listed] == [f"p-{index:04d}.csv" for index in range(1, 1024, 2)]
    assert len(list_source_entries(source=open_source())) == 1024
    (source_dir / "p-1024.csv").write_text("x")
    all_known = known | {f"p-{index:04d}.csv" for index in range(1025)}
    with pytest.raises(SourceListingLimitError, match="more than 1,024 files"):
        list_source_entries(source=open_source(), skip=all_known)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("listing_first", [False, True], ids=["history-first", "listing-first"])
def test_a_fresh_start_preview_counts_the_new_files_whoever_wins_the_race(
    tenant, source_dir, admin_client, monkeypatch, listing_first
):
    """The preview's listing skips files as the history arrives; one the listing met
    before its history block (forced here: the real listing, given nothing to skip) is
    dropped afterwards. Either way: the new files, minus the quarantined one."""
    for name in ("a.csv", "b.csv", "odd\nname.csv", "new.csv", "held.csv"):
        (source_dir / name).write_text("id\n1\n")
    ingestion = IngestionFactory(tenant=tenant, public_id="sales", source_uri=str(source_dir))
    listing = list_source_files(source=source_open(tenant=tenant, uri=str(source_dir)))
    record_history(
        ingestion, [item for item in listing if item.path not in ("new.csv", "held.csv")]
    )
    now = timezone.now()
    FileFailure.objects.create(
        ingestion=ingestion,
        path="held.csv",
        attempts=3,
        first_failed_at=now,
        last_failed_at=now,
        quarantined_at=now,
    )
    if listing_first:
        real = refresh.planning.list_source_entries
        monkeypatch.setattr(
            refresh.planning,
            "list_source_entries",
            lambda **options: real(**{**options, "skip": ()}),
        )

    response = admin_client.post(
        "/api/v1/ingestions/sales/fresh-start", {"dry_run": True}, format="json"
    )

    assert response.status_code == 200, response.content
    impact = response.json()["impact"]
    assert (impact["files_to_process"], impact["files_skipped"]) == (1, 3)


@pytest.mark.django_db(transaction=True)
def test_an_object_store_listing_skips_known_keys_and_counts_them(tenant, s3_bucket, settings):
    """S3's paged listing skips the keys it is told to, as the local walk does, and they
    still count against the bound."""
    s3_bucket.seed([f"in/part-{index}.csv" for index in range(5)])
    assert grant_location(tenant, s3_bucket.uri("in")) is not None
    source = source_open(tenant=tenant, uri=s3_bucket.uri("in"))

    listed = list_source_entries(source=source, skip={"part-1.csv", "part-3.csv"})

    assert [entry[0] for entry in listed] == ["part-0.csv", "part-2.csv", "part-4.csv"]
    settings.AUTOLOADER_LISTING_MAX_ENTRIES = 4
    with pytest.raises(SourceListingLimitError, match="more than 4 files"):
        list_source_entries(source=source, skip={"part-0.csv", "part-1.csv", "part-2.csv"})
