"""The spark engine's FileReading interface: a batch's files read by Spark's executors,
counted per file (rows, malformed rows), each checked again after the read.

A CSV batch on the shared catalog is read once (`once`): its rows are written to a scratch
branch of the table in the same pass, and counted from what was written. When that pass
gives up (a malformed row, a file that does not fit the others, one that changed), the
batch is read the careful way: kept by Spark, counted per file, then written."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ingestions.engines.base import FileBatch
from ingestions.engines.spark import once, sessions
from ingestions.engines.spark.reading import (
    INPUT_COLUMN,
    SPARK_CSV_OPTIONS,
    Reader,
    inference_sample,
    input_key,
    pin_local,
    spark_uri,
    still_pinned,
)
from ingestions.engines.spark.schemas import conform_to_table, merge_schemas
from ingestions.engines.spark.sql import failure_reason, quote
from ingestions.errors import FileReadError
from ingestions.sources.discovery import first_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame, SparkSession

    from ingestions.locations import SourceHandle

logger = logging.getLogger(__name__)


class SparkFileReading:
    """`SparkEngine`'s reading of source files (its `_errors`, `_jobs` and cancel state)."""

    def read_files(
        self,
        *,
        source: SourceHandle,
        paths: list[str],
        file_format: str,
        options: dict,
        sizes: Mapping[str, int] | None = None,
        table_name: str | None = None,
    ) -> FileBatch:
        failures: dict[str, FileReadError] = {}
        unsupported = sorted(set(options) - set(SPARK_CSV_OPTIONS) - {"null_values"})
        if options.get("null_values") and len(options["null_values"]) > 1:
            unsupported.append("null_values (more than one)")
        if unsupported:
            reason = (
                f"the spark engine does not support the reader option(s) {', '.join(unsupported)}"
            )
            return FileBatch(
                rows={}, failures={path: FileReadError(path, reason) for path in paths}
            )
        uris, keys = {}, {}
        pins: dict[str, tuple[int, int]] = {}
        for path in paths:
            full_path = source.full_path(path)
            if ".." in path.split("/"):
                failures[path] = FileReadError(path, "it resolves outside the storage location")
                continue
            if source.local_boundary is not None:
                try:
                    pins[path] = pin_local(source, full_path)
                except FileReadError as exc:
                    failures[path] = FileReadError(path, exc.reason)
                    continue
            uris[path], keys[path] = spark_uri(source, full_path), full_path
        if not uris:
            return FileBatch(rows={}, failures=failures)
        with self._errors("read the source files"), self._jobs("read source files") as spark:
            reader = Reader(
                spark, file_format=file_format, options=options, check=self._raise_if_cancelled
            )
            if table_name is not None and file_format == "csv" and self.can_stage:
                batch = self._read_once(
                    spark,
                    reader,
                    source=source,
                    table_name=table_name,
                    files=(uris, keys, pins),
                    options=options,
                    sizes=sizes,
                    failures=failures,
                )
                if batch is not None:
                    return batch
            sample = inference_sample(list(uris), sizes)
            try:
                frame, counts = reader.read(
                    list(uris.values()), sample=[uris[path] for path in sample]
                )
                frame, counts, cached = self._read_misfits_alone(
                    reader, (frame, counts, [frame]), uris, keys, sample, failures
                )
            except Exception as exc:
                if self._interrupted(exc):
                    raise
                # One of them cannot be read with the others: which, one file at a time.
                frame, counts, cached = self._read_one_by_one(reader, uris, failures)
            # What Spark read by path must be what was checked before: a file swapped for a
            # link (or another file) meanwhile fails, and none of its rows are written.
            for path, pin in pins.items():
                if path not in failures and not still_pinned(source, keys[path], pin):
                    failures[path] = FileReadError(path, "it changed while it was read")
            inputs = {input_key(name): name for name in counts}
            rows: dict[str, int] = {}
            loading: dict[str, str] = {}  # Spark's input file name -> relative path
            for path in uris:
                if path in failures:
                    continue
                name = inputs.get(keys[path])
                file_rows, malformed = counts.get(name, (0, 0))
                if malformed:
                    failures[path] = FileReadError(
                        path,
                        f"{malformed} of its {file_rows} rows are malformed (wrong number of "
                        "fields, or a value that does not parse as its column's type)",
                    )
                    continue
                rows[path] = file_rows
                if name is not None:
                    loading[name] = path
        batch = FileBatch(rows=rows, failures=failures, handle=(frame, loading, cached))
        if not loading:
            self.release_files(batch)  # nothing to write: free the rows Spark keeps now
            batch.handle = None
        return batch

    def release_files(self, batch: FileBatch) -> None:
        if isinstance(batch.handle, once.ScratchWrite):
            if not batch.handle.done:  # not published: its rows go, and a table it made
                self._drop_scratch(batch.handle)
                if batch.handle.created_table:
                    self._drop_if_empty(batch.handle.table_name)
            return
        for frame in (batch.handle or (None, {}, []))[2]:
            try:
                frame.unpersist()
            except Exception as exc:  # the session may be gone: nothing left to free
                logger.debug("could not unpersist a batch: %s", first_line(exc))

    def _read_once(
        self,
        spark: SparkSession,
        reader: Reader,
        *,
        source: SourceHandle,
        table_name: str,
        files: tuple[dict[str, str], dict[str, str], dict[str, tuple[int, int]]],
        options: dict,
        sizes: Mapping[str, int] | None,
        failures: dict[str, FileReadError],
    ) -> FileBatch | None:
        """Read the CSV files once, writing their rows to a scratch branch of the table, and
        count each file's rows in what was written; None (nothing left behind) when the
        batch must be read the careful way."""
        from pyspark.sql import functions as F

        uris, keys, pins = files
        scratch, created = None, False
        try:
            table_schema = self._spark_schema(spark, table_name)
            schema = None
            if table_schema is not None:
                # The table's types, by the first file's header: no inference pass.
                names = once.header_names(source, keys[next(iter(uris))], options)
                schema = once.table_read_schema(table_schema, names or [])
            if schema is None:
                sample = inference_sample(list(uris), sizes)
                schema = reader.infer([uri for path, uri in uris.items() if path in sample])
            frame = reader.read_strictly(list(uris.values()), schema)
            # Spark's own name of each file (what `input_file_name()` gives), from its listing.
            inputs = {input_key(name): name for name in frame.inputFiles()}
            if any(keys[path] not in inputs for path in uris):
                raise FileReadError(table_name, "Spark listed the files under other names")
            source_files = F.create_map(
                *[F.lit(item) for path in uris for item in (inputs[keys[path]], path)]
            )
            ingested_at = datetime.now(UTC)
            rows = frame.select(
                *[F.col(quote(name)) for name in frame.columns],
                F.coalesce(
                    F.element_at(source_files, F.input_file_name()),
                    F.raise_error(F.lit("a file outside the batch was read")),
                ).alias("_source_file"),
                F.lit(ingested_at).cast("timestamp_ltz").alias("_ingested_at"),
            )
            if table_schema is None:
                self._create_table(spark, table_name, rows.schema)
                created = True
            else:
                rows = conform_to_table(rows, table_schema)
                merge_schemas(table_schema, rows.schema)  # what Iceberg cannot widen: carefully
            table = self._iceberg_table(table_name)
            if once.drop_left_behind(table):  # a killed worker's: never committed
                table = self._iceberg_table(table_name)
            main = table.metadata.refs.get("main")
            scratch = once.ScratchWrite(
                table_name=table_name,
                branch=once.scratch_branch_name(),
                base_snapshot_id=main.snapshot_id if main else None,
                created_table=created,
            )
            qualified = self._qualified(table_name)
            spark.sql(f"ALTER TABLE {qualified} CREATE BRANCH {quote(scratch.branch)}")
            self._raise_if_cancelled()
            rows.writeTo(f"{qualified}.{quote(f'branch_{scratch.branch}')}").options(
                mergeSchema="true"
            ).append()
            # What Spark read by path must be what was checked before (see `read_files`).
            if any(not still_pinned(source, keys[path], pin) for path, pin in pins.items()):
                raise FileReadError(table_name, "a file changed while it was read")
            table = self._iceberg_table(table_name)
            once.read_scratch(table, scratch)
            counts = once.rows_per_source_file(table, scratch.data_files)
            if not set(counts) <= set(uris):
                raise FileReadError(table_name, "rows of a file outside the batch were written")
        except Exception as exc:
            if scratch is not None:
                self._drop_scratch(scratch)
            if created:
                self._drop_if_empty(table_name)
            if self._interrupted(exc):
                raise
            logger.info(
                "reading %d files once into %s gave up (%s): reading them carefully",
                len(uris),
                table_name,
                failure_reason(exc),
            )
            return None
        return FileBatch(
            rows={path: counts.get(path, 0) for path in uris},
            failures=failures,
            handle=scratch,
            ingested_at=ingested_at,
        )

    def _drop_scratch(self, scratch: once.ScratchWrite) -> None:
        try:
            once.drop(self._iceberg_table(scratch.table_name), scratch)
        except Exception as exc:  # left behind: `once.SCRATCH_BRANCH_PREFIX` names it
            logger.warning(
                "could not drop the scratch branch %s of %s: %s",
                scratch.branch,
                scratch.table_name,
                first_line(exc),
            )

    def _drop_if_empty(self, table_name: str) -> None:
        """Drop a table this read created when nothing was committed to it since."""
        try:
            if self._iceberg_table(table_name).metadata.current_snapshot_id is None:
                self._catalog_engine().drop_table(table_name)
        except Exception as exc:
            logger.warning("could not drop the empty table %s: %s", table_name, first_line(exc))

    def _read_one_by_one(
        self, reader: Reader, uris: dict[str, str], failures: dict[str, FileReadError]
    ) -> tuple[DataFrame | None, dict[str, tuple[int, int]], list[DataFrame]]:
        """Read each file alone; returns their rows united by column name, the counts, and
        the frames Spark keeps (to free when the batch is done)."""
        frames, counts = [], {}
        for path, uri in uris.items():
            try:
                frame, file_counts = reader.read([uri])
            except Exception as exc:
                if self._interrupted(exc):
                    raise
                # Spark names the file by its full path: the user knows it by its own.
                full_path = input_key(uri.replace("\\", ""))
                reason = failure_reason(exc).replace(f"file:{full_path}", path)
                reason = reason.replace(full_path, path)
                failures[path] = FileReadError(path, reason)
                continue
            frames.append(frame)
            counts.update(file_counts)
        if not frames:
            return None, counts, []
        combined = frames[0]
        for frame in frames[1:]:
            combined = combined.unionByName(frame, allowMissingColumns=True)
        return combined, counts, frames

    def _read_misfits_alone(
        self,
        reader: Reader,
        read: tuple[DataFrame, dict[str, tuple[int, int]], list[DataFrame]],
        uris: dict[str, str],
        keys: dict[str, str],
        sample: set[str],
        failures: dict[str, FileReadError],
    ) -> tuple[DataFrame, dict[str, tuple[int, int]], list[DataFrame]]:
        """A file outside the inference sample whose values do not fit the sampled types (a
        wider column) is read again by itself, with its own types, as the embedded engine
        reads every file; its rows of the shared read are left out. The others were read
        once."""
        from pyspark.sql import functions as F

        frame, counts, cached = read
        inputs = {input_key(name): name for name in counts}
        misfits = {
            path: uri
            for path, uri in uris.items()
            if path not in sample and counts.get(inputs.get(keys[path]), (0, 0))[1]
        }
        if not misfits:
            return frame, counts, cached
        frame = frame.where(~F.col(INPUT_COLUMN).isin([inputs[keys[path]] for path in misfits]))
        alone, alone_counts, alone_cached = self._read_one_by_one(reader, misfits, failures)
        counts.update(alone_counts)
        if alone is not None:
            frame = frame.unionByName(alone, allowMissingColumns=True)
        return frame, counts, cached + alone_cached

    def _interrupted(self, exc: BaseException) -> bool:
        """Whether a failed read is not the files' fault: a cancel, or Spark gone."""
        return self._cancel_requested.is_set() or sessions.is_unreachable(exc)
