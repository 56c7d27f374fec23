"""Find the files under a source location, through pyarrow.fs so local disk and S3 share code."""

from __future__ import annotations

import functools
import posixpath
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import NamedTuple
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ingestions.errors import SourceUnavailableError

# Writers mark in-progress or bookkeeping files this way (.part, _SUCCESS, _temporary/).
HIDDEN_PREFIXES = (".", "_")

# s3a:// is how Spark and Hadoop spell the same buckets; both reach S3 through pyarrow.
S3_SCHEMES = ("s3", "s3a")


class SourceFile(NamedTuple):
    """One file found under a source root.

    A named tuple, not a dataclass: a listing builds hundreds of thousands of them, and the
    modification time is kept as the store's integer nanoseconds until someone asks.
    """

    path: str  # relative to the source root, POSIX separators
    size_bytes: int
    modified_ns: int | None = None

    @property
    def modified_at(self) -> datetime | None:
        """Modification time, tz-aware UTC."""
        if self.modified_ns is None:
            return None
        return datetime.fromtimestamp(self.modified_ns / 1e9, tz=UTC)


def open_source(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem serving `uri` and the root path inside it.

    Accepts URIs pyarrow knows ("file:///abs", "s3://bucket/prefix") and absolute local paths.
    S3 is reached with the AUTOLOADER_S3_* settings (see `s3_filesystem`), so a source URI
    never carries credentials.

    Raises:
        SourceUnavailableError: The URI is relative or names an unknown filesystem.
    """
    try:
        filesystem, root = filesystem_for(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SourceUnavailableError(
            f"Cannot open source {uri!r}: {first_line(exc)}. "
            "Use an absolute path or a URI such as file:///data/in or s3://bucket/prefix."
        ) from exc
    # "/" must stay "/"; every other root loses its trailing slash so prefixes compare cleanly.
    return filesystem, root.rstrip("/") or root


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem serving `uri` and the path inside it, S3 configured from settings.

    Raises:
        pyarrow.ArrowException, OSError, ValueError: pyarrow cannot make sense of `uri`.
    """
    scheme, separator, rest = uri.partition("://")
    if separator and scheme.lower() in S3_SCHEMES:
        bucket_and_key = rest.strip("/")
        if not bucket_and_key:
            raise ValueError("an S3 URI needs a bucket: s3://bucket/prefix")
        return s3_filesystem(), bucket_and_key
    return pafs.FileSystem.from_uri(uri)


def s3_filesystem() -> pafs.S3FileSystem:
    """The S3 filesystem of the AUTOLOADER_S3_* settings, read now.

    An empty setting leaves the choice to pyarrow, which reads the standard AWS variables
    (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...) and then the AWS default chain.
    """
    from django.conf import settings

    return _s3_filesystem(
        endpoint_url=settings.AUTOLOADER_S3_ENDPOINT_URL,
        region=settings.AUTOLOADER_S3_REGION,
        access_key=settings.AUTOLOADER_S3_ACCESS_KEY_ID,
        secret_key=settings.AUTOLOADER_S3_SECRET_ACCESS_KEY,
    )


@functools.lru_cache(maxsize=8)
def _s3_filesystem(
    *, endpoint_url: str, region: str, access_key: str, secret_key: str
) -> pafs.S3FileSystem:
    # One client per configuration and process: building one sets up the AWS SDK's pools.
    options: dict[str, str] = {}
    if endpoint_url:
        parsed = urlsplit(endpoint_url)
        if parsed.scheme:
            options["scheme"] = parsed.scheme
            options["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        else:
            options["endpoint_override"] = endpoint_url
    if region:
        options["region"] = region
    if access_key and secret_key:
        options["access_key"] = access_key
        options["secret_key"] = secret_key
    return pafs.S3FileSystem(**options)


def list_source_files(*, uri: str, pattern: str | None = None) -> list[SourceFile]:
    """List the visible files under `uri`, recursively, sorted by relative path.

    Args:
        uri: Source root (see `open_source`).
        pattern: Optional glob; a file matches when its relative path or its basename does,
            so "*.csv" also finds nested CSV files.

    Raises:
        SourceUnavailableError: The root does not exist, is not a directory or cannot be listed.
    """
    return [SourceFile(*entry) for entry in list_source_entries(uri=uri, pattern=pattern)]


def list_source_entries(
    *, uri: str, pattern: str | None = None
) -> list[tuple[str, int, int | None]]:
    """`list_source_files` as plain `(path, size_bytes, modified_ns)` tuples, sorted by path.

    The fast form for callers that only count and sum (a dry-run over 100,000 files): it
    builds no objects per file beyond the tuple.

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

    # The hot loop of every dry-run and run: it sticks to plain string tests and tuples.
    # A directory has no size (`info.type` would build an enum per entry; this is cheaper).
    root_prefix = root.rstrip("/") + "/"
    prefix_length = len(root_prefix)
    entries = []
    for info in infos:
        size = info.size
        if size is None:
            continue
        full_path = info.path
        if not full_path.startswith(root_prefix) or full_path.endswith("/"):
            continue
        relative_path = full_path[prefix_length:]
        if _is_hidden(relative_path):
            continue
        if pattern and not _matches(relative_path, pattern):
            continue
        entries.append((relative_path, size, info.mtime_ns))
    entries.sort()
    return entries


def _is_hidden(relative_path: str) -> bool:
    """Whether any part of the path starts with a hidden prefix ("." or "_")."""
    return (
        relative_path.startswith(HIDDEN_PREFIXES) or "/." in relative_path or "/_" in relative_path
    )


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
