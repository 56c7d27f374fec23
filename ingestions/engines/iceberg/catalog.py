"""pyiceberg's SQL catalog, opened once per process, and what its failures mean."""

from __future__ import annotations

import operator
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime

import pyarrow as pa
import sqlalchemy.exc
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog import Identifier
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException
from pyiceberg.serializers import Compressor
from pyiceberg.table import (
    CommitTableResponse,
    StagedTable,
    Table,
    TableMetadata,
    TableRequirement,
    TableUpdate,
    Transaction,
)
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import (
    SetPropertiesUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.utils.config import Config
from pyiceberg.utils.datetime import datetime_to_millis

from ingestions.engines.base import (
    redact_server_paths,
)

# Building a catalog opens a connection pool and checks the catalog tables: do it once per
# process. The pid is in the key because a forked child must not share its parent's pool.
_catalogs: dict[tuple, SqlCatalog] = {}
_catalogs_lock = threading.Lock()

CATALOG_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
ENGINE_FAILURES = (
    sqlalchemy.exc.SQLAlchemyError,
    iceberg_errors.CommitFailedException,
    iceberg_errors.NoSuchNamespaceError,
    iceberg_errors.NoSuchTableError,
    iceberg_errors.NamespaceAlreadyExistsError,
    iceberg_errors.TableAlreadyExistsError,
    iceberg_errors.NoSuchPropertyException,
    iceberg_errors.ValidationException,
    UnsupportedPyArrowTypeException,
    pa.ArrowException,
    OSError,
    # pyiceberg reports an incompatible schema or an unsupported type this way.
    ValueError,
    TypeError,
)


def metadata_updated(
    base: TableMetadata,
    updates: tuple[TableUpdate, ...],
    *,
    metadata_location: str | None = None,
) -> TableMetadata:
    """The table metadata `base` with `updates` applied: pyiceberg's `update_table_metadata`
    (0.12) without the deep copy it ends with.

    pyiceberg copies the whole result, every snapshot of the table included, so a commit
    costs more with each snapshot the table keeps (three copies per append, half of an
    append's time at 500 snapshots). The copy protects nothing: the metadata models are
    frozen and every update builds new lists and dicts instead of changing the old ones, so
    the result may share the snapshots it did not change with `base`. The steps are
    pyiceberg's own (`_apply_table_update` per update, then the metadata log and the update
    time); tests/ingestions/test_flat_commits.py checks that the result equals pyiceberg's
    for every kind of update the engine commits.
    """
    context = _TableMetadataUpdateContext()
    updated = base
    for update in updates:
        updated = _apply_table_update(update, updated, context)
    if context.has_changes():
        if metadata_location:
            updated = _update_table_metadata_log(updated, metadata_location, base.last_updated_ms)
        if base.last_updated_ms == updated.last_updated_ms:
            now_ms = datetime_to_millis(datetime.now().astimezone())
            updated = updated.model_copy(update={"last_updated_ms": now_ms})
    updated.spec().check_compatible(updated.schema())
    updated.sort_order().check_compatible(updated.schema())
    return updated


class MemoTransaction(Transaction):
    """A pyiceberg transaction that computes its pending metadata once per change.

    pyiceberg rebuilds and deep-copies the whole table metadata, every snapshot included, on
    each read of `Transaction.table_metadata`: about twenty times per append, so an append
    costs more the older the table. The metadata models are frozen and a read never changes
    them, so while neither the table's metadata nor the pending updates have changed, the
    metadata computed last is still exact and is returned again; and it is computed without
    the copy (`metadata_updated`).
    """

    _memo: tuple[object, object, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if self._memo is None or self._memo[0] is not base or self._memo[1] is not updates:
            self._memo = (base, updates, metadata_updated(base, updates))
        return self._memo[2]


class ParsedMetadata:
    """The table metadata files this process has parsed or written, by location (LRU).

    A metadata file is written once under a name no other file takes (its version and a
    UUID) and never changed, so the metadata parsed from a location is the file's for good.
    Parsing it is most of what loading a table costs, and it grows with every snapshot the
    table keeps (63 ms at 500): a run loads its table three times (its schema, the append,
    the commit's check), and the next run loads the version this one wrote.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[str, TableMetadata] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, location: str) -> TableMetadata | None:
        with self._lock:
            metadata = self._entries.get(location)
            if metadata is not None:
                self._entries.move_to_end(location)
            return metadata

    def put(self, location: str, metadata: TableMetadata) -> None:
        with self._lock:
            self._entries[location] = metadata
            self._entries.move_to_end(location)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class SnapshotJson:
    """The JSON of each snapshot, serialized once per process (LRU, by object).

    A commit writes the whole metadata file, every snapshot included, and pyiceberg
    serializes each snapshot's summary in Python: 9 ms at 1,000 snapshots. A snapshot never
    changes and, with nothing deep-copied, the next version of the table holds the very same
    snapshot objects, so each is serialized once. Entries keep their snapshot alive, so an
    id is never another object's.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[int, tuple[Snapshot, str]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, snapshot: Snapshot) -> str:
        key = id(snapshot)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is snapshot:
                self._entries.move_to_end(key)
                return entry[1]
        text = snapshot.model_dump_json()
        with self._lock:
            self._entries[key] = (snapshot, text)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return text


# A day of one-minute runs on a dozen tables (about 1 KB each).
snapshot_json = SnapshotJson(size=16_384)


class SnapshotsJson:
    """The `snapshots` array of a table's metadata file, extended rather than joined again.

    A commit adds a snapshot at the end of the list it was given (expiry removes some):
    the next version's list starts with the very objects of the one written before. So the
    text written for a list is kept (LRU, by the list's first snapshot) and a longer list
    that starts with exactly those objects — checked one by one, by identity — costs its
    new snapshots only: at 1,000 snapshots, one string copy instead of 1,000 lookups and a
    join. Any other list is joined whole. Entries keep their snapshots alive, so an id is
    never another object's.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[int, tuple[tuple[Snapshot, ...], str]] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, snapshots: list[Snapshot]) -> str:
        if not snapshots:
            return ""
        key = id(snapshots[0])
        with self._lock:
            entry = self._entries.get(key)
        text = None
        if entry is not None:
            known, known_text = entry
            count = len(known)
            if count <= len(snapshots) and all(map(operator.is_, snapshots[:count], known)):
                added = [snapshot_json.of(snapshot) for snapshot in snapshots[count:]]
                text = ",".join([known_text, *added])
        if text is None:
            text = ",".join(snapshot_json.of(snapshot) for snapshot in snapshots)
        with self._lock:
            self._entries[key] = (tuple(snapshots), text)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return text


# The tables a worker and the web process write in turn (the text is ~1 KB a snapshot).
snapshots_json = SnapshotsJson(size=32)


def metadata_json(metadata: TableMetadata) -> str | None:
    """The metadata file's JSON as pyiceberg writes it (v2, `model_dump_json`), with each
    snapshot's part from `snapshot_json`; None where pyiceberg writes something else (v1
    metadata, the legacy current-snapshot-id setting): let pyiceberg write it then."""
    if metadata.format_version < 2 or Config().get_bool("legacy-current-snapshot-id"):
        return None
    head = metadata.model_dump_json(exclude={"snapshots"})
    if not head.endswith("}") or head == "{}":
        return None
    snapshots = snapshots_json.of(metadata.snapshots)
    return f'{head[:-1]},"snapshots":[{snapshots}]}}'


# Table properties every commit through the catalog gives its table when it lacks them
# (a value the table has is kept): manifests merge on append, so the manifest list a commit
# reads and writes stays short (at most the min count) however many appends the table took.
FLAT_COMMIT_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "20",
}


# Versions of one table share every snapshot they have in common (nothing is copied), so
# a few versions of a table cost little more than one; 64 covers the tables a worker and
# the web process touch in turn.
parsed_metadata = ParsedMetadata(size=64)


class AutoloaderCatalog(SqlCatalog):
    """pyiceberg's SQL catalog, whose commit costs the same on a table's thousandth
    snapshot as on its first (issue 26). Two narrow overrides of pyiceberg 0.12, which has
    no switch for either:

    - a table's metadata is parsed once per metadata file (`parsed_metadata`), and the
      metadata a commit writes is remembered as it is written, so loading the table again
      costs one catalog query, not a JSON parse of every snapshot;
    - a commit applies its updates without deep-copying the table's metadata
      (`metadata_updated`);
    - a commit gives its table the `FLAT_COMMIT_PROPERTIES` it lacks, in the same commit
      (a table created before them merges manifests from its next append on);
    - the metadata file is written with each snapshot serialized once (`metadata_json`).

    Everything else (the catalog query, the optimistic concurrency check of the commit,
    the metadata file written) is pyiceberg's.
    """

    def _convert_orm_to_iceberg(self, orm_table: IcebergTables) -> Table:
        location = orm_table.metadata_location
        metadata = parsed_metadata.get(location) if location else None
        if metadata is None or not orm_table.table_namespace or not orm_table.table_name:
            table = super()._convert_orm_to_iceberg(orm_table)
            parsed_metadata.put(table.metadata_location, table.metadata)
            return table
        return Table(
            identifier=(
                *self.identifier_to_tuple(orm_table.table_namespace),
                orm_table.table_name,
            ),
            metadata=metadata,
            metadata_location=location,
            io=self._load_file_io(metadata.properties, location),
            catalog=self,
        )

    def _update_and_stage_table(
        self,
        current_table: Table | None,
        table_identifier: Identifier,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> StagedTable:
        if current_table is None:
            # A new table: pyiceberg validates the whole metadata, there is no history yet.
            return super()._update_and_stage_table(
                current_table, table_identifier, requirements, updates
            )
        # pyiceberg's own steps, but for the metadata's deep copy.
        for requirement in requirements:
            requirement.validate(current_table.metadata)
        updated = metadata_updated(
            current_table.metadata, updates, metadata_location=current_table.metadata_location
        )
        version = self._parse_metadata_version(current_table.metadata_location) + 1
        provider = load_location_provider(updated.location, updated.properties)
        location = provider.new_table_metadata_file_location(version)
        return StagedTable(
            identifier=table_identifier,
            metadata=updated,
            metadata_location=location,
            io=self._load_file_io(properties=updated.properties, location=location),
            catalog=self,
        )

    @staticmethod
    def _write_metadata(metadata: TableMetadata, io: FileIO, metadata_path: str) -> None:
        text = metadata_json(metadata)
        if text is None:
            SqlCatalog._write_metadata(metadata, io, metadata_path)
            return
        output = io.new_output(metadata_path)
        # pyiceberg's own steps: compressed when the file name says so, never overwritten.
        with output.create(overwrite=False) as stream:
            stream.write(
                Compressor.get_compressor(output.location).bytes_compressor()(text.encode())
            )

    def commit_table(
        self,
        table: Table,
        requirements: tuple[TableRequirement, ...],
        updates: tuple[TableUpdate, ...],
    ) -> CommitTableResponse:
        missing = {
            key: value
            for key, value in FLAT_COMMIT_PROPERTIES.items()
            if key not in table.metadata.properties
        }
        if missing:
            updates = (*updates, SetPropertiesUpdate(updates=missing))
        response = super().commit_table(table, requirements, updates)
        # Written and now the catalog's: the next load of the table need not parse it.
        parsed_metadata.put(response.metadata_location, response.metadata)
        return response


def catalog_for(
    name: str, *, uri: str, warehouse: str, properties: Mapping[str, str]
) -> SqlCatalog:
    """The process's catalog `name` at `uri`, opened on first use."""
    key = (os.getpid(), name, uri, warehouse, tuple(sorted(properties.items())))
    with _catalogs_lock:
        catalog = _catalogs.get(key)
        if catalog is None:
            catalog = open_catalog(
                name,
                uri=uri,
                warehouse=warehouse,
                # A cached pool outlives database restarts; test connections before use.
                pool_pre_ping="true",
                **properties,
            )
            _catalogs[key] = catalog
        return catalog


def open_catalog(name: str, **properties: str) -> AutoloaderCatalog:
    """Open a SQL catalog, creating its tables if needed, safely beside another process.

    pyiceberg creates the catalog tables (two of them, one after the other) on first use;
    processes starting together (the web and the worker) all try, and a loser fails with
    "table ... already exists". A table that exists stays, so opening again gets further:
    a loser can lose once per catalog table, hence a few attempts, not one.
    """
    for attempt in range(1, CATALOG_OPEN_ATTEMPTS + 1):
        try:
            return AutoloaderCatalog(name, **properties)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == CATALOG_OPEN_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)  # let the winner finish creating the other table
    raise AssertionError("unreachable")


# pyiceberg's SQL catalog has two tables; each can be lost to another process once.
CATALOG_OPEN_ATTEMPTS = 5


def failure_reason(exc: BaseException) -> str:
    # SQLAlchemy appends a "Background on this error" link on its own line. Paths of the
    # warehouse, its manifests and the catalog file are not the client's to know.
    lines = str(exc).strip().splitlines()
    return redact_server_paths(lines[0]) if lines else type(exc).__name__
