"""How a run cuts its files into batches (one Iceberg commit each), and how the embedded
engine fits a batch's files to the table's schema with their lineage columns."""

from collections.abc import Callable

import pyarrow as pa
from django.conf import settings
from django.utils import timezone

from .errors import AutoloaderError
from .runs import SMALL_FILE_ROWS
from .sources import SourceFile
from .sources.readers import conform_to_schema, source_file_column, with_metadata_columns


class BatchFitter:
    """Fits a batch's files to the table's schema and adds their lineage columns.

    Small files of one schema are fitted together, once (per file, the fixed cost of a
    fit is most of a small file's time); when that fails, file by file, so a bad file fails
    alone. A big file is fitted by itself as soon as it is read, so its raw rows are freed.
    With no table yet, the first file decides the schema and the others fit it.

    With a `sink` (the engine's `DataWriter.write`), each fitted part goes to it at once and
    is not kept: the batch is never whole in memory. A sink's failure is the batch's, not a
    file's: it is raised.
    """

    def __init__(
        self,
        *,
        schema: pa.Schema | None,
        failures: list[dict],
        sink: Callable[[pa.Table], None] | None = None,
    ):
        self.schema = schema
        self.failures = failures
        self.sink = sink
        self.ingested_at = timezone.now()
        self.parts: list[pa.Table] = []
        self.fitted: set[str] = set()
        self.pending: list[tuple[SourceFile, pa.Table]] = []
        self.pending_rows = 0

    def add(self, source: SourceFile, data: pa.Table) -> None:
        if self.pending and not data.schema.equals(self.pending[0][1].schema):
            self._fit_pending()
        self.pending.append((source, data))
        self.pending_rows += data.num_rows
        if self.pending_rows >= SMALL_FILE_ROWS:
            self._fit_pending()

    def finish(self) -> tuple[pa.Table | None, set[str]]:
        """The batch's data (None when no file fitted) and the paths of the files in it."""
        self._fit_pending()
        return _concat(self.parts), self.fitted

    def _fit_pending(self) -> None:
        files, self.pending, self.pending_rows = self.pending, [], 0
        if len(files) > 1:
            try:
                data = self._fit(files)
            except (AutoloaderError, pa.ArrowException, ValueError):
                pass  # one of them does not fit: find which, file by file
            else:
                self._keep(data)
                return
        for item in files:
            try:
                data = self._fit([item])
            except AutoloaderError as exc:
                self.failures.append(batch_failure(item[0], exc))
            else:
                self._keep(data)

    def _keep(self, data: pa.Table) -> None:
        if self.sink is None:
            self.parts.append(data)
        else:
            self.sink(data)

    def _fit(self, files: list[tuple[SourceFile, pa.Table]]) -> pa.Table:
        data = pa.concat_tables([data for _, data in files])
        paths = source_file_column([(source.path, part.num_rows) for source, part in files])
        data = with_metadata_columns(data, source_file=paths, ingested_at=self.ingested_at)
        if self.schema is not None:
            data = conform_to_schema(data, self.schema)
        else:
            self.schema = data.schema
        self.fitted.update(source.path for source, _ in files)
        return data


def batch_failure(source: SourceFile, exc: AutoloaderError) -> dict:
    return {
        "path": source.path,
        "error": str(exc),
        "error_code": exc.error_code,
        "size_bytes": source.size_bytes,
    }


def _concat(parts: list[pa.Table]) -> pa.Table | None:
    if not parts:
        return None
    data = pa.concat_tables(parts, promote_options="permissive")
    if data.num_columns and data.num_rows < SMALL_FILE_ROWS * data.column(0).num_chunks:
        # Many small files: pyiceberg writes chunk by chunk, and thousands of tiny chunks
        # write several times slower than one. Copying small files' rows costs little.
        data = data.combine_chunks()
    return data


def split_batches(files: list[SourceFile]) -> list[list[SourceFile]]:
    """Cut the files into batches by the bounds the listing knows: bytes and files.

    A batch is one Iceberg commit, and a commit's cost grows with the table, not with the
    batch: many small files make few big batches. The files bound is an upper bound (1
    gives one commit per file, the most commit boundaries, as the crash tests want).
    """
    max_files = max(1, settings.AUTOLOADER_BATCH_MAX_FILES)
    max_bytes = max(1, settings.AUTOLOADER_BATCH_MAX_BYTES)
    batches: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    current_bytes = 0
    for source in files:
        if current and (len(current) >= max_files or current_bytes + source.size_bytes > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(source)
        current_bytes += source.size_bytes
    if current:
        batches.append(current)
    return batches
