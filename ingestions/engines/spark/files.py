"""The spark engine's FileReading interface: a batch's files read by Spark's executors,
counted per file (rows, malformed rows), each checked again after the read."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ingestions.engines.base import FileBatch
from ingestions.engines.spark import sessions
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
from ingestions.engines.spark.sql import failure_reason
from ingestions.errors import FileReadError
from ingestions.sources.discovery import first_line

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyspark.sql import DataFrame

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
        for frame in (batch.handle or (None, {}, []))[2]:
            try:
                frame.unpersist()
            except Exception as exc:  # the session may be gone: nothing left to free
                logger.debug("could not unpersist a batch: %s", first_line(exc))

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
