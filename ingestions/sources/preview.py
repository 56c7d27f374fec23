"""Check a source before an ingestion is saved: what its pattern matches, and a sample read.

The console's "Check source" calls `source_check`; it goes through the same doors as a run:
`source_open` (the tenant's storage locations), the listing of `discovery` and the reader of
`readers`, so what the check shows is what a run would find and read. Everything is bounded:
the names shown, the bytes read and the rows returned.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pyarrow as pa

from ingestions.engines.type_names import iceberg_type_name
from ingestions.errors import FileReadError
from ingestions.locations import source_open
from ingestions.models import Tenant
from ingestions.ratelimits import expensive_read
from ingestions.selectors import _shown as shown_cell  # the table page's cell, same cut
from ingestions.sources.discovery import list_source_entries
from ingestions.sources.readers import read_source_file, validate_reader_options

CHECK_FILES_SHOWN = 20
CHECK_SAMPLE_ROWS = 20
# CSV and JSON lines are read from the start of the file up to this many bytes, cut after
# the last whole line: enough for the sample's rows, whatever the file's size.
CHECK_MAX_TEXT_BYTES = 1_000_000
# Parquet keeps its schema in a footer, so a file is read whole: only up to this size.
CHECK_MAX_PARQUET_BYTES = 64_000_000


def source_check(
    *,
    tenant: Tenant,
    actor,
    uri: str,
    file_format: str,
    pattern: str = "",
    options: dict | None = None,
) -> dict:
    """List what `pattern` matches under `uri` and read a sample of the first file.

    Nothing is saved. The source is checked against the tenant's locations before anything
    is listed or read.

    Returns:
        {"uri", "location", "files": {"count", "total_bytes", "oldest", "newest", "names",
        "more"}, "sample": {"path", "columns": [{"name", "type"}], "rows", "truncated"} or
        None, "sample_error": {"path", "reason"} or None, "sample_skipped": reason or ""}.
        A file that cannot be read is reported in `sample_error`, not raised.

    Raises:
        ValueError: unknown format or reader options (`validate_reader_options`).
        SourceNotAllowedError: the source is outside the tenant's locations.
        SourceUnavailableError, SourceListingLimitError: the source cannot be listed.
        RateLimitedError: the actor's or the tenant's checks are used up, or the tenant's
            listings are all busy (`ingestions.ratelimits.expensive_read`).
    """
    options = validate_reader_options(file_format=file_format, options=options)
    source = source_open(tenant=tenant, uri=uri)
    with expensive_read(tenant=tenant, actor=actor):
        entries = list_source_entries(source=source, pattern=pattern or None)
        return _result(source, entries, file_format=file_format, options=options)


def _result(source, entries, *, file_format: str, options: dict) -> dict:
    modified = [modified_ns for _, _, modified_ns in entries if modified_ns is not None]
    result = {
        "uri": source.uri,
        "location": source.location.uri,
        "files": {
            "count": len(entries),
            "total_bytes": sum(size for _, size, _ in entries),
            "oldest": _moment(min(modified)) if modified else None,
            "newest": _moment(max(modified)) if modified else None,
            "names": [path for path, _, _ in entries[:CHECK_FILES_SHOWN]],
            "more": max(len(entries) - CHECK_FILES_SHOWN, 0),
        },
        "sample": None,
        "sample_error": None,
        "sample_skipped": "",
    }
    if not entries:
        return result
    path, size, _ = entries[0]
    if file_format == "parquet" and size > CHECK_MAX_PARQUET_BYTES:
        result["sample_skipped"] = (
            f"{path} is larger than the {CHECK_MAX_PARQUET_BYTES // 1_000_000} MB a check reads "
            "of a Parquet file: no sample."
        )
        return result
    head = _HeadOfFile(source.filesystem, max_bytes=CHECK_MAX_TEXT_BYTES)
    try:
        data = read_source_file(
            source=dataclasses.replace(source, filesystem=head),
            path=path,
            file_format=file_format,
            options=options,
        )
    except FileReadError as exc:
        result["sample_error"] = {"path": exc.path, "reason": exc.reason}
        return result
    result["sample"] = {
        "path": path,
        "columns": [
            {"name": field.name, "type": iceberg_type_name(field.type)} for field in data.schema
        ],
        "rows": [
            [shown_cell(row.get(name)) for name in data.column_names]
            for row in data.slice(0, CHECK_SAMPLE_ROWS).to_pylist()
        ],
        "truncated": head.truncated,
    }
    return result


def _moment(modified_ns: int) -> datetime:
    return datetime.fromtimestamp(modified_ns / 1e9, tz=UTC)


class _HeadOfFile:
    """The filesystem a check reads through: streams (CSV, JSON lines) give only their first
    `max_bytes`, cut after the last whole line; Parquet files open as they are (the caller
    bounds their size). Decompression by extension happens below, in the real filesystem."""

    def __init__(self, filesystem, *, max_bytes: int):
        self._filesystem = filesystem
        self._max_bytes = max_bytes
        self.truncated = False

    def open_input_stream(self, path: str) -> pa.NativeFile:
        with self._filesystem.open_input_stream(path) as stream:
            head = stream.read(self._max_bytes + 1)
        if len(head) > self._max_bytes:
            self.truncated = True
            head = head[: self._max_bytes]
            last_line_end = head.rfind(b"\n")
            if last_line_end >= 0:
                head = head[: last_line_end + 1]
        return pa.BufferReader(head)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self._filesystem.open_input_file(path)
