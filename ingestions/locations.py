"""Storage locations: the only storage a tenant's sources may read, and the checks that hold it.

A platform administrator grants a tenant a location (a URI prefix, with its own S3 keys);
every source URI is checked against the tenant's locations when an ingestion is created or
changed **and** every time it is opened (a listing, a file read), so a revoked location or a
symlink swapped after the check reaches nothing. Only `file` and `s3`/`s3a` are spoken: no
other filesystem pyarrow knows (gs, abfs, hdfs ...) is ever built from a user's string, and
each S3 location gets its own client with its own keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from .errors import SourceNotAllowedError
from .models import StorageLocation, Tenant

# s3a:// is how Spark and Hadoop spell the same buckets.
SCHEMES = {"file": "file", "s3": "s3", "s3a": "s3"}
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# How long an S3 call may take: a dry-run must answer, not hang on an unreachable endpoint.
S3_CONNECT_TIMEOUT_SECONDS = 5.0
S3_REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class StoragePath:
    """A parsed `file` or `s3` URI: `path` is "/abs/dir" or "bucket/key/prefix", normalized."""

    scheme: str  # "file" or "s3" (s3a folded into s3)
    path: str
    spelling: str  # how the user wrote the scheme: "file", "s3", "s3a", or "" for a bare path

    @property
    def prefix(self) -> str:
        """The canonical prefix, ending with "/", that containment is decided on."""
        if self.scheme == "file":
            return "file://" + self.path.rstrip("/") + "/"
        return f"s3://{self.path.rstrip('/')}/"

    def as_uri(self) -> str:
        """The normalized URI, in one form: a local source is `file:///abs/path` whether it
        was given so or as a bare path (the API accepts both, and shows what the console
        shows); S3 keeps the scheme it was given (s3 or s3a)."""
        if self.scheme == "file":
            return "file://" + quote(self.path)
        return f"{self.spelling}://{self.path}"


def parse_storage_uri(uri: str) -> StoragePath:
    """Parse and normalize a source or location URI.

    Accepts absolute paths, file:///abs/path and s3://bucket/prefix (s3a too). Collapses
    "//", resolves "." and ".." in local paths, and lowercases the scheme.

    Raises:
        ValueError: another scheme, a relative path, a host, user, port, query string or
            fragment, a NUL character, or ".." in an S3 key.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("A URI is required.")
    if "\x00" in uri or any(ord(char) < 32 for char in uri):
        raise ValueError("The URI contains control characters.")
    uri = uri.strip()
    if uri.startswith("/"):
        return StoragePath("file", _normalize_local(uri), "")
    scheme, separator, _ = uri.partition("://")
    spelling = scheme.lower()
    if not separator or spelling not in SCHEMES:
        raise ValueError(
            f"Only local paths (file:///...) and S3 (s3://bucket/prefix) are supported, not "
            f"{(scheme + '://') if separator else repr(uri)}."
        )
    parts = urlsplit(uri)
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise ValueError("A source URI takes no query string or fragment (no options in URIs).")
    if "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError("A source URI carries no user, password or port.")
    if SCHEMES[spelling] == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("A file URI names no host: file:///absolute/path.")
        path = unquote(parts.path)
        if "\x00" in path or not path.startswith("/"):
            raise ValueError("A file URI needs an absolute path: file:///absolute/path.")
        return StoragePath("file", _normalize_local(path), spelling)
    bucket = parts.netloc
    if not S3_BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name.")
    segments = [segment for segment in parts.path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError("An S3 key takes no '.' or '..' segment.")
    return StoragePath("s3", "/".join([bucket, *segments]), spelling)


def _normalize_local(path: str) -> str:
    # normpath keeps a leading "//" (POSIX allows it a meaning); nothing here needs it.
    return posixpath.normpath(re.sub(r"/+", "/", path))


def _resolved(storage: StoragePath) -> StoragePath:
    """Local paths with every symlink resolved: containment is decided on real paths."""
    if storage.scheme != "file":
        return storage
    return StoragePath("file", os.path.realpath(storage.path), storage.spelling)


def location_prefix(uri: str) -> str:
    """The prefix a location at `uri` is stored under (normalized, local symlinks resolved).

    Raises:
        ValueError: see `parse_storage_uri`.
    """
    return _resolved(parse_storage_uri(uri)).prefix


def _inside(inner: StoragePath, outer: StoragePath) -> bool:
    return inner.prefix.startswith(outer.prefix)


def _overlap(first: StoragePath, second: StoragePath) -> bool:
    return _inside(first, second) or _inside(second, first)


# --- granting --------------------------------------------------------------------------


def product_paths() -> list[tuple[str, StoragePath]]:
    """The product's own storage, which no location may overlap: the data dir, the state
    database, the Iceberg catalog and the warehouse."""
    found: list[tuple[str, StoragePath]] = [("the data directory", _local(settings.DATA_DIR))]
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and database.get("NAME"):
        found.append(("the database", _local(database["NAME"])))
    catalog = settings.AUTOLOADER_CATALOG_URI
    if catalog.startswith("sqlite:///"):
        found.append(("the Iceberg catalog", _local(catalog.removeprefix("sqlite:///"))))
    # A warehouse on another store (gs://...) cannot overlap a file or s3 location.
    with contextlib.suppress(ValueError):
        found.append(("the warehouse", parse_storage_uri(settings.AUTOLOADER_WAREHOUSE)))
    return [(label, _resolved(path)) for label, path in found]


def _local(path) -> StoragePath:
    return StoragePath("file", _normalize_local(os.path.abspath(str(path))), "")


def location_grant(
    *,
    tenant: Tenant,
    uri: str,
    name: str = "",
    s3_endpoint_url: str = "",
    s3_region: str = "",
    s3_access_key_id: str = "",
    s3_secret_access_key: str = "",
    actor=None,
) -> StorageLocation:
    """Grant `tenant` the storage under `uri`.

    Local prefixes are stored with symlinks resolved. S3 keys are optional (without them the
    AUTOLOADER_S3_* / AWS_* settings are used); the secret is stored encrypted.

    Raises:
        ValidationError: a URI that is not file or s3, a location that overlaps another
            location (any tenant's) or the product's own files, or half a key pair.
    """
    from . import audit
    from .secrets import encrypt_secret

    try:
        storage = _resolved(parse_storage_uri(uri))
    except ValueError as exc:
        raise ValidationError({"uri": [str(exc)]}) from None
    if storage.scheme == "file" and storage.path == "/":
        raise ValidationError({"uri": ["The whole filesystem cannot be a location."]})
    if storage.scheme != "s3" and (s3_endpoint_url or s3_region or s3_access_key_id):
        raise ValidationError({"uri": ["S3 settings only apply to an s3:// location."]})
    if bool(s3_access_key_id) != bool(s3_secret_access_key):
        raise ValidationError(
            {"s3_access_key_id": ["Give both the access key id and the secret, or neither."]}
        )
    if s3_endpoint_url and not re.fullmatch(r"https?://[^\s/?#@]+/?", s3_endpoint_url):
        raise ValidationError({"s3_endpoint_url": ["Use http(s)://host[:port]."]})
    for label, own in product_paths():
        if _overlap(storage, own):
            raise ValidationError({"uri": [f"{storage.prefix} overlaps {label} of the product."]})
    with transaction.atomic():
        # Serializes grants (the tenant row lock; SQLite's write lock), so two overlapping
        # grants cannot both pass the check below.
        list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk"))
        for other in StorageLocation.objects.select_related("tenant"):
            if _overlap(storage, parse_storage_uri(other.uri)):
                raise ValidationError(
                    {
                        "uri": [
                            f"{storage.prefix} overlaps the location {other.uri} of {other.tenant}."
                        ]
                    }
                )
        location = StorageLocation.objects.create(
            tenant=tenant,
            uri=storage.prefix,
            name=name,
            s3_endpoint_url=s3_endpoint_url.rstrip("/"),
            s3_region=s3_region,
            s3_access_key_id=s3_access_key_id,
            s3_secret_access_key_encrypted=encrypt_secret(s3_secret_access_key),
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit.record_change(
            actor=actor,
            obj=location,
            tenant=tenant,
            action="location_granted",
            changes={"uri": [None, location.uri]},
        )
    return location


def location_revoke(*, location: StorageLocation, actor=None) -> None:
    """Take a location back: sources inside it stop loading (SOURCE_NOT_ALLOWED) at once."""
    from . import audit

    with transaction.atomic():
        audit.record_change(
            actor=actor,
            obj=location,
            tenant=location.tenant,
            action="location_revoked",
            changes={"uri": [location.uri, None]},
        )
        location.delete()


def location_list(*, tenant: Tenant):
    """The tenant's locations, by URI."""
    return StorageLocation.objects.filter(tenant=tenant).order_by("uri")


# --- checking and opening sources ------------------------------------------------------


class OutsideLocationError(PermissionError):
    """What was opened is not a regular file inside the location (a link swapped in, a FIFO).

    Its message is the reason, worded to follow "Cannot read <file>: "."""


# The kernel's name for an open file: opening it again reaches the same file, whatever
# happened to its path since. Linux has it; elsewhere reads go through Python's file object.
_PROC_FD = "/proc/self/fd"


class ConfinedLocalFileSystem:
    """The local filesystem of one location, for reading source files only.

    A path is a name, and a name can change between a check and an open: a tenant who swaps
    `a.csv` for a symlink to another tenant's file after `realpath` said "inside" would get
    that file read. So nothing is checked before opening: the file is opened first, then
    what was opened (the descriptor's own path, from the kernel, and its type) is checked,
    and every byte is read from that descriptor. A swap after the open changes nothing; a
    swap before it is caught by the check. Links inside the location still work.
    """

    def __init__(self, boundary: str):
        self.boundary = boundary.rstrip("/") + "/"
        self._local = pafs.LocalFileSystem()

    @contextlib.contextmanager
    def _opened(self, path: str) -> Iterator[int]:
        # O_NONBLOCK: a FIFO planted in the folder must not hang the open (it is refused
        # below); it changes nothing for a regular file.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OutsideLocationError("it is not a regular file")
            if not opened_path(fd).startswith(self.boundary):
                raise OutsideLocationError("it resolves outside the storage location")
            yield fd
        finally:
            os.close(fd)

    def pin(self, path: str) -> tuple[int, int]:
        """Open and check `path`; returns its (device, inode) to compare after a read that
        another program makes by path (the spark engine)."""
        with self._opened(path) as fd:
            info = os.fstat(fd)
            return info.st_dev, info.st_ino

    def open_input_stream(self, path: str, compression: str | None = "detect") -> pa.NativeFile:
        if compression == "detect":
            compression = _codec_by_extension(path)
        with self._opened(path) as fd:
            if os.path.isdir(_PROC_FD):
                return self._local.open_input_stream(f"{_PROC_FD}/{fd}", compression=compression)
            stream = pa.PythonFile(os.fdopen(os.dup(fd), "rb"), mode="r")
            return pa.CompressedInputStream(stream, compression) if compression else stream

    def open_input_file(self, path: str) -> pa.NativeFile:
        with self._opened(path) as fd:
            if os.path.isdir(_PROC_FD):
                return self._local.open_input_file(f"{_PROC_FD}/{fd}")
            return pa.PythonFile(os.fdopen(os.dup(fd), "rb"), mode="r")


def opened_path(fd: int) -> str:
    """The real path of an open file, as the kernel knows it (links resolved)."""
    if os.path.isdir(_PROC_FD):
        return os.readlink(f"{_PROC_FD}/{fd}")
    # No /proc (not Linux): F_GETPATH where the platform has it (macOS), else refuse.
    getpath = getattr(fcntl, "F_GETPATH", None)
    if getpath is None:
        raise OutsideLocationError("cannot tell where an open file lies on this platform")
    return fcntl.fcntl(fd, getpath, b"\0" * 1024).rstrip(b"\0").decode()


def _codec_by_extension(path: str) -> str | None:
    """pyarrow's own choice of decompression by file extension (data.csv.gz → gzip)."""
    try:
        return pa.Codec.detect(path).name
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class SourceHandle:
    """A source checked against its tenant's locations, with the filesystem to read it.

    Only `source_open` makes one: listing and reading take a handle, never a URI, so no
    code path can open a user's string unchecked.
    """

    uri: str
    location: StorageLocation
    filesystem: pafs.FileSystem | ConfinedLocalFileSystem
    root: str  # path inside `filesystem`: a real local path, or "bucket/key"
    local_boundary: str | None  # a local location's real path: nothing outside it is read

    @property
    def s3_client(self):
        """The location's S3 API client (an S3 source only): listing takes the handle, so
        the client is always the one of the location the source was checked against."""
        return location_s3_client(self.location)

    def full_path(self, relative_path: str) -> str:
        return f"{self.root.rstrip('/')}/{relative_path}"

    def is_readable(self, full_path: str) -> bool:
        """Whether a local file resolves inside the location (a symlink may point out).

        For listing only: the answer can change the next instant. Reads are confined by
        `ConfinedLocalFileSystem`, which checks what it opened."""
        if self.local_boundary is None:
            return True
        try:
            real = os.path.realpath(full_path)
        except OSError:  # a link swapped for a file mid-resolution (EINVAL): not now
            return False
        return real.startswith(self.local_boundary.rstrip("/") + "/")


def source_resolve(*, tenant: Tenant, uri: str) -> tuple[str, StorageLocation]:
    """Normalize `uri` and find the tenant's location holding it.

    Returns:
        The normalized URI (to store) and its location.

    Raises:
        SourceNotAllowedError: not a file/s3 URI, or outside every location of the tenant
            (after resolving "..", "//" and local symlinks).
    """
    try:
        storage = parse_storage_uri(uri)
    except ValueError as exc:
        raise _not_allowed(tenant, str(exc)) from None
    real = _resolved(storage)
    for location in location_list(tenant=tenant):
        if _inside(real, parse_storage_uri(location.uri)):
            return storage.as_uri(), location
    raise _not_allowed(tenant, f"{storage.as_uri()} is outside your tenant's storage locations.")


def location_folder(*, location: StorageLocation, path: str) -> str:
    """`path`, an absolute path or URI inside `location`, as the folder relative to it
    ("sales/daily"; "" for the location itself): what a form that asks for the folder
    inside a chosen location makes of a full path pasted into it.

    Decided like `source_resolve`, on the real path: ".." and "//" are collapsed and local
    symlinks resolved first, so a path that only looks inside (a link out, a "..") is
    refused; the folder returned is the real one.

    Raises:
        ValueError: not a file/s3 path or URI, or not inside `location`.
    """
    storage = _resolved(parse_storage_uri(path))
    boundary = parse_storage_uri(location.uri)
    if not _inside(storage, boundary):
        raise ValueError(f"{storage.as_uri()} is not inside the location {location.uri}.")
    return storage.prefix[len(boundary.prefix) :].rstrip("/")


def _not_allowed(tenant: Tenant, reason: str) -> SourceNotAllowedError:
    allowed = list(location_list(tenant=tenant).values_list("uri", flat=True))
    return SourceNotAllowedError(reason, allowed_locations=allowed)


def source_open(*, tenant: Tenant, uri: str) -> SourceHandle:
    """Check `uri` against the tenant's locations and open it with its location's filesystem.

    Raises:
        SourceNotAllowedError: see `source_resolve`.
    """
    normalized, location = source_resolve(tenant=tenant, uri=uri)
    storage = parse_storage_uri(normalized)
    if storage.scheme == "file":
        boundary = parse_storage_uri(location.uri).path
        return SourceHandle(
            uri=normalized,
            location=location,
            filesystem=ConfinedLocalFileSystem(boundary),
            root=os.path.realpath(storage.path),
            local_boundary=boundary,
        )
    return SourceHandle(
        uri=normalized,
        location=location,
        filesystem=location_filesystem(location),
        root=storage.path,
        local_boundary=None,
    )


def location_filesystem(location: StorageLocation) -> pafs.FileSystem:
    """The S3 client of one location: its own endpoint and keys, else the S3 settings."""
    return s3_filesystem(**_location_s3_config(location))


def location_s3_client(location: StorageLocation):
    """The location's S3 API client (boto3), with the same endpoint and keys as its
    filesystem: for the listing, which needs what pyarrow's listing drops (each ETag)."""
    return s3_client(**_location_s3_config(location))


def _location_s3_config(location: StorageLocation) -> dict[str, str]:
    from .secrets import decrypt_secret

    if location.s3_access_key_id:
        access_key = location.s3_access_key_id
        secret_key = decrypt_secret(location.s3_secret_access_key_encrypted)
    else:
        access_key = settings.AUTOLOADER_S3_ACCESS_KEY_ID
        secret_key = settings.AUTOLOADER_S3_SECRET_ACCESS_KEY
    return {
        "endpoint_url": location.s3_endpoint_url or settings.AUTOLOADER_S3_ENDPOINT_URL,
        "region": location.s3_region or settings.AUTOLOADER_S3_REGION,
        "access_key": access_key,
        "secret_key": secret_key,
    }


@functools.lru_cache(maxsize=64)
def s3_client(*, endpoint_url: str, region: str, access_key: str, secret_key: str):
    """One boto3 S3 client per configuration and process, configured as `s3_filesystem`
    is: the same endpoint (path-style addressing under an endpoint, as pyarrow), region,
    keys and timeouts; AWS_ENDPOINT_URL is ignored as pyarrow ignores it.

    Timestamps come back as the store's text: botocore's own parsing of a date per object
    cost more than the rest of a page (`ingestions.sources.discovery` parses them).
    """
    import boto3
    import botocore.session
    from botocore.config import Config

    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    if endpoint_url and "://" not in endpoint_url:
        endpoint_url = f"https://{endpoint_url}"  # pyarrow's default scheme
    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
        read_timeout=S3_REQUEST_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        ignore_configured_endpoint_urls=True,
    )
    keys = (
        {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        if access_key and secret_key
        else {}  # the SDK's own chain (environment, profile, instance role), as pyarrow
    )
    return boto3.session.Session(botocore_session=core).client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config, **keys
    )


@functools.lru_cache(maxsize=64)
def s3_filesystem(
    *, endpoint_url: str, region: str, access_key: str, secret_key: str
) -> pafs.S3FileSystem:
    """One S3 client per configuration and process (building one sets up the SDK's pools).

    Everything is passed explicitly: pyarrow's S3FileSystem ignores AWS_ENDPOINT_URL.
    """
    options: dict = {
        "connect_timeout": S3_CONNECT_TIMEOUT_SECONDS,
        "request_timeout": S3_REQUEST_TIMEOUT_SECONDS,
    }
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


def warehouse_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of the product's own warehouse (a setting, never user input).

    Raises:
        ValueError: the warehouse is neither a local path nor S3.
    """
    storage = parse_storage_uri(uri)
    if storage.scheme == "file":
        return pafs.LocalFileSystem(), storage.path
    return (
        s3_filesystem(
            endpoint_url=settings.AUTOLOADER_S3_ENDPOINT_URL,
            region=settings.AUTOLOADER_S3_REGION,
            access_key=settings.AUTOLOADER_S3_ACCESS_KEY_ID,
            secret_key=settings.AUTOLOADER_S3_SECRET_ACCESS_KEY,
        ),
        storage.path,
    )
