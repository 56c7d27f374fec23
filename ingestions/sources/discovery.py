"""Find the files under a checked source: a bounded local walk, or pyarrow's S3 listing."""

from __future__ import annotations

import os
import posixpath
import time
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from stat import S_ISREG as stat_is_file
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs

from ingestions.errors import SourceListingLimitError, SourceUnavailableError

if TYPE_CHECKING:
    from ingestions.locations import SourceHandle

# Writers mark in-progress or bookkeeping files this way (.part, _SUCCESS, _temporary/).
HIDDEN_PREFIXES = (".", "_")


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


# Entries of any kind (folders, hidden files) a listing may see per file it may list.
ENTRIES_PER_FILE = 4


def list_source_files(*, source: SourceHandle, pattern: str | None = None) -> list[SourceFile]:
    """List the visible files under a checked source, recursively, sorted by relative path.

    Args:
        source: From `ingestions.locations.source_open` (checked against the locations).
        pattern: Optional glob; a file matches when its relative path or its basename does,
            so "*.csv" also finds nested CSV files.

    Raises:
        SourceUnavailableError: The root does not exist, is not a directory or cannot be listed.
        SourceListingLimitError: Past AUTOLOADER_LISTING_MAX_ENTRIES files (or four times
            as many entries of any kind) or AUTOLOADER_LISTING_MAX_SECONDS seconds.
    """
    return [SourceFile(*entry) for entry in list_source_entries(source=source, pattern=pattern)]


def list_source_entries(
    *, source: SourceHandle, pattern: str | None = None
) -> list[tuple[str, int, int | None]]:
    """`list_source_files` as plain `(path, size_bytes, modified_ns)` tuples, sorted by path.

    The fast form for callers that only count and sum (a dry-run over 100,000 files): it
    builds no objects per file beyond the tuple.

    Raises:
        SourceUnavailableError, SourceListingLimitError: see `list_source_files`.
    """
    from django.conf import settings

    bound = _Bound(
        max_entries=settings.AUTOLOADER_LISTING_MAX_ENTRIES,
        max_seconds=settings.AUTOLOADER_LISTING_MAX_SECONDS,
        uri=source.uri,
    )
    if source.local_boundary is not None:
        entries = _walk_local(source, bound)
    else:
        entries = _list_store(source, bound)
    if pattern:
        entries = [entry for entry in entries if _matches(entry[0], pattern)]
    entries.sort()
    return entries


class _Bound:
    """Stops a listing past a number of files or seconds, with a clear error.

    The bound counts files, what a run loads: a million files in one folder is a million,
    not a million and one. Folders and hidden entries count only against a wider bound
    (ENTRIES_PER_FILE per allowed file), so that a tree of empty folders still ends.
    """

    def __init__(self, *, max_entries: int, max_seconds: float, uri: str):
        self.max_files = max_entries
        self.max_entries = max_entries * ENTRIES_PER_FILE
        self.deadline = time.monotonic() + max_seconds
        self.max_seconds = max_seconds
        self.uri = uri
        self.files = 0
        self.seen = 0

    def add_files(self, count: int = 1) -> None:
        self.files += count
        if self.files > self.max_files:
            raise SourceListingLimitError(
                f"Listing {self.uri} stopped: more than {self.max_files:,} files."
            )

    def saw(self, count: int = 1) -> None:
        """Any entry (file, folder, hidden): the wider bound, and the clock now and then."""
        self.seen += count
        if self.seen > self.max_entries:
            raise SourceListingLimitError(
                f"Listing {self.uri} stopped: more than {self.max_entries:,} entries "
                "(files, folders and hidden entries)."
            )
        if self.seen % 512 == 0 or count > 1:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SourceListingLimitError(
                f"Listing {self.uri} stopped after {self.max_seconds:g} s "
                f"({self.files:,} files seen)."
            )


def _walk_local(source: SourceHandle, bound: _Bound) -> list[tuple[str, int, int | None]]:
    """Walk a local folder without ever following a directory symlink.

    A symlinked file is listed only when its target lies inside the location; a link to a
    directory is never entered, so a loop (`loop -> .`) lists nothing twice and a link out
    of the location reads nothing.
    """
    root = source.root
    try:
        if not os.path.isdir(root) or os.path.islink(root):
            if not os.path.exists(root):
                raise SourceUnavailableError(f"Source {source.uri!r} does not exist.")
            raise SourceUnavailableError(f"Source {source.uri!r} is not a directory.")
    except OSError as exc:
        raise SourceUnavailableError(f"Cannot list source {source.uri!r}: {exc.strerror}") from exc
    entries: list[tuple[str, int, int | None]] = []
    pending = [(root, "")]
    while pending:
        folder, relative_folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    bound.saw()
                    if entry.name.startswith(HIDDEN_PREFIXES):
                        continue
                    relative_path = relative_folder + entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append((entry.path, relative_path + "/"))
                        elif entry.is_file(follow_symlinks=False):
                            stat = entry.stat(follow_symlinks=False)
                            entries.append((relative_path, stat.st_size, stat.st_mtime_ns))
                            bound.add_files()
                        elif entry.is_symlink() and source.is_readable(entry.path):
                            target = _stat_link_target(entry.path)
                            if target is not None and stat_is_file(target.st_mode):
                                entries.append((relative_path, target.st_size, target.st_mtime_ns))
                                bound.add_files()
                    except OSError:
                        # Renamed, removed or swapped while listed: not listed this time (a
                        # run lists again; the read checks what it opens in any case).
                        continue
        except FileNotFoundError:
            continue  # a folder removed while listing: its files are simply not there
        except OSError as exc:
            raise SourceUnavailableError(
                f"Cannot list source {source.uri!r}: {exc.strerror or type(exc).__name__}"
            ) from exc
    return entries


def _stat_link_target(path: str) -> os.stat_result | None:
    """The link's target (inside the location, checked by the caller); None when dangling."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _list_store(source: SourceHandle, bound: _Bound) -> list[tuple[str, int, int | None]]:
    """List an object store (no symlinks there) through pyarrow's C++ client."""
    filesystem, root = source.filesystem, source.root
    try:
        root_info = filesystem.get_file_info(root)
        if root_info.type == pafs.FileType.NotFound:
            raise SourceUnavailableError(f"Source {source.uri!r} does not exist.")
        if root_info.type != pafs.FileType.Directory:
            raise SourceUnavailableError(f"Source {source.uri!r} is not a directory.")
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise SourceUnavailableError(
            f"Cannot list source {source.uri!r}: {first_line(exc)}"
        ) from exc
    bound.saw(len(infos))
    # The hot loop of every dry-run over S3: plain string tests and tuples only.
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
        entries.append((relative_path, size, info.mtime_ns))
    bound.add_files(len(entries))
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: readable, without Arrow's source context."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
