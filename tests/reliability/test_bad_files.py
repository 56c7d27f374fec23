"""Bad files: a run over a folder mixing good and broken files loads the good ones exactly once
and names each broken one with a readable error; once a file is fixed, the next run loads
just that one.
"""

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestions import run_executor
from ingestions.models import ProcessedFile, Run, RunStatus
from ingestions.runs import run_request

from ..factories import IngestionFactory
from ..helpers import drain_queue, open_table

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HEADER = "id,name,amount\n"


def csv_rows(first_id: int, count: int = 10) -> str:
    return HEADER + "".join(f"{first_id + n},name-{first_id + n},{n * 1.5}\n" for n in range(count))


def ids_in_table(table_name: str) -> Counter:
    return Counter(
        open_table(table_name).scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()
    )


def history(ingestion) -> set[str]:
    return set(ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", flat=True))


def run_once(ingestion) -> Run:
    run = run_request(ingestion=ingestion)
    drain_queue()
    run.refresh_from_db()
    return run


@pytest.fixture
def deleted_after_listing(monkeypatch):
    """`deleted_after_listing(path)`: that file vanishes between the listing and its read."""
    victims = []
    real_listing = run_executor.list_source_files

    def listing_then_delete(**kwargs):
        listed = real_listing(**kwargs)
        for victim in victims:
            victim.unlink(missing_ok=True)
        return listed

    monkeypatch.setattr(run_executor, "list_source_files", listing_then_delete)
    return victims.append


# Each bad CSV file, what is wrong with it, the error code and words its failure must carry.
BAD_CSV = {
    "b-blank-lines.csv": ("\n\n", "FILE_READ_ERROR", "Empty CSV"),
    "e-broken-utf8.csv": (
        HEADER.encode() + b"50,\xff\xfename,1.0\n",
        "FILE_READ_ERROR",
        "not valid UTF-8",
    ),
    "f-type-drift.csv": (HEADER + "not-a-number,x,1.0\n", "SCHEMA_MISMATCH", "Column 'id'"),
    "g-zero-bytes.csv": (b"", "FILE_READ_ERROR", "Empty CSV file"),
    "h-deleted.csv": (csv_rows(900), "FILE_READ_ERROR", "no longer exists"),
}
GOOD_CSV = {
    "a-good.csv": csv_rows(0),
    "i-good.csv": csv_rows(100),
    "j-good.csv": csv_rows(200),
    # Valid, just unusual: no rows at all, and a column the table has not seen yet.
    "c-header-only.csv": HEADER,
    "k-new-column.csv": "id,name,amount,region\n300,n,1.0,eu\n301,m,2.0,us\n",
}
GOOD_IDS = [*range(0, 10), *range(100, 110), *range(200, 210), 300, 301]


@pytest.mark.parametrize("batch_files", [1, 100], ids=["one-file-per-batch", "one-batch"])
def test_bad_csv_files_fail_one_by_one_and_the_good_ones_load_once(
    settings, tenant, tmp_path, deleted_after_listing, batch_files
):
    settings.AUTOLOADER_BATCH_MAX_FILES = batch_files
    folder = tmp_path / "source"
    folder.mkdir()
    for name, (content, _, _) in BAD_CSV.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    for name, content in GOOD_CSV.items():
        (folder / name).write_text(content)
    deleted_after_listing(folder / "h-deleted.csv")
    ingestion = IngestionFactory(
        tenant=tenant, public_id="mixed", source_uri=str(folder), destination_table="raw.mixed"
    )

    run = run_once(ingestion)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert (run.files_found, run.files_loaded, run.files_failed) == (10, 5, 5)
    assert run.error == "5 files failed to load."
    failures = {entry["path"]: entry for entry in run.failed_files}
    assert set(failures) == set(BAD_CSV)
    for name, (content, error_code, words) in BAD_CSV.items():
        assert failures[name]["error_code"] == error_code, failures[name]
        assert words in failures[name]["error"], failures[name]
        text = content.decode(errors="replace") if isinstance(content, bytes) else content
        lines = text.splitlines()[1:]
        # Where and what went wrong, never the file's own values (the words among them: a
        # number could be a position or a count).
        values = {value for line in lines for value in line.split(",") if value[:1].isalpha()}
        assert not [value for value in values if value in failures[name]["error"]], failures[name]
    assert ids_in_table(ingestion.table_identifier) == Counter(GOOD_IDS)
    assert history(ingestion) == set(GOOD_CSV)

    # Fix one file: the next run loads just that one; the others fail the same way again.
    (folder / "f-type-drift.csv").write_text(csv_rows(400, count=3))
    second = run_once(ingestion)

    assert second.status == RunStatus.PARTIAL_SUCCESS
    assert (second.files_found, second.files_loaded, second.files_failed) == (4, 1, 3)
    assert {entry["path"] for entry in second.failed_files} == {
        "b-blank-lines.csv",
        "e-broken-utf8.csv",
        "g-zero-bytes.csv",
    }
    assert ids_in_table(ingestion.table_identifier) == Counter([*GOOD_IDS, 400, 401, 402])
    assert history(ingestion) == {*GOOD_CSV, "f-type-drift.csv"}


def write_parquet(path, first_id: int, *, id_type: pa.DataType | None = None) -> bytes:
    table = pa.table(
        {
            "id": pa.array(range(first_id, first_id + 10)).cast(id_type or pa.int64()),
            "name": [f"name-{n}" for n in range(10)],
        }
    )
    pq.write_table(table, path)
    return path.read_bytes()


def test_bad_parquet_files_fail_one_by_one_and_the_good_ones_load_once(
    tenant, tmp_path, deleted_after_listing
):
    folder = tmp_path / "parquet"
    folder.mkdir()
    write_parquet(folder / "a-good.parquet", 0)
    write_parquet(folder / "d-good.parquet", 100)
    whole = write_parquet(folder / "b-truncated.parquet", 200)
    (folder / "b-truncated.parquet").write_bytes(whole[: len(whole) // 2])
    (folder / "c-zero-bytes.parquet").write_bytes(b"")
    write_parquet(folder / "e-deleted.parquet", 300)
    deleted_after_listing(folder / "e-deleted.parquet")
    write_parquet(folder / "f-type-drift.parquet", 400, id_type=pa.string())
    (folder / "g-not-parquet.parquet").write_text(csv_rows(500))
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id="columnar",
        source_uri=str(folder),
        source_format="parquet",
        destination_table="raw.columnar",
    )

    run = run_once(ingestion)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert (run.files_found, run.files_loaded, run.files_failed) == (7, 2, 5)
    failures = {entry["path"]: entry for entry in run.failed_files}
    assert {path: entry["error_code"] for path, entry in failures.items()} == {
        "b-truncated.parquet": "FILE_READ_ERROR",
        "c-zero-bytes.parquet": "FILE_READ_ERROR",
        "e-deleted.parquet": "FILE_READ_ERROR",
        "f-type-drift.parquet": "SCHEMA_MISMATCH",
        "g-not-parquet.parquet": "FILE_READ_ERROR",
    }
    assert "no longer exists" in failures["e-deleted.parquet"]["error"]
    for path, entry in failures.items():
        schema = entry["error_code"] == "SCHEMA_MISMATCH"
        assert ("Column 'id'" if schema else f"Cannot read {path}: ") in entry["error"], entry
    assert ids_in_table(ingestion.table_identifier) == Counter([*range(0, 10), *range(100, 110)])
    assert history(ingestion) == {"a-good.parquet", "d-good.parquet"}

    write_parquet(folder / "b-truncated.parquet", 200)  # the producer writes it again, whole
    second = run_once(ingestion)

    assert (second.files_found, second.files_loaded, second.files_failed) == (4, 1, 3)
    assert ids_in_table(ingestion.table_identifier) == Counter(
        [*range(0, 10), *range(100, 110), *range(200, 210)]
    )
    assert history(ingestion) == {"a-good.parquet", "d-good.parquet", "b-truncated.parquet"}


# --- found here, fixed since: a regression test each -------------------------------------


def test_a_file_with_the_wrong_delimiter_is_refused_not_loaded_as_nulls(tenant, tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "a-good.csv").write_text(csv_rows(0))
    (folder / "b-semicolons.csv").write_text("id;name;amount\n50;x;1.0\n")
    ingestion = IngestionFactory(
        tenant=tenant, public_id="semi", source_uri=str(folder), destination_table="raw.semi"
    )

    run = run_once(ingestion)

    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert [entry["path"] for entry in run.failed_files] == ["b-semicolons.csv"]
    assert "id;name;amount" not in open_table(ingestion.table_identifier).schema().column_names


def test_a_header_only_file_does_not_decide_the_schema_of_a_new_table(tenant, tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "a-header-only.csv").write_text(HEADER)
    (folder / "b-good.csv").write_text(csv_rows(0))
    ingestion = IngestionFactory(
        tenant=tenant, public_id="typed", source_uri=str(folder), destination_table="raw.typed"
    )

    run = run_once(ingestion)

    assert run.status == RunStatus.SUCCESS
    schema = open_table(ingestion.table_identifier).schema().as_arrow()
    assert pa.types.is_integer(schema.field("id").type), schema
