"""The table engine interface: what the autoloader needs from whatever writes its Iceberg tables."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

TABLE_NAME_PART = re.compile(r"[a-z_][a-z0-9_]*")
MAX_TABLE_NAME_PART_LENGTH = 64


def validate_table_name(name: str) -> str:
    """Return `name` when it is a valid "namespace.table" name.

    Raises:
        ValueError: Not exactly two dot-separated parts, or a part that is not lowercase
            letters, digits and underscores (not starting with a digit), up to 64 characters.
    """
    parts = name.split(".")
    if len(parts) != 2:
        raise ValueError(f"Table name {name!r} must be 'namespace.table', e.g. 'sales.orders'.")
    for part in parts:
        if len(part) > MAX_TABLE_NAME_PART_LENGTH or not TABLE_NAME_PART.fullmatch(part):
            raise ValueError(
                f"Table name {name!r}: {part!r} must be 1 to {MAX_TABLE_NAME_PART_LENGTH} "
                "lowercase letters, digits or underscores, not starting with a digit."
            )
    return name


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


class Engine(ABC):
    """Reads and writes the autoloader's Iceberg tables.

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

    @abstractmethod
    def append(self, table_name: str, data: pa.Table, *, properties: dict[str, str]) -> int:
        """Append `data` as one snapshot whose summary carries `properties`.

        The namespace and table are created from `data`'s schema on the first append. New
        columns in `data` are added to the table, and columns Iceberg can widen (int to
        long, float to double) are widened, in the same commit.

        Args:
            table_name: "namespace.table".
            data: Rows with Iceberg-writable types (see `sources.readers`); may be empty,
                which still commits a snapshot.
            properties: Custom snapshot summary properties, e.g. the run and batch ids.

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
