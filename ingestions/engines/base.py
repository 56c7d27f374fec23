"""The table engine interface: what the autoloader needs from whatever writes its Iceberg tables."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover - types only
    from collections.abc import Callable, Mapping

    from ingestions.errors import FileReadError
    from ingestions.locations import SourceHandle

    from .writing import DataWriter, WrittenData

TABLE_NAME_PART = re.compile(r"[a-z_][a-z0-9_]*")
MAX_TABLE_NAME_PART_LENGTH = 64
# Physical names carry the tenant's prefix ("acme__raw.orders"): engines accept longer parts
# than users may type.
MAX_PHYSICAL_NAME_PART_LENGTH = 128


# An absolute filesystem path, or a URI with a path (file://, s3://, sqlite:////...): what an
# engine's or a catalog's error quotes of the warehouse, its manifests or the catalog file.
SERVER_PATH = re.compile(
    r"(?<![\w/.])(?:[a-z][a-z0-9+.-]*://+[^\s'\",;)]*|/+(?:[^\s/'\"]+/)+[^\s/'\",;)]*)"
)


def redact_server_paths(text: str) -> str:
    """`text` with every server path replaced by "<path>": an engine's error reaches API
    clients and operation records, and where the warehouse and its files live is not theirs
    to know."""
    return SERVER_PATH.sub("<path>", text)


def validate_table_name(name: str, *, max_part_length: int = MAX_PHYSICAL_NAME_PART_LENGTH) -> str:
    """Return `name` when it is a valid "namespace.table" name.

    Raises:
        ValueError: Not exactly two dot-separated parts, or a part that is not lowercase
            letters, digits and underscores (not starting with a digit), up to 64 characters.
    """
    parts = name.split(".")
    if len(parts) != 2:
        raise ValueError(f"Table name {name!r} must be 'namespace.table', e.g. 'sales.orders'.")
    for part in parts:
        if len(part) > max_part_length or not TABLE_NAME_PART.fullmatch(part):
            raise ValueError(
                f"Table name {name!r}: {part!r} must be 1 to {max_part_length} "
                "lowercase letters, digits or underscores, not starting with a digit."
            )
    return name


def table_location(warehouse: str, table_name: str) -> str | None:
    """Where a table's files live: a tenant's tables under the warehouse's "<prefix>/" folder.

    "acme__raw.orders" is written to "<warehouse>/acme/raw/orders"; names without a tenant
    prefix (tables made before tenants had one) keep the catalog's default (None).
    """
    namespace, table = table_name.split(".")
    tenant_prefix, separator, tenant_namespace = namespace.partition("__")
    if not separator:
        return None
    return f"{warehouse.rstrip('/')}/{tenant_prefix}/{tenant_namespace}/{table}"


@dataclass(frozen=True)
class TableInfo:
    """A table's size and state, as its current snapshot summary records them."""

    table_name: str
    exists: bool
    row_count: int
    size_bytes: int
    file_count: int
    snapshot_id: int | None
    last_updated_at: datetime | None  # tz-aware UTC

    @classmethod
    def missing(cls, table_name: str) -> TableInfo:
        return cls(
            table_name=table_name,
            exists=False,
            row_count=0,
            size_bytes=0,
            file_count=0,
            snapshot_id=None,
            last_updated_at=None,
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """One committed snapshot and its full summary, custom properties included."""

    snapshot_id: int
    committed_at: datetime  # tz-aware UTC
    properties: dict[str, str]


@dataclass(frozen=True)
class TableRef:
    """A branch or tag of a table other than main: a staged version being built, or a
    version kept for undo."""

    name: str
    kind: str  # "branch" or "tag"
    snapshot_id: int


@dataclass(frozen=True)
class Lineage:
    """What readers of a table saw: main's snapshots, oldest first (ancestors of main's
    current snapshot that were main's current at some time; a staged version's own
    commits were never seen, only the one it was published as), and the other refs."""

    main: list[int]
    refs: list[TableRef]


@dataclass(frozen=True)
class Stage:
    """Where a new version of a table is built beside the live one, until it is published.

    On a table with history the new version is a branch of the same table (`branch`),
    started empty; on a missing (or never written) table it is a table of its own
    (`write_to`), renamed into place. Either way readers of `table_name` see the old rows
    until `Engine.stage_publish`, then the new ones.
    """

    table_name: str  # the live table
    write_to: str  # the table the run appends to
    branch: str | None  # the branch of `write_to` the run appends to; None: main
    base: int | None  # the live table's snapshot the new version replaces


@dataclass
class FileBatch:
    """A batch of source files read by an engine that reads them itself (`reads_files`).

    Read and counted by `Engine.read_files` before the batch's commit is recorded (the
    exactly-once protocol records each file's rows first), written by `append_files`.
    """

    rows: dict[str, int]  # relative path -> rows, for each file that loads
    failures: dict[str, FileReadError]  # relative path -> why it does not load
    handle: object = None  # the engine's own: what `append_files` writes
    # When the engine wrote the rows while reading them (unpublished until `append_files`):
    # the `_ingested_at` they carry, which the batch's record must name.
    ingested_at: datetime | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class MaintenanceResult:
    """What one maintenance action did to a table (zeros: nothing was due)."""

    snapshots_expired: int = 0
    files_removed: int = 0  # data, manifest and metadata files deleted
    files_compacted: int = 0  # small data files rewritten into fewer
    files_written: int = 0  # the files that replaced them
    bytes_freed: int = 0
    snapshot_id: int | None = None  # the commit that made the change, if it made one


class Tables(ABC):
    """What every engine does: read, write and describe the autoloader's Iceberg tables.

    Table names are "namespace.table" (see `validate_table_name`); every method raises
    ValueError for an invalid one and EngineUnavailableError when the catalog or cluster
    cannot be reached.
    """

    name: str

    @abstractmethod
    def ping(self) -> None:
        """Check that the catalog (or cluster) answers.

        Raises:
            EngineUnavailableError: It cannot be reached.
        """

    @abstractmethod
    def table_exists(self, table_name: str) -> bool:
        """Return whether the table exists in the catalog.

        Args:
            table_name: "namespace.table".
        """

    @abstractmethod
    def describe_table(self, table_name: str) -> TableInfo:
        """Describe the table from its current snapshot summary, without scanning data.

        Args:
            table_name: "namespace.table".

        Returns:
            The table's rows, bytes and data files; `exists=False` with zeros when missing.
        """

    @abstractmethod
    def table_schema(self, table_name: str) -> pa.Schema | None:
        """Return the table's current schema as Arrow, or None when the table is missing.

        Args:
            table_name: "namespace.table".
        """

    @abstractmethod
    def drop_table(self, table_name: str) -> bool:
        """Drop the table and delete its data and metadata files; idempotent.

        Args:
            table_name: "namespace.table".

        Returns:
            Whether the table existed.

        Raises:
            EngineError: The engine refused or failed the drop.
        """

    def open_writer(self, table_name: str, *, branch: str | None = None) -> DataWriter | None:
        """A writer of the next batch's rows as data files of `table_name` (created from the
        first part's schema when missing), committed by `append`; None when the engine has
        none, or not for this table: then the batch is appended whole, as one `pa.Table`."""
        return None

    @abstractmethod
    def append(
        self,
        table_name: str,
        data: pa.Table | WrittenData,
        *,
        properties: dict[str, str],
        branch: str | None = None,
        replacing: list[str] | None = None,
    ) -> int:
        """Append `data` as one snapshot whose summary carries `properties`.

        The namespace and table are created from `data`'s schema on the first append. New
        columns in `data` are added to the table, and columns Iceberg can widen (int to
        long, float to double) are widened, in the same commit.

        Args:
            table_name: "namespace.table".
            data: Rows with Iceberg-writable types (see `sources.readers`); may be empty,
                which still commits a snapshot. Or the data files of this table that the
                engine's `DataWriter` wrote: they are committed as they are.
            properties: Custom snapshot summary properties, e.g. the run and batch ids.
            branch: Commit to this branch instead of main (a staged version, see `Stage`).
            replacing: Source files (`_source_file` values) whose rows the same commit
                removes: a changed file reloaded, a file loaded again after a history
                clear. A reader sees the old rows or the new, never neither or both.

        Returns:
            The id of the committed snapshot.

        Raises:
            SchemaMismatchError: The data's types cannot be merged into the table's schema.
            EngineError: The engine refused or failed the write; nothing was committed.
        """

    @abstractmethod
    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        """List the table's snapshots, oldest first; [] when the table is missing.

        Args:
            table_name: "namespace.table".
        """

    def table_lineage(self, table_name: str) -> Lineage | None:
        """Main's history and the table's other branches and tags; None when the engine
        cannot tell (callers then show every snapshot) or the table is missing."""
        return None

    def sample_rows(self, table_name: str, *, limit: int) -> pa.Table | None:
        """Up to `limit` rows of the table's current snapshot (whichever come first), for
        a person to look at; None when the table is missing.

        Raises:
            EngineError: the engine cannot read the table.
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot show a table's rows.")

    def source_file_rows(
        self, table_name: str, *, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, int]:
        """Count the table's rows per `_source_file` (the lineage column every load writes).

        Lets a new ingestion adopt a table: the files its rows came from are recorded as
        processed, so none is loaded twice; and a verification compare them with the history.

        Args:
            table_name: "namespace.table".
            progress: Called as `progress(done, total)` as the scan goes, in data files
                (or 1 unit where the engine cannot tell): a verification's progress bar.

        Returns:
            {relative path: rows}; {} when the table is missing or has no lineage column.

        Raises:
            EngineError: the engine cannot read the table.
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot adopt an existing table.")

    def remove_source_files(
        self, table_name: str, paths: list[str], *, properties: dict[str, str]
    ) -> None:
        """Remove the rows of these source files (`_source_file`) in one commit; nothing when
        the table is missing or holds none of them."""
        schema = self.table_schema(table_name)
        if schema is None or "_source_file" not in schema.names or not paths:
            return
        self.append(table_name, schema.empty_table(), properties=properties, replacing=paths)

    def holds_rows_ingested_at(
        self, table_name: str, ingested_at: datetime, *, branch: str | None = None
    ) -> bool:
        """Whether the table's main (or `branch`) holds rows whose `_ingested_at` is exactly
        `ingested_at`: the mark of one batch's commit in the rows themselves, for recovery
        after the batch's snapshot was expired. False where an engine cannot tell."""
        return False

    def find_snapshot(self, table_name: str, *, key: str, value: str) -> SnapshotInfo | None:
        """Find the newest snapshot whose summary has `key` set to `value`.

        Lets a retried batch learn that its earlier attempt already committed.

        Args:
            table_name: "namespace.table".
            key: Summary property name.
            value: Expected value.

        Returns:
            The snapshot, or None when no snapshot (or no table) matches.
        """
        for snapshot in reversed(self.list_snapshots(table_name)):
            if snapshot.properties.get(key) == value:
                return snapshot
        return None

    def cancel(self) -> None:
        """Interrupt the work this engine has in flight, from any thread; a no-op by default.

        The run executor calls it when a user cancels a running run, so an engine whose
        commits can take long (a Spark job on a cluster) stops them instead of finishing
        them. An interrupted `append` raises; as after any failed append, the run then reads
        the table's snapshots to learn whether the commit happened.
        """
        return  # an optional hook: engines that cannot interrupt their work need nothing


class Staging:
    """Zero-downtime refreshes: build a new version beside the live table, publish it in one
    step. Engines that cannot stage refuse (the caller then refreshes the old way)."""

    # Whether `stage_begin` / `stage_publish` work: zero-downtime refreshes need them.
    can_stage: bool = False

    def stage_begin(
        self, table_name: str, *, name: str, replacing: list[str] | None = None
    ) -> Stage:
        """Start building a new, empty version of the table beside the live one.

        Callers record the returned stage before writing to it, and reuse that record when
        they resume; a stage of the same name left by an attempt that died before recording
        it is started again from scratch.

        Args:
            table_name: "namespace.table" (the live table).
            name: Lowercase letters, digits and "_": the branch or staging table suffix.
            replacing: Start from the live rows instead, less those whose `_source_file` is
                one of these paths (a selective refresh). The table must have a version.

        Raises:
            EngineError: the engine cannot stage (the caller then refreshes the old way).
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot stage a new version of a table.")

    def stage_publish(self, stage: Stage) -> int | None:
        """Make the staged version the live table, atomically; idempotent.

        Returns:
            The live table's new current snapshot id.

        Raises:
            EngineError: the live table changed since the stage began (nothing published).
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot publish a staged version.")

    def stage_discard(self, stage: Stage) -> None:
        """Throw the staged version away; the live table is untouched; idempotent."""
        return  # nothing was staged by an engine that cannot stage


class RestorePoints:
    """Undo: what an operation keeps so that it can be undone.

    A restore point is a JSON-able dict with a "kind": "snapshot" (the table's current
    snapshot, held by a tag), "retired" (the whole table, renamed aside instead of dropped)
    or "absent" (there was no table); plus "row_count" and "size_bytes".
    """

    # Whether `retain` / `retire` / `restore` / `release` work: undo needs them.
    can_retain: bool = False

    def retain(self, table_name: str, *, name: str) -> dict:
        """Hold the table's current version so that `restore` can bring it back.

        Args:
            table_name: "namespace.table".
            name: Lowercase letters, digits and "_": the tag holding the version.

        Raises:
            EngineError: the engine cannot keep restore points.
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot keep a table version for undo.")

    def retire(self, table_name: str, *, name: str) -> dict:
        """Take the table out of the way instead of dropping it: readers see no table, and
        `restore` can put it back; idempotent.

        Raises:
            EngineError: the engine cannot keep restore points.
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot keep a dropped table for undo.")

    def restore(self, table_name: str, point: dict) -> None:
        """Make the table what `point` recorded, whatever was written since; idempotent.

        Raises:
            EngineError: the point can no longer be restored (e.g. its table was purged).
        """
        from ingestions.errors import EngineError

        raise EngineError(f"The {self.name} engine cannot restore a table version.")

    def release(self, table_name: str, point: dict, *, expire_before: datetime | None) -> int:
        """Let go of what `point` holds; idempotent.

        Args:
            expire_before: Also expire the table's snapshots committed before this time
                (unless another tag or branch holds them) and delete the files only they
                referenced. None: only the point itself is released.

        Returns:
            The bytes of data files deleted.
        """
        return 0


class FileReading:
    """Engines that read the source files themselves: a cluster's executors, not the worker
    process, then read the bytes."""

    # Whether the engine reads the source files itself (`read_files` / `append_files`).
    reads_files: bool = False

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
        """Read and count the files at `paths` (relative to the checked `source`), where the
        engine runs; only engines with `reads_files` implement it. `sizes`: the listing's
        size of each, where known (what an engine may sample to infer types). `table_name`:
        the table the batch goes to, where the engine may write the rows already, unseen
        by its readers until `append_files` (then the batch's `ingested_at` is set).

        A file that cannot be read, or has a malformed row, fails alone: it is in
        `failures`, the others in `rows`. Call `release_files` when done with the batch.

        Raises:
            EngineError: the engine could not read any of them for a reason of its own.
        """
        raise NotImplementedError(f"The {self.name} engine does not read source files.")

    def append_files(
        self,
        table_name: str,
        batch: FileBatch,
        *,
        properties: dict[str, str],
        ingested_at: datetime,
        branch: str | None = None,
        replacing: list[str] | None = None,
    ) -> int:
        """Append the rows of the batch's loading files, with the lineage columns
        `_source_file` (the relative path) and `_ingested_at`, as one snapshot; the same
        contract as `append` otherwise (`replacing` included)."""
        raise NotImplementedError(f"The {self.name} engine does not read source files.")

    def release_files(self, batch: FileBatch) -> None:
        """Free what the engine keeps of a batch read by `read_files`."""
        return  # an optional hook: engines that keep nothing need nothing


class Maintenance:
    """What keeps a table's cost flat as it ages. Engines that cannot maintain their tables do
    nothing: the defaults report no change."""

    # Whether `expire_snapshots` / `compact_files` / `remove_orphan_files` do anything.
    can_maintain: bool = False

    def expire_snapshots(
        self, table_name: str, *, before: datetime, keep_last: int
    ) -> MaintenanceResult:
        """Expire the snapshots committed before `before`, then delete the files only they
        referenced.

        Never expires the head of a tag or branch (undo windows, staged versions) nor one of
        the `keep_last` newest snapshots. Callers pass a `before` that spares what the
        exactly-once recovery may still look up.

        Args:
            table_name: "namespace.table".
            before: Expire only snapshots committed earlier (tz-aware UTC).
            keep_last: Keep at least this many of the newest snapshots, however old.

        Raises:
            EngineError: the expiry failed (e.g. a concurrent commit); nothing was expired.
        """
        return MaintenanceResult()

    def compact_files(
        self,
        table_name: str,
        *,
        small_file_bytes: int,
        min_files: int,
        max_bytes: int,
        properties: dict[str, str],
    ) -> MaintenanceResult:
        """Rewrite the current snapshot's small data files into fewer, in one commit.

        Every row, the lineage column included, is kept exactly. The commit is optimistic: a
        write to the table since the files were read makes it fail, never lose that write.

        Args:
            table_name: "namespace.table".
            small_file_bytes: Files smaller than this are candidates.
            min_files: Do nothing unless at least this many candidates exist.
            max_bytes: Rewrite at most this many bytes of candidates in one commit.
            properties: Snapshot summary properties of the rewrite's commit.

        Raises:
            EngineError: the rewrite failed or lost the race to a concurrent commit.
        """
        return MaintenanceResult()

    def remove_orphan_files(self, table_name: str, *, older_than: datetime) -> MaintenanceResult:
        """Delete files under the table's location that no metadata references.

        Args:
            table_name: "namespace.table".
            older_than: Spare files modified at or after this time (a write in flight).

        Raises:
            EngineError: the table's files could not be listed.
        """
        return MaintenanceResult()


class Engine(Tables, Staging, RestorePoints, FileReading, Maintenance):
    """Reads and writes the autoloader's Iceberg tables: the interfaces a backend implements
    (`Tables` always; `Staging`, `RestorePoints`, `FileReading`, `Maintenance` where its
    `can_*` / `reads_files` flag says so). One class per backend (`iceberg`, `spark`)."""
