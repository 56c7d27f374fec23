"""The embedded engine writes a batch as data files part by part, then commits them once.

What would break if the streaming path broke: the data files of a batch carry the table's
field ids and statistics equal to their rows; a batch of many files (and many data files) is
one snapshot; a part with a new column evolves the schema in the same commit; a failure
while writing, or a refused commit, leaves the table as it was, deletes the files written,
and the next run loads every file once; a worker killed before the commit leaves files no
reader sees, which the orphan-file maintenance deletes.
"""

from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from django.utils import timezone
from pyiceberg.conversions import from_bytes
from pyiceberg.schema import index_by_id

from ingestions.engines import load_engine
from ingestions.engines.iceberg import writer as writer_module
from ingestions.errors import EngineError
from ingestions.models import CommitStatus, ProcessedFile, Run, RunBatch, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import SNAPSHOT_BATCH_KEY, run_request

from ..helpers import FaultyEngine, WorkerKilled, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


def data_files_on_disk(table) -> set[str]:
    folder = Path(table.location().removeprefix("file://")) / "data"
    return {str(path) for path in folder.rglob("*.parquet")}


def committed_data_files(table) -> set[str]:
    paths = table.inspect.files().column("file_path").to_pylist()
    return {path.removeprefix("file://") for path in paths}


def batch_snapshots(table) -> list:
    return [
        snapshot
        for snapshot in table.metadata.snapshots
        if SNAPSHOT_BATCH_KEY in (snapshot.summary.additional_properties or {})
    ]


def test_a_batch_of_many_files_is_one_snapshot_of_data_files_with_ids_and_statistics(
    settings, monkeypatch, csv_ingestion, source_dir
):
    # Each part its own row group, each row group its own data file: a batch of 4 files
    # becomes 4 data files, still one commit.
    monkeypatch.setattr(writer_module, "ROW_GROUP_BYTES", 1)
    write_csv_files(source_dir, files=1, rows=20)
    run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    table = open_table(csv_ingestion.table_identifier)
    with table.transaction() as transaction:
        transaction.set_properties({"write.target-file-size-bytes": "1"})
    settings.AUTOLOADER_BATCH_MAX_FILES = 100
    # 20,000 rows each: every file is fitted (and written) as a part of its own.
    write_csv_files(source_dir, files=4, rows=20_000, start=1)

    run = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS
    table = open_table(csv_ingestion.table_identifier)
    current = table.metadata.current_snapshot_id
    new = [item for item in batch_snapshots(table) if item.snapshot_id == current]
    assert len(batch_snapshots(table)) == 2  # the first run's, and this batch's one
    assert new and new[0].summary["added-data-files"] == "4"
    assert new[0].summary["added-records"] == "80000"
    schema = table.schema()
    ids = {field.name: field.field_id for field in index_by_id(schema).values()}
    files = table.inspect.files()
    assert len(files) == 5
    for entry in files.to_pylist():
        path = entry["file_path"].removeprefix("file://")
        # The Parquet file's columns carry the table's field ids.
        parquet_schema = pq.read_schema(path)
        assert {
            item.name: int(item.metadata[b"PARQUET:field_id"]) for item in parquet_schema
        } == ids
        rows = pq.read_table(path)
        assert entry["record_count"] == rows.num_rows
        nulls = dict(entry["null_value_counts"])
        lower, upper = dict(entry["lower_bounds"]), dict(entry["upper_bounds"])
        for name in ("id", "amount", "name", "_source_file"):
            field = schema.find_field(name)
            column = rows.column(name)
            assert nulls[field.field_id] == column.null_count
            bounds = pc.min_max(column).as_py()
            assert from_bytes(field.field_type, lower[field.field_id]) == bounds["min"]
            assert from_bytes(field.field_type, upper[field.field_id]) == bounds["max"]
    # A scan that prunes by these bounds finds the rows of one file only.
    found = table.scan(row_filter="id >= 300000 and id < 400000").to_arrow()
    assert found.num_rows == 20_000
    assert set(found.column("_source_file").to_pylist()) == {"part-0003.csv"}


def test_the_first_batch_of_a_new_table_is_one_data_file(settings, csv_ingestion, source_dir):
    """A part read from a file has `string` columns where the table's Arrow schema has
    `large_string`: the same Iceberg type, not a schema change that closes the data file
    (found by review: a new table's first batch was one data file per part)."""
    settings.AUTOLOADER_BATCH_MAX_FILES = 100
    write_csv_files(source_dir, files=5, rows=20_000)  # each file its own part

    run = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS
    table = open_table(csv_ingestion.table_identifier)
    assert table.current_snapshot().summary["added-data-files"] == "1"
    assert table.current_snapshot().summary["added-records"] == "100000"


def test_a_file_with_a_new_column_evolves_the_schema_in_the_same_commit(
    settings, csv_ingestion, source_dir
):
    write_csv_files(source_dir, files=1, rows=5)
    run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    before = open_table(csv_ingestion.table_identifier).metadata.current_snapshot_id
    write_csv_files(source_dir, files=1, rows=20_000, start=1)
    (source_dir / "part-0002.csv").write_text(
        "id,name,amount,region\n" + "".join(f"{9_000_000 + i},x,1.5,north\n" for i in range(3))
    )

    run = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)

    assert run.status == RunStatus.SUCCESS
    table = open_table(csv_ingestion.table_identifier)
    assert batch_snapshots(table)[0].snapshot_id == before
    assert len(batch_snapshots(table)) == 2
    region = table.schema().find_field("region")
    data = table.scan().to_arrow()
    assert data.num_rows == 20_008
    by_region = pc.value_counts(data.column("region")).to_pylist()
    assert {item["values"]: item["counts"] for item in by_region} == {None: 20_005, "north": 3}
    # The data file holding the new column carries its new field id.
    carried = set()
    for path in committed_data_files(table):
        for item in pq.read_schema(path):
            if item.name == "region":
                carried.add(int(item.metadata[b"PARQUET:field_id"]))
    assert carried == {region.field_id}


class FailingWriter:
    """The engine's real writer, failing on its `fail_at`-th part."""

    def __init__(self, real, fail_at: int):
        self.real = real
        self.fail_at = fail_at
        self.parts = 0

    def write(self, data):
        self.parts += 1
        if self.parts == self.fail_at:
            raise EngineError("No space left on device")
        self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


class WriterFaultingEngine:
    """The real engine whose writers fail mid-batch."""

    def __init__(self, fail_at: int):
        self.engine = load_engine()
        self.fail_at = fail_at

    def open_writer(self, *args, **kwargs):
        return FailingWriter(self.engine.open_writer(*args, **kwargs), self.fail_at)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_a_failure_mid_write_leaves_the_table_unchanged_and_the_run_recoverable(
    settings, monkeypatch, csv_ingestion, source_dir
):
    monkeypatch.setattr(writer_module, "ROW_GROUP_BYTES", 1)  # parts reach the files at once
    write_csv_files(source_dir, files=1, rows=10)
    run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    table = open_table(csv_ingestion.table_identifier)
    snapshot_before, files_before = table.metadata.current_snapshot_id, data_files_on_disk(table)
    write_csv_files(source_dir, files=3, rows=20_000, start=1)

    run = run_execute(
        run_id=run_request(ingestion=csv_ingestion).public_id,
        engine=WriterFaultingEngine(fail_at=3),
    )

    assert run.status == RunStatus.FAILED
    assert "No space left on device" in run.error
    table = open_table(csv_ingestion.table_identifier)
    assert table.metadata.current_snapshot_id == snapshot_before
    assert table.scan().to_arrow().num_rows == 10
    # The two parts written before the failure were deleted with the batch.
    assert data_files_on_disk(table) == files_before
    assert not RunBatch.objects.filter(run=run).exists()
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == 1

    again = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)

    assert again.status == RunStatus.SUCCESS
    assert again.files_loaded == 3
    data = open_table(csv_ingestion.table_identifier).scan().to_arrow()
    counts = pc.value_counts(data.column("_source_file")).to_pylist()
    assert {item["values"]: item["counts"] for item in counts} == {
        "part-0000.csv": 10,
        **{f"part-{i:04d}.csv": 20_000 for i in range(1, 4)},
    }


def test_a_refused_commit_deletes_the_data_files_it_would_have_added(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=1, rows=10)
    run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    table = open_table(csv_ingestion.table_identifier)
    files_before = data_files_on_disk(table)
    write_csv_files(source_dir, files=2, rows=50, start=1)
    refusing = FaultyEngine(
        load_engine(),
        fail_on="append",
        after_real_call=False,
        exception=EngineError("commit refused"),
    )

    run = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id, engine=refusing)

    assert run.status == RunStatus.FAILED
    assert RunBatch.objects.get(run=run).status == CommitStatus.ABANDONED
    assert data_files_on_disk(open_table(csv_ingestion.table_identifier)) == files_before


def test_files_of_a_worker_killed_before_its_commit_are_invisible_then_removed_as_orphans(
    settings, csv_ingestion, source_dir
):
    write_csv_files(source_dir, files=1, rows=10)
    run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    write_csv_files(source_dir, files=2, rows=50, start=1)
    dying = FaultyEngine(
        load_engine(), fail_on="append", after_real_call=False, exception=WorkerKilled()
    )

    run = run_request(ingestion=csv_ingestion)
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.public_id, engine=dying)

    table = open_table(csv_ingestion.table_identifier)
    orphans = data_files_on_disk(table) - committed_data_files(table)
    assert orphans  # written, never committed: the killed worker could delete nothing
    assert table.scan().to_arrow().num_rows == 10
    assert RunBatch.objects.get(run=run).status == CommitStatus.PENDING

    # The run is recovered by the next one (the batch is abandoned, its files load again),
    # and the orphan-file maintenance deletes what the dead worker wrote.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    again = run_execute(run_id=run_request(ingestion=csv_ingestion).public_id)
    assert again.status == RunStatus.SUCCESS
    assert RunBatch.objects.get(run=run).status == CommitStatus.ABANDONED
    result = load_engine().remove_orphan_files(
        csv_ingestion.table_identifier, older_than=timezone.now() + timedelta(hours=1)
    )
    table = open_table(csv_ingestion.table_identifier)
    assert result.files_removed >= len(orphans)
    assert not orphans & data_files_on_disk(table)
    assert data_files_on_disk(table) == committed_data_files(table)
    assert table.scan().to_arrow().num_rows == 110
