"""Find the files under a checked source: a bounded local walk, or S3's paged listing."""

from __future__ import annotations

import gc
import os
import posixpath
import time
from collections.abc import Container, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from stat import S_ISREG as stat_is_file
from typing import TYPE_CHECKING, NamedTuple

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
    # The store's checksum of the content where its listing gives one (S3's ETag, without
    # quotes); None for local files.
    etag: str | None = None

    @property
    def modified_at(self) -> datetime | None:
        """Modification time, tz-aware UTC."""
        if self.modified_ns is None:
            return None
        return datetime.fromtimestamp(self.modified_ns / 1e9, tz=UTC)


# Entries of any kind (folders, hidden files) a listing may see per file it may list.
ENTRIES_PER_FILE = 4


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a listing and its history are built.

    Both make one small object per file (tuples and strings, never cycles), and every few
    hundred of them the collector walks the young objects, and now and then every object of
    the process: ~4 ms for 10,000 files, and a ~100 ms full pass one run in four or five
    (`bench/changed_files.py`). Paused, nothing is collected that could be: objects are
    still freed by reference counting, and cycles wait for the collector's next pass. Not
    nested per thread: the first to pause restores the collector as it found it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    return [
        SourceFile(*entry)
        for entry in list_source_entries(source=source, pattern=pattern, with_etags=True)
    ]


def list_source_entries(
    *,
    source: SourceHandle,
    pattern: str | None = None,
    with_etags: bool = False,
    skip: Container[str] = (),
    ordered: bool = True,
) -> list[tuple]:
    """`list_source_files` as plain `(path, size_bytes, modified_ns)` tuples, sorted by path
    (with `with_etags`, an object store's entries carry the ETag as a fourth item).

    The fast form for callers that only count and sum (a dry-run over 1,000,000 files): it
    builds no objects per file beyond the tuple. A file whose path is in `skip` (checked
    when the file is seen) is counted against the bound but neither examined nor returned:
    a local file then costs no `stat` and no tuple. `skip` may grow while the listing runs
    (another thread filling a set); a path added after its file was seen is listed. A
    caller that only counts passes `ordered=False`: sorting 1,000,000 paths costs half a
    second.

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
        entries = _walk_local(source, bound, skip)
    else:
        entries = _list_store(source, bound, with_etags=with_etags, skip=skip)
    if pattern:
        entries = [entry for entry in entries if _matches(entry[0], pattern)]
    if ordered:
        entries.sort(key=_path_of)  # paths are unique: sorting by them alone is the same order
    return entries


def _path_of(entry: tuple) -> str:
    # Sorting on a str key takes list.sort's string fast path: 2.5x faster than comparing
    # the tuples at 1,000,000 entries.
    return entry[0]


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
        """Any entry (file, folder, hidden): the wider bound, and the clock."""
        self.seen += count
        if self.seen > self.max_entries:
            raise SourceListingLimitError(
                f"Listing {self.uri} stopped: more than {self.max_entries:,} entries "
                "(files, folders and hidden entries)."
            )
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SourceListingLimitError(
                f"Listing {self.uri} stopped after {self.max_seconds:g} s "
                f"({self.files:,} files seen)."
            )


# A local walk tells its bound what it saw every this many entries (and at each folder's
# end): a method call and a clock read per entry were a tenth of a 1,000,000-file walk.
BOUND_EVERY = 1024


def _walk_local(
    source: SourceHandle, bound: _Bound, skip: Container[str]
) -> list[tuple[str, int, int | None]]:
    """Walk a local folder without ever following a directory symlink.

    A symlinked file is listed only when its target lies inside the location; a link to a
    directory is never entered, so a loop (`loop -> .`) lists nothing twice and a link out
    of the location reads nothing. The loop is the listing's hot path (one pass per file):
    counters are local and reported to the bound in blocks of BOUND_EVERY entries.
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
    append = entries.append
    pending = [(root, "")]
    while pending:
        folder, relative_folder = pending.pop()
        seen = files = 0
        try:
            with os.scandir(folder) as listing:
                for entry in listing:
                    seen += 1
                    if seen == BOUND_EVERY:
                        bound.add_files(files)  # files first: the bound a user sets
                        bound.saw(seen)
                        seen = files = 0
                    name = entry.name
                    if name.startswith(HIDDEN_PREFIXES):
                        continue
                    relative_path = relative_folder + name
                    try:
                        if entry.is_file(follow_symlinks=False):
                            files += 1
                            if relative_path in skip:
                                continue
                            stat = entry.stat(follow_symlinks=False)
                            append((relative_path, stat.st_size, stat.st_mtime_ns))
                        elif entry.is_dir(follow_symlinks=False):
                            pending.append((entry.path, relative_path + "/"))
                        elif entry.is_symlink() and source.is_readable(entry.path):
                            target = _stat_link_target(entry.path)
                            if target is not None and stat_is_file(target.st_mode):
                                files += 1
                                if relative_path not in skip:
                                    append((relative_path, target.st_size, target.st_mtime_ns))
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
        bound.add_files(files)
        bound.saw(seen)
    return entries


def _stat_link_target(path: str) -> os.stat_result | None:
    """The link's target (inside the location, checked by the caller); None when dangling."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _list_store(
    source: SourceHandle, bound: _Bound, *, with_etags: bool, skip: Container[str] = ()
) -> list[tuple[str, int, int | None] | tuple[str, int, int | None, str]]:
    """List an object store (no symlinks there) with S3's ListObjectsV2, 1,000 keys a page.

    Through the S3 API rather than pyarrow's listing because each object's ETag comes in
    the same page as its size and time, and pyarrow drops it: a changed file is judged by
    its content's checksum with no request per file. The bound is checked page by page.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = source.root.partition("/")
    key = key.strip("/")
    prefix = f"{key}/" if key else ""
    prefix_length = len(prefix)
    entries: list = []
    any_object = False
    times: dict[str, int | None] = {}  # objects uploaded together share their time's text
    try:
        client = source.s3_client
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            contents = page.get("Contents") or ()
            any_object = any_object or bool(contents)
            found = len(entries)
            skipped = 0
            # The hot loop of every listing of S3: plain string tests and tuples only.
            for item in contents:
                full_key = item["Key"]
                if full_key.endswith("/"):
                    continue  # a folder marker
                relative_path = full_key[prefix_length:]
                if _is_hidden(relative_path):
                    continue
                if relative_path in skip:
                    skipped += 1
                    continue
                stamp = item.get("LastModified")
                if stamp not in times:
                    times[stamp] = _store_time_ns(stamp)
                modified_ns = times[stamp]
                if with_etags:
                    etag = (item.get("ETag") or "").strip('"') or None
                    entries.append((relative_path, item["Size"], modified_ns, etag))
                else:
                    entries.append((relative_path, item["Size"], modified_ns))
            bound.add_files(len(entries) - found + skipped)  # files first, as a walk's
            bound.saw(len(contents))
        if not any_object and key and _is_object(client, bucket, key):
            raise SourceUnavailableError(f"Source {source.uri!r} is not a directory.")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "NoSuchKey", "404"):
            raise SourceUnavailableError(f"Source {source.uri!r} does not exist.") from exc
        raise SourceUnavailableError(
            f"Cannot list source {source.uri!r}: {first_line(exc)}"
        ) from exc
    except BotoCoreError as exc:
        raise SourceUnavailableError(
            f"Cannot list source {source.uri!r}: {first_line(exc)}"
        ) from exc
    if not any_object and key:
        # S3 has no folders: a prefix with no object under it is a source that is not there.
        raise SourceUnavailableError(f"Source {source.uri!r} does not exist.")
    return entries


def _is_object(client, bucket: str, key: str) -> bool:
    """Whether `key` is an object (a file named as the source): asked only of an empty
    listing, never per file."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


def _store_time_ns(text: str | None) -> int | None:
    """An object's LastModified ("2026-12-06T14:06:49.000Z") in integer nanoseconds, the
    same figure pyarrow's listing gave, so histories recorded through it still match."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        from botocore.utils import parse_timestamp

        moment = parse_timestamp(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // ONE_MICROSECOND * 1000


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
