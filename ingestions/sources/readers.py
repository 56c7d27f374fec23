"""Read one source file into an Arrow table Iceberg can store, and fit it to an existing table."""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ingestions.errors import FileReadError, SchemaMismatchError
from ingestions.locations import OutsideLocationError
from ingestions.sources.discovery import first_line

if TYPE_CHECKING:
    from ingestions.locations import SourceHandle

SUPPORTED_FORMATS = ("csv", "json", "parquet")

# Reader options each format accepts, with the Python type each value must have.
READER_OPTIONS: dict[str, dict[str, type]] = {
    "csv": {
        "delimiter": str,
        "header": bool,
        "column_names": list,
        "skip_rows": int,
        "quote_char": str,
        "encoding": str,
        "null_values": list,
        "newlines_in_values": bool,
    },
    "json": {},
    "parquet": {},
}
# Bounds of option values: pyarrow takes skip_rows as a 32-bit int, and a reader option is
# configuration, not data.
MAX_SKIP_ROWS = 1_000_000
MAX_LIST_OPTION_ITEMS = 10_000
MAX_OPTION_TEXT_LENGTH = 256
_TYPE_WORDS = {str: "a string", bool: "true or false", int: "an integer", list: "a list"}

METADATA_COLUMNS = ("_source_file", "_ingested_at")
INGESTED_AT_TYPE = pa.timestamp("us", tz="UTC")

# The zone names pyiceberg accepts for a timestamptz column; any other zone must become UTC.
UTC_ALIASES = frozenset({"UTC", "+00:00", "Etc/UTC", "Z"})


def validate_reader_options(*, file_format: str, options: dict | None) -> dict[str, Any]:
    """Check a format and its reader options before any file is read.

    Returns:
        The options, `{}` when None.

    Raises:
        ValueError: Unknown format, unknown option, or a value of the wrong kind.
    """
    if file_format not in SUPPORTED_FORMATS:
        raise ValueError(
            f"Unknown file format {file_format!r}; supported: {', '.join(SUPPORTED_FORMATS)}."
        )
    options = dict(options or {})
    allowed = READER_OPTIONS[file_format]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"Unknown {file_format} reader option(s): {', '.join(unknown)}; accepted: {accepted}."
        )
    for key, value in options.items():
        # bool is an int in Python; "skip_rows": True is a mistake, not 1.
        if not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
            raise ValueError(f"Reader option {key!r} must be {_TYPE_WORDS[allowed[key]]}.")
    for key in ("delimiter", "quote_char"):
        if key in options and len(options[key]) != 1:
            raise ValueError(f"Reader option {key!r} must be a single character.")
    for key in ("column_names", "null_values"):
        if key in options and not all(isinstance(item, str) for item in options[key]):
            raise ValueError(f"Reader option {key!r} must be a list of strings.")
    if not 0 <= options.get("skip_rows", 0) <= MAX_SKIP_ROWS:
        raise ValueError(f"Reader option 'skip_rows' must be between 0 and {MAX_SKIP_ROWS:,}.")
    for key in ("column_names", "null_values"):
        if key in options and (
            len(options[key]) > MAX_LIST_OPTION_ITEMS
            or any(len(item) > MAX_OPTION_TEXT_LENGTH for item in options[key])
        ):
            raise ValueError(
                f"Reader option {key!r} takes at most {MAX_LIST_OPTION_ITEMS:,} items of "
                f"{MAX_OPTION_TEXT_LENGTH} characters."
            )
    if "encoding" in options:
        try:
            codec = codecs.lookup(options["encoding"])
        except (LookupError, ValueError):
            raise ValueError(f"Unknown encoding {options['encoding'][:40]!r}.") from None
        # rot13, base64, zlib ... are codecs too, but not text encodings a CSV can be in.
        if not getattr(codec, "_is_text_encoding", True):
            raise ValueError(f"{options['encoding'][:40]!r} is not a text encoding.")
    return options


def read_source_file(
    *, source: SourceHandle, path: str, file_format: str, options: dict | None = None
) -> pa.Table:
    """Read the file at `path` (relative to the checked `source`) with Iceberg-writable types.

    Errors say which file and what kind of problem (and the row when the reader knows it);
    they never quote the file's bytes.

    Raises:
        ValueError: Unknown format or reader options (see `validate_reader_options`).
        FileReadError: The file is gone, resolves outside the location, is empty, malformed,
            not valid UTF-8, or holds a type Iceberg cannot store.
    """
    options = validate_reader_options(file_format=file_format, options=options)
    filesystem = source.filesystem
    full_path = source.full_path(path)
    if ".." in path.split("/"):
        raise FileReadError(path, "it resolves outside the storage location")
    # No check by path before opening (it could change before the open): a local source's
    # filesystem checks what it opened and raises OutsideLocationError.
    try:
        if file_format == "parquet":
            # Parquet needs random access to its footer, so a file, not a stream.
            with filesystem.open_input_file(full_path) as stream:
                data = pq.read_table(stream)
        elif file_format == "json":
            # Streams decompress by extension: data.json.gz reads like data.json.
            with filesystem.open_input_stream(full_path) as stream:
                data = pajson.read_json(stream)
        else:
            with filesystem.open_input_stream(full_path) as stream:
                data = _read_csv(stream, options)
        if file_format != "csv":
            # JSON and Parquet readers pass invalid UTF-8 through into string columns; catch
            # it before Iceberg does. (CSV checks it while parsing: such a column is binary.)
            data.validate(full=True)
    except FileNotFoundError as exc:
        raise FileReadError(path, "the file no longer exists") from exc
    except OutsideLocationError as exc:
        raise FileReadError(path, str(exc)) from exc
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        # UnicodeDecodeError: the Python codec that transcodes a non-UTF-8 `encoding`.
        raise FileReadError(path, read_error_reason(exc, file_format)) from exc

    duplicates = _duplicate_positions(data.column_names)
    if duplicates:
        raise FileReadError(path, f"duplicate column names (columns {duplicates})")
    if file_format == "csv":
        # CSV inference falls back to binary only when the text does not decode.
        binary_columns = [field.name for field in data.schema if pa.types.is_binary(field.type)]
        if binary_columns:
            raise FileReadError(
                path,
                f"column(s) {', '.join(binary_columns)} are not valid "
                f"{options.get('encoding', 'UTF-8')} text; set the 'encoding' reader option",
            )
    try:
        return normalize_for_iceberg(data)
    except (ValueError, pa.ArrowException) as exc:
        raise FileReadError(path, read_error_reason(exc, "")) from exc


def _read_csv(source: pa.NativeFile, options: dict[str, Any]) -> pa.Table:
    header = options.get("header", True)
    column_names = options.get("column_names") or []
    read_options = pacsv.ReadOptions(
        # Given names replace the header row rather than naming it, so that row is skipped.
        skip_rows=options.get("skip_rows", 0) + (1 if header and column_names else 0),
        column_names=column_names,
        autogenerate_column_names=not header and not column_names,
        encoding=options.get("encoding", "utf8"),
    )
    parse_options = pacsv.ParseOptions(
        delimiter=options.get("delimiter", ","),
        quote_char=options.get("quote_char", '"'),
        newlines_in_values=options.get("newlines_in_values", False),
    )
    if "null_values" in options:
        # Whoever lists null markers means them for text columns too.
        convert_options = pacsv.ConvertOptions(
            null_values=options["null_values"], strings_can_be_null=True
        )
    else:
        convert_options = pacsv.ConvertOptions()
    return pacsv.read_csv(
        source,
        read_options=read_options,
        parse_options=parse_options,
        convert_options=convert_options,
    )


def normalize_for_iceberg(data: pa.Table) -> pa.Table:
    """Cast every column to the closest type Iceberg can store.

    Timestamps become microseconds (sub-microsecond digits are dropped; zones other than UTC
    become UTC, the same instants), unsigned ints become int64, null-typed columns become
    string, dictionaries their values, date64 date32, float16 float32, times time64[us].

    Raises:
        ValueError: A column has a type Iceberg cannot store (duration, decimal256 over 38
            digits, ...) or a uint64 value beyond int64.
    """
    if data.schema.metadata is None and all(
        field.metadata is None and _is_writable_as_is(field.type) for field in data.schema
    ):
        return data  # the common case (CSV): nothing to cast, the same table rebuilt
    fields, columns = [], []
    for field, column in zip(data.schema, data.columns, strict=True):
        try:
            writable_type = iceberg_writable_type(field.type)
            if writable_type != field.type:
                column = column.cast(writable_type, safe=_is_cast_checked(field.type))
        except pa.ArrowException as exc:
            raise ValueError(f"column {field.name!r}: {cast_error_kind(exc)}") from exc
        except ValueError as exc:
            raise ValueError(f"column {field.name!r}: {first_line(exc)}") from exc
        fields.append(pa.field(field.name, writable_type, nullable=field.nullable))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


@lru_cache(maxsize=1024)
def _is_writable_as_is(data_type: pa.DataType) -> bool:
    """Whether Iceberg stores `data_type` as it is (kept per type: a source has few)."""
    try:
        return iceberg_writable_type(data_type) == data_type
    except ValueError:
        return False


def iceberg_writable_type(data_type: pa.DataType) -> pa.DataType:
    """The closest Arrow type pyiceberg can write for `data_type`, recursing into nested types.

    Raises:
        ValueError: Iceberg has no counterpart for the type.
    """
    if pa.types.is_dictionary(data_type):
        return iceberg_writable_type(data_type.value_type)
    if pa.types.is_null(data_type):
        # An all-empty CSV column: text is the one type every later value can still fit.
        return pa.string()
    if pa.types.is_unsigned_integer(data_type):
        # pyiceberg would store uint32 as a 32-bit signed int and overflow past 2**31.
        return pa.int64()
    if pa.types.is_float16(data_type):
        return pa.float32()
    if pa.types.is_date64(data_type):
        return pa.date32()
    if pa.types.is_timestamp(data_type):
        zone = data_type.tz
        return pa.timestamp("us", tz=zone if zone is None or zone in UTC_ALIASES else "UTC")
    if pa.types.is_time(data_type):
        return pa.time64("us")
    if pa.types.is_decimal(data_type):
        if data_type.precision > 38:
            raise ValueError(
                f"decimal precision {data_type.precision} exceeds Iceberg's maximum of 38"
            )
        return pa.decimal128(data_type.precision, data_type.scale)
    if pa.types.is_map(data_type):
        return pa.map_(
            _writable_field(data_type.key_field),
            _writable_field(data_type.item_field),
            keys_sorted=data_type.keys_sorted,
        )
    if pa.types.is_list(data_type):
        return pa.list_(_writable_field(data_type.value_field))
    if pa.types.is_large_list(data_type):
        return pa.large_list(_writable_field(data_type.value_field))
    if pa.types.is_fixed_size_list(data_type):
        return pa.list_(_writable_field(data_type.value_field), data_type.list_size)
    if pa.types.is_struct(data_type):
        return pa.struct([_writable_field(field) for field in data_type])
    if _is_stored_as_is(data_type):
        return data_type
    raise ValueError(f"type {data_type} has no Iceberg counterpart")


def _writable_field(field: pa.Field) -> pa.Field:
    # Field ids in the file's metadata (files written by Spark or Iceberg) would override
    # pyiceberg's name mapping and bind columns to the wrong table fields, so they go.
    return pa.field(field.name, iceberg_writable_type(field.type), nullable=field.nullable)


def _is_stored_as_is(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_boolean(data_type)
        or pa.types.is_signed_integer(data_type)
        or pa.types.is_float32(data_type)
        or pa.types.is_float64(data_type)
        or _is_text(data_type)
        or _is_bytes(data_type)
        or pa.types.is_fixed_size_binary(data_type)
        or pa.types.is_date32(data_type)
        or isinstance(data_type, pa.UuidType)
    )


def _is_cast_checked(data_type: pa.DataType) -> bool:
    """Whether normalizing `data_type` must refuse lossy values rather than truncate them.

    Nanosecond timestamps must lose their last digits to fit Iceberg, so they cast unchecked,
    unless the same column also holds uint64 values, whose overflow must never pass silently.
    """
    nested_types = list(_all_types(data_type))
    has_nanoseconds = any(
        (pa.types.is_timestamp(nested) or pa.types.is_time(nested)) and nested.unit == "ns"
        for nested in nested_types
    )
    may_overflow = any(pa.types.is_uint64(nested) for nested in nested_types)
    return may_overflow or not has_nanoseconds


def _all_types(data_type: pa.DataType) -> Iterator[pa.DataType]:
    yield data_type
    if pa.types.is_dictionary(data_type):
        yield from _all_types(data_type.value_type)
    for index in range(data_type.num_fields):
        yield from _all_types(data_type.field(index).type)


def with_metadata_columns(
    data: pa.Table, *, source_file: str | pa.Array, ingested_at: datetime
) -> pa.Table:
    """Append `_source_file` and `_ingested_at` (UTC) to every row of `data`.

    `source_file` is one path for all rows, or a path per row (`source_file_column`) for the
    rows of several files stacked together.

    Raises:
        ValueError: `ingested_at` is naive, or `source_file` has not one path per row.
    """
    if ingested_at.tzinfo is None:
        raise ValueError("ingested_at must be timezone-aware.")
    if isinstance(source_file, str):
        source_file = pa.repeat(pa.scalar(source_file, pa.string()), data.num_rows)
    elif len(source_file) != data.num_rows:
        raise ValueError(f"{len(source_file)} source paths for {data.num_rows} rows.")
    # A file exported from one of our own tables already carries these; ours win.
    data = data.drop_columns([name for name in METADATA_COLUMNS if name in data.column_names])
    data = data.append_column(pa.field("_source_file", pa.string()), source_file)
    return data.append_column(
        pa.field("_ingested_at", INGESTED_AT_TYPE),
        pa.repeat(pa.scalar(ingested_at.astimezone(UTC), INGESTED_AT_TYPE), data.num_rows),
    )


def source_file_column(files: list[tuple[str, int]]) -> pa.Array:
    """The `_source_file` of files' rows stacked in order: each (path, rows) path, rows times."""
    files = [(path, rows) for path, rows in files if rows]  # run ends must increase
    run_ends = list(accumulate(rows for _, rows in files))
    encoded = pa.RunEndEncodedArray.from_arrays(
        pa.array(run_ends, pa.int64()), pa.array([path for path, _ in files], pa.string())
    )
    return pc.run_end_decode(encoded)


def conform_to_schema(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Make one file's table fit an existing table's schema.

    Columns follow `schema`'s order, then the file's extra columns (which the engine adds to
    the table). A column the file lacks is filled with nulls. A differing type is cast when
    no value can change (int32 to int64, int64 to double when exact, numbers to text, an
    all-null column to anything). When the file's type is a wider one Iceberg can promote
    the table column to (int to long, float to double, a decimal's precision), the file's
    type is kept and the engine widens the table on append.

    Raises:
        SchemaMismatchError: A required column is missing or has nulls, or a type cannot be
            cast without losing values; the message names the column and both types.
    """
    duplicates = _duplicate_positions(data.column_names)
    if duplicates:
        raise SchemaMismatchError(f"The data has duplicate column names (columns {duplicates}).")
    data_columns = set(data.column_names) - set(METADATA_COLUMNS)
    table_columns = set(schema.names) - set(METADATA_COLUMNS)
    if data_columns and table_columns and not data_columns & table_columns:
        # Nothing in common is not drift: it is another file (or the wrong delimiter, which
        # reads "id;name" as one column). Loading it would add nulls and a stray column.
        raise SchemaMismatchError(
            f"No column in common with the table (the file has {len(data_columns)} "
            f"column(s); the table: {', '.join(sorted(table_columns)[:5])}). "
            "Check the delimiter and format."
        )
    fields, columns = [], []
    for target in schema:
        if target.name in data.column_names:
            column = _conform_column(data.column(target.name), target)
        elif target.nullable:
            column = pa.nulls(data.num_rows, target.type)
        else:
            raise SchemaMismatchError(
                f"Column {target.name!r} is required by the table but missing from the data."
            )
        if not target.nullable and column.null_count:
            raise SchemaMismatchError(
                f"Column {target.name!r} is required by the table but has null values."
            )
        fields.append(target.with_type(column.type))
        columns.append(column)
    for field in data.schema:
        if field.name not in schema.names:
            fields.append(field)
            columns.append(data.column(field.name))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _conform_column(column: pa.ChunkedArray, target: pa.Field) -> pa.ChunkedArray:
    source_type = column.type
    if source_type == target.type:
        return column
    if column.null_count == len(column):
        return pa.chunked_array([pa.nulls(len(column), target.type)])
    if _is_iceberg_promotion(table_type=target.type, data_type=source_type):
        return column
    if _is_safe_cast(source_type, target.type):
        try:
            return column.cast(target.type, safe=True)
        except pa.ArrowException as exc:
            raise SchemaMismatchError(
                f"Column {target.name!r} is {target.type} in the table but {source_type} in "
                f"the data, and a value does not convert ({cast_error_kind(exc)})."
            ) from exc
    raise SchemaMismatchError(
        f"Column {target.name!r} is {target.type} in the table but {source_type} in the data."
    )


def _is_iceberg_promotion(*, table_type: pa.DataType, data_type: pa.DataType) -> bool:
    """Whether Iceberg can widen a `table_type` column to hold `data_type` (int to long, ...)."""
    if pa.types.is_signed_integer(table_type) and pa.types.is_signed_integer(data_type):
        return data_type.bit_width > table_type.bit_width
    if pa.types.is_float32(table_type):
        return pa.types.is_float64(data_type)
    if pa.types.is_decimal(table_type) and pa.types.is_decimal(data_type):
        return data_type.scale == table_type.scale and data_type.precision > table_type.precision
    return False


def _is_safe_cast(source_type: pa.DataType, target_type: pa.DataType) -> bool:
    """Whether a checked Arrow cast from `source_type` to `target_type` keeps every value."""
    if pa.types.is_integer(source_type):
        # Arrow's checked cast refuses any value the target cannot hold exactly.
        return (
            pa.types.is_integer(target_type)
            or pa.types.is_floating(target_type)
            or pa.types.is_decimal(target_type)
            or _is_text(target_type)
        )
    if pa.types.is_floating(source_type) and pa.types.is_floating(target_type):
        return target_type.bit_width >= source_type.bit_width
    if pa.types.is_decimal(source_type) and pa.types.is_decimal(target_type):
        return target_type.scale == source_type.scale
    if pa.types.is_timestamp(source_type) and pa.types.is_timestamp(target_type):
        # Naive and zoned timestamps mean different things; neither becomes the other.
        return (source_type.tz is None) == (target_type.tz is None)
    if _is_text(target_type):
        return _is_text(source_type) or _is_scalar_value(source_type)
    if _is_bytes(source_type) and _is_bytes(target_type):
        return True
    return pa.types.is_nested(source_type) and pa.types.is_nested(target_type)


def _is_text(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_string_view(data_type)
    )


def _is_bytes(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
        or pa.types.is_binary_view(data_type)
    )


def _is_scalar_value(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_boolean(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type)
        or pa.types.is_decimal(data_type)
        or pa.types.is_temporal(data_type)
    )


# Readers quote the offending text in some messages ("Expected 2 columns, got 3: <the
# line>", "invalid value 'abc'"): a per-file error must say where and what, never echo bytes.
_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|`[^`]*`""")
_AFTER_COLUMN_COUNT = re.compile(r"(Expected \d+ columns?, got \d+).*", re.DOTALL)
_PARSE_ERROR_PREFIXES = ("CSV parse error", "JSON parse error", "CSV conversion error")


def read_error_reason(exc: BaseException, file_format: str) -> str:
    """What went wrong reading a file, without quoting its content."""
    if isinstance(exc, UnicodeDecodeError):
        return f"byte {exc.start} is not valid {exc.encoding}; set the 'encoding' reader option"
    message = first_line(exc)
    if message.startswith(_PARSE_ERROR_PREFIXES):
        message = _AFTER_COLUMN_COUNT.sub(r"\1", message)
        message = _QUOTED.sub("(value omitted)", message)
        return message[:300]
    if isinstance(exc, pa.ArrowException):
        if "not in range" in message or "overflow" in message.lower():
            return cast_error_kind(exc)
        if "Parquet magic bytes" in message or "Parquet file size is 0" in message:
            return "not a Parquet file (no Parquet footer)"
        # Other Arrow messages name types and sizes; quoted parts are dropped all the same.
        return _QUOTED.sub("(value omitted)", message)[:300]
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return message  # our own messages (normalizing types) name columns and types only


def cast_error_kind(exc: BaseException) -> str:
    """What kind of value failed a cast, without the value (Arrow's message quotes it)."""
    message = first_line(exc)
    if "not in range" in message or "overflow" in message.lower():
        return "a value is out of range"
    if "truncat" in message.lower() or "would lose" in message.lower():
        return "a value would lose precision"
    if "parse" in message.lower() or "invalid" in message.lower():
        return "a value is not a valid value of that type"
    return "a value cannot be cast"


def _duplicate_positions(names: list[str]) -> str:
    """The 1-based positions of repeated column names, as "2 and 5".

    Never the names: in a header-less or misread file they are the file's own bytes.
    """
    counts = Counter(names)
    positions = [str(index) for index, name in enumerate(names, start=1) if counts[name] > 1]
    return ", ".join(positions[:-1]) + f" and {positions[-1]}" if len(positions) > 1 else ""
