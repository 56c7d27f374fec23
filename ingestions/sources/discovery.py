"""Find the files under a source location, through pyarrow.fs so local disk and S3 share code."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import pyarrow as pa
import pyarrow.fs as pafs

from ingestions.errors import SourceUnavailableError

# Writers mark in-progress or bookkeeping files this way (.part, _SUCCESS, _temporary/).
HIDDEN_PREFIXES = (".", "_")


@dataclass(frozen=True)
class SourceFile:
    """One file found under a source root."""

    path: str  # relative to the source root, POSIX separators
    size_bytes: int
    modified_at: datetime | None  # tz-aware UTC


def open_source(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem serving `uri` and the root path inside it.

    Accepts URIs pyarrow knows ("file:///abs", "s3://bucket/prefix") and absolute local paths.

    Raises:
        SourceUnavailableError: The URI is relative or names an unknown filesystem.
    """
    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceUnavailableError(
            f"Cannot open source {uri!r}: {first_line(exc)}. "
            "Use an absolute path or a URI such as file:///data/in or s3://bucket/prefix."
        ) from exc
    # "/" must stay "/"; every other root loses its trailing slash so prefixes compare cleanly.
    return filesystem, root.rstrip("/") or root


def list_source_files(*, uri: str, pattern: str | None = None) -> list[SourceFile]:
    """List the visible files under `uri`, recursively, sorted by relative path.

    Args:
        uri: Source root (see `open_source`).
        pattern: Optional glob; a file matches when its relative path or its basename does,
            so "*.csv" also finds nested CSV files.

    Raises:
        SourceUnavailableError: The root does not exist, is not a directory or cannot be listed.
    """
    filesystem, root = open_source(uri)
    try:
        root_info = filesystem.get_file_info(root)
        if root_info.type == pafs.FileType.NotFound:
            raise SourceUnavailableError(f"Source {uri!r} does not exist.")
        if root_info.type != pafs.FileType.Directory:
            raise SourceUnavailableError(f"Source {uri!r} is not a directory.")
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise SourceUnavailableError(f"Cannot list source {uri!r}: {first_line(exc)}") from exc

    root_prefix = root.rstrip("/") + "/"
    files = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.startswith(root_prefix):
            continue
        relative_path = info.path[len(root_prefix) :]
        if _is_hidden(relative_path):
            continue
        if pattern and not _matches(relative_path, pattern):
            continue
        files.append(
            SourceFile(
                path=relative_path,
                size_bytes=info.size or 0,
                modified_at=_as_utc(info.mtime),
            )
        )
    return sorted(files, key=lambda source_file: source_file.path)


def _is_hidden(relative_path: str) -> bool:
    return any(part.startswith(HIDDEN_PREFIXES) for part in relative_path.split("/"))


def _matches(relative_path: str, pattern: str) -> bool:
    # Case-sensitive on every OS: object stores are, and a pattern must mean the same everywhere.
    return fnmatchcase(relative_path, pattern) or fnmatchcase(
        posixpath.basename(relative_path), pattern
    )


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    # Filesystems that report naive times report UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: readable, without Arrow's source context."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
