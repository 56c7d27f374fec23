"""A batch written part by part as Parquet data files of an Iceberg table, for one commit.

The run hands each fitted part (a file's rows, or a few small files' rows) to the writer as
soon as it is read. Parts of one schema gather into a row group of up to `ROW_GROUP_BYTES`
(or the table's row-group row limit); one thread writes that row group into the current
data file while the run reads the next files, and a data file closes once it holds the
table's target file size (`write.target-file-size-bytes`, in Arrow bytes, as pyiceberg
counts it). So a batch of any size costs about three row groups of memory, not the batch.

Everything a data file needs comes from pyiceberg: its file format writer
(`FileFormatFactory`, the Parquet writer with the table's writer properties), the table's
location provider, `_to_requested_schema` (the field ids of the table's schema in the file)
and the statistics it computes from the Parquet footer (value, null and NaN counts, lower
and upper bounds, split offsets). The commit (`IcebergEngine.append`) adds the files with
pyiceberg's own snapshot producer; nothing here writes a manifest.

A part with new columns or wider types evolves the schema in a transaction that is never
committed (the planner): it assigns the new columns their field ids, the files after it
carry them, and the commit applies the same union to the table and checks that the ids
came out the same. Files written before the change lack the new columns (read as nulls)
or hold the narrower type (Iceberg promotes it), as files of an earlier batch would.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.io.fileformat import FileFormatFactory, FileFormatWriter
from pyiceberg.io.pyarrow import _to_requested_schema, pyarrow_to_schema, schema_to_pyarrow
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema, index_by_id, sanitize_column_names
from pyiceberg.table import (
    DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE,
    Table,
    TableProperties,
    Transaction,
)
from pyiceberg.table.locations import load_location_provider
from pyiceberg.typedef import Record
from pyiceberg.utils.config import Config
from pyiceberg.utils.properties import property_as_int

from ingestions.engines.writing import DataWriter, WrittenData
from ingestions.errors import EngineError

logger = logging.getLogger("ingestions.engines.iceberg")

# Arrow bytes gathered before one row group is written: with the part being read and the
# row group being written, what a batch holds in memory whatever its size.
ROW_GROUP_BYTES = 128 * 1024 * 1024
# Parts of fewer rows each than this are copied into one chunk before writing: thousands of
# tiny chunks write several times slower than one (many small source files).
SMALL_CHUNK_ROWS = 10_000


@dataclass
class WrittenFiles:
    """`WrittenData.handle` of this engine: the data files and the schema they were written
    with (the planner's last: every file's field ids are in it)."""

    data_files: list[DataFile]
    schema: Schema
    paths: list[str] = field(default_factory=list)  # every file created, for discard


@dataclass
class _OpenFile:
    path: str
    writer: FileFormatWriter
    output: object  # pyiceberg's OutputFile: its length once closed
    schema: Schema
    arrow_bytes: int = 0


class IcebergDataWriter(DataWriter):
    """A `DataWriter` for one batch of one table (see the module docstring).

    `table` is the table loaded when the batch starts, or None when it does not exist yet:
    then `create` makes it from the first part's schema. `errors` translates pyiceberg's
    failures (the engine's `_errors`).
    """

    def __init__(
        self,
        *,
        table: Table | None,
        create: Callable[[pa.Schema], Table],
        transaction: Callable[[Table], Transaction],
        errors: Callable[[str], AbstractContextManager[None]],
    ):
        self._create = create
        self._transaction = transaction
        self._errors = errors
        self._table: Table | None = None
        self._planner: Transaction | None = None
        self._schema: Schema | None = None  # the planner's: what the next file is written with
        self._arrow_schema: pa.Schema | None = None  # the same without field ids
        if table is not None:
            self._start(table)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iceberg-writer")
        self._inflight: Future | None = None
        # Touched on the pool's thread only, one job after another.
        self._file: _OpenFile | None = None
        self._written = WrittenFiles(data_files=[], schema=Schema())
        self._write_uuid = uuid.uuid4()
        self._counter = itertools.count()
        self._downcast_ns = Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE) or False
        self._finished: WrittenData | None = None
        self._discarded = False
        self.rows = 0

    @staticmethod
    def supports(table: Table) -> bool:
        """Whether this writer can write `table`'s data files: unpartitioned tables only."""
        return table.spec().is_unpartitioned()

    def write(self, data: pa.Table) -> None:
        if not data.num_rows:
            return
        with self._errors("write data files"):
            if self._table is None:
                self._start(self._create(data.schema))
                if not self.supports(self._table):
                    raise EngineError("The table is partitioned: it cannot be written in parts.")
            if self._pending and not data.schema.equals(self._pending[0].schema):
                self._flush()
            if self._needs_evolution(data.schema):
                self._flush()
                with self._planner.update_schema() as schema_update:
                    schema_update.union_by_name(data.schema)
                self._set_schema(self._planner.table_metadata.schema())
                self._submit(self._close_file)  # a data file has one schema
            self._pending.append(data)
            self._pending_rows += data.num_rows
            self._pending_bytes += data.nbytes
            if self._pending_bytes >= ROW_GROUP_BYTES or self._pending_rows >= self._row_rows:
                self._flush()
            self.rows += data.num_rows

    def finish(self) -> WrittenData:
        if self._finished is None:
            with self._errors("write data files"):
                self._flush()
                self._submit(self._close_file)
                self._wait()
                self._pool.shutdown()
            self._written.schema = self._schema or Schema()
            self._finished = WrittenData(
                rows=self.rows,
                schema=self._arrow_schema if self._arrow_schema is not None else pa.schema([]),
                handle=self._written,
            )
        return self._finished

    def discard(self) -> None:
        if self._discarded:
            return
        self._discarded = True
        self._pending = []
        # A write that failed is why the batch is discarded: its error was raised already.
        with suppress(Exception):
            self._wait()
        if self._file is not None:
            with suppress(Exception):
                self._file.writer.close()
            self._file = None
        self._pool.shutdown()
        if self._table is None:
            return
        for path in self._written.paths:
            try:
                self._table.io.delete(path)
            except FileNotFoundError:
                pass
            except Exception:  # the orphan-file maintenance deletes what is left
                logger.warning("could not delete the uncommitted data file %s", path, exc_info=True)

    # --- on the calling thread --------------------------------------------------------

    def _start(self, table: Table) -> None:
        self._table = table
        self._planner = self._transaction(table)
        properties = table.metadata.properties
        self._row_rows = property_as_int(
            properties,
            TableProperties.PARQUET_ROW_GROUP_LIMIT,
            TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
        )
        self._target_bytes = property_as_int(
            properties,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        )
        self._set_schema(table.schema())

    def _set_schema(self, schema: Schema) -> None:
        self._schema = schema
        self._arrow_schema = schema_to_pyarrow(schema, include_field_ids=False)

    def _needs_evolution(self, schema: pa.Schema) -> bool:
        """Whether `schema` has a column the table lacks or a type other than the table's."""
        if schema.equals(self._arrow_schema):
            return False
        names = set(self._arrow_schema.names)
        return any(
            item.name not in names
            or _large(self._arrow_schema.field(item.name).type) != _large(item.type)
            for item in schema
        )

    def _flush(self) -> None:
        """Hand the gathered parts to the writing thread as one row group."""
        if not self._pending:
            return
        parts, self._pending = self._pending, []
        self._pending_rows = self._pending_bytes = 0
        data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if data.num_columns and data.num_rows < SMALL_CHUNK_ROWS * data.column(0).num_chunks:
            data = data.combine_chunks()
        part_schema = pyarrow_to_schema(
            data.schema,
            name_mapping=self._schema.name_mapping,
            downcast_ns_timestamp_to_us=self._downcast_ns,
            format_version=self._table.metadata.format_version,
        )
        schema = self._schema
        self._submit(lambda: self._write_row_group(schema, part_schema, data))

    def _submit(self, job: Callable[[], None]) -> None:
        """Run `job` on the writing thread once the one before it is done (and raise what
        that one raised): one row group is written while the next one gathers."""
        self._wait()
        self._inflight = self._pool.submit(job)

    def _wait(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    # --- on the writing thread ----------------------------------------------------------

    def _write_row_group(self, schema: Schema, part_schema: Schema, data: pa.Table) -> None:
        if self._file is None:
            self._file = self._open_file(schema)
        file_schema = self._file.schema
        batches = [
            _to_requested_schema(
                requested_schema=file_schema,
                file_schema=part_schema,
                batch=batch,
                downcast_ns_timestamp_to_us=self._downcast_ns,
                include_field_ids=True,
                format_model=self._format_model,
            )
            for batch in data.to_batches()
        ]
        self._file.writer.write(pa.Table.from_batches(batches))
        self._file.arrow_bytes += data.nbytes
        if self._file.arrow_bytes >= self._target_bytes:
            self._close_file()

    def _open_file(self, schema: Schema) -> _OpenFile:
        metadata = self._table.metadata
        file_format = FileFormat(
            metadata.properties.get(
                TableProperties.WRITE_FILE_FORMAT, TableProperties.WRITE_FILE_FORMAT_DEFAULT
            )
        )
        self._format_model = FileFormatFactory.get(file_format)
        self._file_format = file_format
        # Column names Parquet cannot hold are written sanitized, as pyiceberg's own writes do.
        file_schema = sanitize_column_names(schema)
        locations = load_location_provider(
            table_location=metadata.location, table_properties=metadata.properties
        )
        name = f"00000-{next(self._counter)}-{self._write_uuid}"
        path = locations.new_data_location(
            data_file_name=f"{name}.{self._format_model.file_extension()}"
        )
        output = self._table.io.new_output(path)
        self._written.paths.append(path)
        writer = self._format_model.create_writer(output, file_schema, metadata.properties)
        return _OpenFile(path=path, writer=writer, output=output, schema=file_schema)

    def _close_file(self) -> None:
        open_file, self._file = self._file, None
        if open_file is None:
            return
        statistics = open_file.writer.close()
        metadata = self._table.metadata
        self._written.data_files.append(
            DataFile.from_args(
                content=DataFileContent.DATA,
                file_path=open_file.path,
                file_format=self._file_format,
                partition=Record(),
                file_size_in_bytes=len(open_file.output),
                sort_order_id=None,
                spec_id=metadata.default_spec_id,
                equality_ids=None,
                key_metadata=None,
                **statistics.to_serialized_dict(),
            )
        )


def check_written_schema(table_schema: Schema, written: Schema) -> None:
    """Refuse a commit whose data files carry field ids that the table's schema gives to
    other columns (the schema changed while the batch was written)."""
    current = index_by_id(table_schema)
    for field_id, item in index_by_id(written).items():
        if field_id not in current or current[field_id].name != item.name:
            raise EngineError(
                "The table's schema changed while the batch was written; the batch will be "
                "loaded again."
            )


def _large(kind: pa.DataType) -> pa.DataType:
    """`kind` with its string, binary and list types in their large form: the table's Arrow
    schema has them large (`schema_to_pyarrow`), a part read from a file may not, and they
    are the same Iceberg type (a part of a new table was taken for a schema change, which
    closed its data file: one data file per part)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.large_string()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pa.large_binary()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.large_list(_large(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_large(field.type)) for field in kind])
    if pa.types.is_map(kind):
        return pa.map_(_large(kind.key_type), _large(kind.item_type))
    return kind
