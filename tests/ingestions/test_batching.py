"""Batches close by size, rows and time, not by a file count; appends stay cheap as a table ages."""

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingestions.engines import load_engine
from ingestions.models import CommitStatus, ProcessedFile, RunBatch, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request

from ..helpers import open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "acme__raw.events"


def rows_by_file(table_name: str) -> dict[str, int]:
    data = open_table(table_name).scan(selected_fields=("_source_file",)).to_arrow()
    return {
        item["values"]: item["counts"] for item in pc.value_counts(data["_source_file"]).to_pylist()
    }


def run_once(ingestion) -> None:
    run = run_request(ingestion=ingestion)
    run = run_execute(run_id=run.public_id)
    assert run.status == RunStatus.SUCCESS, run.error


def committed_batch_sizes() -> list[int]:
    batches = RunBatch.objects.filter(status=CommitStatus.COMMITTED).order_by("pk")
    return [len(files) for files in batches.values_list("files", flat=True)]


def test_many_small_files_commit_as_one_snapshot(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=150, rows=3)
    run_once(csv_ingestion)

    assert committed_batch_sizes() == [150]
    assert len(load_engine().list_snapshots(csv_ingestion.table_identifier)) == 1
    assert rows_by_file(csv_ingestion.table_identifier) == {
        f"part-{i:04d}.csv": 3 for i in range(150)
    }


def test_a_batch_closes_when_its_rows_reach_the_bound(settings, csv_ingestion, source_dir):
    settings.AUTOLOADER_BATCH_MAX_ROWS = 10
    write_csv_files(source_dir, files=5, rows=4)
    run_once(csv_ingestion)

    # 4 + 4 + 4 rows pass 10: three files commit, the other two make the next batch.
    assert committed_batch_sizes() == [3, 2]
    assert rows_by_file(csv_ingestion.table_identifier) == {
        f"part-{i:04d}.csv": 4 for i in range(5)
    }
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == 5


def test_a_batch_closes_when_its_reading_time_is_spent(settings, csv_ingestion, source_dir):
    settings.AUTOLOADER_BATCH_MAX_SECONDS = 0
    write_csv_files(source_dir, files=3, rows=2)
    run_once(csv_ingestion)

    assert committed_batch_sizes() == [1, 1, 1]
    assert sum(rows_by_file(csv_ingestion.table_identifier).values()) == 6


def test_the_files_and_bytes_bounds_still_cap_a_batch(settings, csv_ingestion, source_dir):
    settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=2)
    run_once(csv_ingestion)
    assert committed_batch_sizes() == [2, 2, 1]

    settings.AUTOLOADER_BATCH_MAX_FILES = 100_000
    settings.AUTOLOADER_BATCH_MAX_BYTES = 1  # every file is bigger: one file a batch
    write_csv_files(source_dir, files=2, rows=2, start=5)
    run_once(csv_ingestion)
    assert committed_batch_sizes() == [2, 2, 1, 1, 1]


def test_a_failed_file_does_not_split_or_fail_its_batch(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=4, rows=3)
    (source_dir / "part-0002.csv").write_bytes(b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n")
    run = run_request(ingestion=csv_ingestion)
    run = run_execute(run_id=run.public_id)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert committed_batch_sizes() == [3]
    assert rows_by_file(csv_ingestion.table_identifier) == {
        "part-0000.csv": 3,
        "part-0001.csv": 3,
        "part-0003.csv": 3,
    }


def test_files_read_together_still_fail_alone(csv_ingestion, source_dir):
    (source_dir / "a.csv").write_text("id,name,amount\n1,a,1.5\n")
    run_once(csv_ingestion)  # amount is a double column now
    # The same integer columns in all three: fitted together, until one cannot fit.
    (source_dir / "b.csv").write_text("id,name,amount\n2,b,2\n3,b,3\n")
    (source_dir / "c.csv").write_text("id,name,amount\n4,c,9007199254740993\n")
    (source_dir / "d.csv").write_text("id,name,amount\n5,d,5\n")
    run = run_request(ingestion=csv_ingestion)
    run = run_execute(run_id=run.public_id)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert [item["path"] for item in run.failed_files] == ["c.csv"]
    assert "amount" in run.failed_files[0]["error"]
    assert rows_by_file(csv_ingestion.table_identifier) == {"a.csv": 1, "b.csv": 2, "d.csv": 1}
    assert committed_batch_sizes() == [1, 2]


# --- the engine's append ---------------------------------------------------------------


def batch(ids: list[int], **extra: list) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), **extra})


def metadata_files(table_name: str) -> list[Path]:
    location = open_table(table_name).location().removeprefix("file://")
    return sorted((Path(location) / "metadata").glob("*.metadata.json"))


def test_append_keeps_a_bounded_number_of_metadata_files(db):
    engine = load_engine()
    for index in range(30):
        engine.append(TABLE, batch([index]), properties={"n": str(index)})

    table = open_table(TABLE)
    assert len(table.scan().to_arrow()) == 30
    assert table.properties["write.metadata.delete-after-commit.enabled"] == "true"
    # The current metadata file and the 20 before it; no file from a table creation per append.
    assert len(metadata_files(TABLE)) == 21


def test_append_changes_the_schema_only_when_the_data_brings_a_new_one(db):
    engine = load_engine()
    engine.append(TABLE, batch([1]), properties={})
    engine.append(TABLE, batch([2]), properties={})
    schema_ids = {open_table(TABLE).metadata.current_schema_id}

    engine.append(TABLE, batch([3], note=["new column"]), properties={})
    table = open_table(TABLE)
    assert "note" in table.schema().column_names
    assert table.metadata.current_schema_id not in schema_ids
    assert len(table.metadata.schemas) == 2  # the first schema, then the one with `note`


@pytest.mark.parametrize("other_writes_to", ["main", "a-branch"])
def test_an_append_lands_on_top_of_another_writers_commit(db, other_writes_to):
    kept = load_engine()
    kept.append(TABLE, batch([1]), properties={})
    other = load_engine()
    if other_writes_to == "a-branch":
        table = open_table(TABLE)
        with table.manage_snapshots() as snapshots:
            snapshots.create_branch(table.current_snapshot().snapshot_id, "autoloader_op_x")
        other.append(TABLE, batch([100]), properties={}, branch="autoloader_op_x")
    else:
        other.append(TABLE, batch([2]), properties={})

    snapshot_id = kept.append(TABLE, batch([3]), properties={"autoloader.batch-key": "k3"})

    table = open_table(TABLE)
    assert table.current_snapshot().snapshot_id == snapshot_id
    expected = [1, 2, 3] if other_writes_to == "main" else [1, 3]
    assert sorted(table.scan().to_arrow()["id"].to_pylist()) == expected


def test_an_append_recreates_a_table_dropped_since_the_last_one(db):
    engine = load_engine()
    engine.append(TABLE, batch([1]), properties={})
    load_engine().drop_table(TABLE)

    engine.append(TABLE, batch([2]), properties={})
    assert open_table(TABLE).scan().to_arrow()["id"].to_pylist() == [2]
