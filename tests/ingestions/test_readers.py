"""Reading source files into Iceberg-writable Arrow tables, and fitting them to a table schema."""

import gzip
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestions.errors import FileReadError, SchemaMismatchError
from ingestions.sources import (
    conform_to_schema,
    normalize_for_iceberg,
    read_source_file,
    validate_reader_options,
    with_metadata_columns,
)


@pytest.fixture
def source(source_dir, open_source):
    """A source directory (the tenant's location), and a helper that writes a file in it and
    returns its relative path; `source.handle` is the checked handle reads go through."""

    def write(relative_path: str, content: bytes | str) -> str:
        path = source_dir / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return relative_path

    write.handle = open_source()
    write.root = source_dir
    return write


def read(source, path: str, file_format: str = "csv", **options) -> pa.Table:
    return read_source_file(
        source=source.handle, path=path, file_format=file_format, options=options
    )


def write_parquet(source, relative_path: str, data: pa.Table) -> str:
    pq.write_table(data, source.root / relative_path)
    return relative_path


# --- formats ---------------------------------------------------------------------------


def test_csv_round_trip_infers_types(source):
    path = source(
        "day/orders.csv",
        "id,name,price,paid,ordered_at\n1,ann,9.5,true,2024-01-01T10:00:00\n2,bob,3,false,\n",
    )

    data = read(source, path)

    assert data.to_pylist() == [
        {
            "id": 1,
            "name": "ann",
            "price": 9.5,
            "paid": True,
            "ordered_at": datetime(2024, 1, 1, 10),
        },
        {"id": 2, "name": "bob", "price": 3.0, "paid": False, "ordered_at": None},
    ]
    assert data.schema.field("id").type == pa.int64()
    assert data.schema.field("ordered_at").type == pa.timestamp("us")


def test_gzipped_csv_is_decompressed(source):
    path = source("orders.csv.gz", gzip.compress(b"id\n1\n2\n"))

    assert read(source, path).column("id").to_pylist() == [1, 2]


def test_json_lines_round_trip_keeps_nested_values(source):
    rows = [{"id": 1, "tags": ["a", "b"], "address": {"city": "Lyon"}}, {"id": 2, "tags": []}]
    path = source("events.json", "\n".join(json.dumps(row) for row in rows) + "\n")

    data = read(source, path, "json")

    assert data.to_pylist() == [
        {"id": 1, "tags": ["a", "b"], "address": {"city": "Lyon"}},
        {"id": 2, "tags": [], "address": None},
    ]


def test_parquet_round_trip(source):
    original = pa.table({"id": pa.array([1, 2], pa.int32()), "name": ["a", None]})
    path = write_parquet(source, "part-0.parquet", original)

    data = read(source, path, "parquet")

    assert data.equals(original)


# --- reader options --------------------------------------------------------------------


def test_csv_delimiter_option(source):
    path = source("semi.csv", "a;b\n1;x\n")

    assert read(source, path, delimiter=";").to_pylist() == [{"a": 1, "b": "x"}]


def test_csv_without_header_uses_given_column_names(source):
    path = source("no_header.csv", "1,x\n2,y\n")

    data = read(source, path, header=False, column_names=["id", "label"])

    assert data.to_pylist() == [{"id": 1, "label": "x"}, {"id": 2, "label": "y"}]


def test_csv_without_header_or_names_numbers_the_columns(source):
    path = source("no_header.csv", "1,x\n")

    assert read(source, path, header=False).column_names == ["f0", "f1"]


def test_csv_column_names_replace_an_existing_header(source):
    path = source("renamed.csv", "A,B\n1,2\n")

    data = read(source, path, column_names=["a", "b"])

    assert data.to_pylist() == [{"a": 1, "b": 2}]


def test_csv_skip_rows_null_values_and_quote_char(source):
    path = source("report.csv", "exported by tool\nid,note\n1,'a,b'\n2,N/A\n")

    data = read(source, path, skip_rows=1, quote_char="'", null_values=["N/A"])

    assert data.to_pylist() == [{"id": 1, "note": "a,b"}, {"id": 2, "note": None}]


def test_csv_encoding_option_decodes_latin1(source):
    path = source("latin1.csv", "name\nJosé\n".encode("latin-1"))

    assert read(source, path, encoding="latin-1").column("name").to_pylist() == ["José"]


@pytest.mark.parametrize(
    ("file_format", "options", "message"),
    [
        ("xml", {}, "Unknown file format 'xml'"),
        ("csv", {"separator": ","}, "Unknown csv reader option"),
        ("json", {"delimiter": ","}, "Unknown json reader option"),
        ("csv", {"delimiter": ";;"}, "single character"),
        ("csv", {"header": "yes"}, "must be true or false"),
        ("csv", {"skip_rows": True}, "must be an integer"),
        ("csv", {"column_names": ["a", 1]}, "list of strings"),
        ("csv", {"encoding": "klingon"}, "Unknown encoding"),
    ],
)
def test_invalid_format_or_options_are_refused(file_format, options, message):
    with pytest.raises(ValueError, match=message):
        validate_reader_options(file_format=file_format, options=options)


# --- unreadable files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "content", "file_format", "reason"),
    [
        ("ragged.csv", "a,b\n1,2,3\n", "csv", "Expected 2 columns, got 3"),
        ("empty.csv", "", "csv", "Empty CSV file"),
        ("empty.json", "", "json", "Empty JSON file"),
        ("broken.json", '{"a": 1}\n{"a": \n', "json", "JSON parse error"),
        (
            "fake.parquet",
            "not parquet at all",
            "parquet",
            r"not a Parquet file \(no Parquet footer\)",
        ),
        ("twice.csv", "a,a\n1,2\n", "csv", r"duplicate column names \(columns 1 and 2\)"),
    ],
)
def test_malformed_file_raises_file_read_error(source, file_name, content, file_format, reason):
    path = source(file_name, content)

    with pytest.raises(FileReadError, match=reason) as raised:
        read(source, path, file_format)

    assert raised.value.path == path
    assert raised.value.error_code == "FILE_READ_ERROR"
    assert "\n" not in raised.value.reason
    # Where and what, never the file's own bytes.
    assert not [line for line in content.splitlines() if line in raised.value.reason]


def test_csv_with_only_a_header_reads_as_zero_text_rows(source):
    path = source("header_only.csv", "id,name\n")

    data = read(source, path)

    assert data.num_rows == 0
    assert data.schema == pa.schema([("id", pa.string()), ("name", pa.string())])


@pytest.mark.parametrize(
    ("file_name", "content", "file_format"),
    [
        ("bad.csv", b"name\nok\n\xff\xfe\n", "csv"),
        ("bad.json", b'{"name": "\xff\xfe"}\n', "json"),
    ],
)
def test_broken_utf8_raises_file_read_error(source, file_name, content, file_format):
    path = source(file_name, content)

    with pytest.raises(FileReadError, match="UTF"):
        read(source, path, file_format)


def test_text_not_in_the_declared_encoding_raises_file_read_error(source):
    path = source("accented.csv", "name\nJosé\n")

    with pytest.raises(FileReadError, match="byte 8 is not valid ascii"):
        read(source, path, encoding="ascii")


def test_file_deleted_after_listing_raises_file_read_error(source):
    path = source("gone.csv", "a\n1\n")
    (source.root / path).unlink()

    with pytest.raises(FileReadError, match="no longer exists"):
        read(source, path)


# --- normalization ---------------------------------------------------------------------


def test_timestamps_become_microseconds_and_keep_utc(source):
    seconds = pa.array([datetime(2024, 1, 1, 10)], pa.timestamp("s"))
    utc_millis = pa.array([datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("ms", tz="UTC"))
    path = write_parquet(source, "times.parquet", pa.table({"s": seconds, "ms": utc_millis}))

    data = read(source, path, "parquet")

    assert data.schema.field("s").type == pa.timestamp("us")
    assert data.schema.field("ms").type == pa.timestamp("us", tz="UTC")
    assert data.column("s").to_pylist() == [datetime(2024, 1, 1, 10)]


def test_nanosecond_csv_timestamps_are_truncated_to_microseconds(source):
    path = source("precise.csv", "at\n2024-01-01T00:00:00.123456789\n")

    data = read(source, path)

    assert data.schema.field("at").type == pa.timestamp("us")
    assert data.column("at").to_pylist() == [datetime(2024, 1, 1, 0, 0, 0, 123456)]


def test_zoned_timestamps_become_the_same_instant_in_utc():
    paris = timezone(timedelta(hours=1))
    moment = datetime(2024, 1, 1, 12, tzinfo=paris)
    data = pa.table({"at": pa.array([moment], pa.timestamp("ms", tz="Europe/Paris"))})

    normalized = normalize_for_iceberg(data)

    assert normalized.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert normalized.column("at").to_pylist() == [moment.astimezone(UTC)]


def test_unsigned_ints_become_int64(source):
    data = pa.table(
        {
            "small": pa.array([1], pa.uint8()),
            "big": pa.array([2**32 - 1], pa.uint32()),
            "huge": pa.array([2**63 - 1], pa.uint64()),
        }
    )
    path = write_parquet(source, "unsigned.parquet", data)

    normalized = read(source, path, "parquet")

    assert set(normalized.schema.types) == {pa.int64()}
    assert normalized.to_pylist() == [{"small": 1, "big": 2**32 - 1, "huge": 2**63 - 1}]


def test_uint64_beyond_int64_raises_file_read_error(source):
    data = pa.table({"huge": pa.array([2**64 - 1], pa.uint64())})
    path = write_parquet(source, "overflow.parquet", data)

    with pytest.raises(FileReadError, match="huge"):
        read(source, path, "parquet")


def test_all_empty_csv_column_becomes_string(source):
    path = source("sparse.csv", "id,comment\n1,\n2,\n")

    data = read(source, path)

    assert data.schema.field("comment").type == pa.string()
    assert data.column("comment").to_pylist() == [None, None]


def test_nested_null_types_become_string(source):
    path = source("nested.json", '{"tags": [], "extra": {"note": null}}\n')

    data = read(source, path, "json")

    assert data.schema.field("tags").type == pa.list_(pa.string())
    assert data.schema.field("extra").type == pa.struct([("note", pa.string())])


def test_other_types_map_to_their_iceberg_counterparts():
    data = pa.table(
        {
            "category": pa.array(["a", "b", "a"]).dictionary_encode(),
            "day": pa.array([date(2024, 1, 1)] * 3, pa.date64()),
            "ratio": pa.array([0.5, 1.5, 2.0], pa.float32()).cast(pa.float16()),
        }
    )

    normalized = normalize_for_iceberg(data)

    assert normalized.schema == pa.schema(
        [("category", pa.string()), ("day", pa.date32()), ("ratio", pa.float32())]
    )
    assert normalized.column("category").to_pylist() == ["a", "b", "a"]
    assert normalized.column("day").to_pylist() == [date(2024, 1, 1)] * 3


def test_parquet_field_ids_are_dropped(source):
    field = pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "7"})
    path = write_parquet(source, "iceberg.parquet", pa.table([[1]], schema=pa.schema([field])))

    data = read(source, path, "parquet")

    assert data.schema.field("id").metadata is None


def test_type_without_iceberg_counterpart_raises_file_read_error(source):
    data = pa.table({"wait": pa.array([timedelta(seconds=1)], pa.duration("s"))})
    path = write_parquet(source, "durations.parquet", data)

    with pytest.raises(FileReadError, match=r"wait.*no Iceberg counterpart"):
        read(source, path, "parquet")


# --- metadata columns ------------------------------------------------------------------


def test_with_metadata_columns_appends_source_file_and_utc_ingestion_time():
    ingested_at = datetime(2024, 5, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    data = pa.table({"id": [1, 2]})

    tagged = with_metadata_columns(data, source_file="day/a.csv", ingested_at=ingested_at)

    assert tagged.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("_source_file", pa.string()),
            ("_ingested_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    assert tagged.column("_source_file").to_pylist() == ["day/a.csv", "day/a.csv"]
    assert tagged.column("_ingested_at").to_pylist() == [datetime(2024, 5, 1, 12, tzinfo=UTC)] * 2


def test_with_metadata_columns_replaces_existing_ones_and_refuses_naive_time():
    data = pa.table({"_source_file": ["old"], "id": [1]})

    tagged = with_metadata_columns(data, source_file="new", ingested_at=datetime.now(UTC))

    assert tagged.column_names == ["id", "_source_file", "_ingested_at"]
    assert tagged.column("_source_file").to_pylist() == ["new"]
    with pytest.raises(ValueError, match="timezone-aware"):
        with_metadata_columns(data, source_file="x", ingested_at=datetime(2024, 1, 1))


# --- conform_to_schema -----------------------------------------------------------------

TABLE_SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])


def test_conform_fills_missing_columns_with_nulls_in_schema_order():
    data = pa.table({"name": ["a"], "id": [1]})

    conformed = conform_to_schema(data, TABLE_SCHEMA)

    assert conformed.schema == TABLE_SCHEMA
    assert conformed.to_pylist() == [{"id": 1, "name": "a", "score": None}]


def test_conform_widens_types_safely():
    data = pa.table({"id": pa.array([1], pa.int32()), "score": pa.array([3], pa.int64())})

    conformed = conform_to_schema(data, TABLE_SCHEMA)

    assert conformed.schema == TABLE_SCHEMA
    assert conformed.to_pylist() == [{"id": 1, "name": None, "score": 3.0}]


def test_conform_turns_numbers_into_text_for_a_string_column():
    data = pa.table({"name": [12345]})

    assert conform_to_schema(data, TABLE_SCHEMA).column("name").to_pylist() == ["12345"]


def test_conform_fits_an_all_null_column_to_any_type():
    data = pa.table({"id": pa.array([None, None], pa.string())})

    conformed = conform_to_schema(data, TABLE_SCHEMA)

    assert conformed.schema.field("id").type == pa.int64()
    assert conformed.column("id").to_pylist() == [None, None]


def test_conform_keeps_a_wider_type_iceberg_can_promote_the_table_to():
    schema = pa.schema([("id", pa.int32()), ("ratio", pa.float32())])
    data = pa.table({"id": pa.array([2**40], pa.int64()), "ratio": pa.array([0.1], pa.float64())})

    conformed = conform_to_schema(data, schema)

    assert conformed.schema == pa.schema([("id", pa.int64()), ("ratio", pa.float64())])


def test_conform_refuses_incompatible_types_naming_column_and_types():
    data = pa.table({"id": ["not a number"]})

    with pytest.raises(
        SchemaMismatchError, match=r"'id' is int64 in the table but string"
    ) as raised:
        conform_to_schema(data, TABLE_SCHEMA)

    assert raised.value.error_code == "SCHEMA_MISMATCH"


def test_conform_refuses_a_widening_that_would_change_a_value():
    data = pa.table({"score": pa.array([2**53 + 1], pa.int64())})

    with pytest.raises(SchemaMismatchError, match=r"'score'.*does not convert"):
        conform_to_schema(data, TABLE_SCHEMA)


def test_conform_keeps_extra_columns_at_the_end():
    data = pa.table({"extra": [True], "id": [1]})

    conformed = conform_to_schema(data, TABLE_SCHEMA)

    assert conformed.column_names == ["id", "name", "score", "extra"]
    assert conformed.column("extra").to_pylist() == [True]


def test_conform_requires_values_for_non_nullable_columns():
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("name", pa.string())])

    with pytest.raises(SchemaMismatchError, match=r"'id' is required.*missing"):
        conform_to_schema(pa.table({"name": ["a"]}), schema)
    with pytest.raises(SchemaMismatchError, match=r"'id' is required.*null"):
        conform_to_schema(pa.table({"id": [1, None]}), schema)
    conformed = conform_to_schema(pa.table({"id": [1]}), schema)
    assert conformed.schema.field("id").nullable is False
