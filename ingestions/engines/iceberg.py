"""Engine on pyiceberg's SQL catalog: tables written in-process, no cluster needed."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import pyarrow as pa
import sqlalchemy.exc
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException, schema_to_pyarrow
from pyiceberg.table import Table, TableMetadata, Transaction
from pyiceberg.table.snapshots import Snapshot

from ingestions.engines.base import (
    MAX_PHYSICAL_NAME_PART_LENGTH,
    Engine,
    MaintenanceResult,
    SnapshotInfo,
    Stage,
    TableInfo,
    redact_server_paths,
    table_location,
    validate_table_name,
)
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    SchemaMismatchError,
)

MAIN = "main"

# A concurrent writer to the same table makes a commit fail; the data is rewritten and retried.
COMMIT_ATTEMPTS = 3

# Every commit writes a new metadata file; keep the last few, not all of them.
NEW_TABLE_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}

# Building a catalog opens a connection pool and checks the catalog tables: do it once per
# process. The pid is in the key because a forked child must not share its parent's pool.
_catalogs: dict[tuple, SqlCatalog] = {}
_catalogs_lock = threading.Lock()

_CATALOG_UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
_ENGINE_FAILURES = (
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


class _Transaction(Transaction):
    """A pyiceberg transaction that computes its pending metadata once per change.

    pyiceberg rebuilds and deep-copies the whole table metadata, every snapshot included, on
    each read of `Transaction.table_metadata`: about twenty times per append, so an append
    costs more the older the table. The metadata models are frozen and a read never changes
    them, so while neither the table's metadata nor the pending updates have changed, the
    metadata computed last is still exact and is returned again.
    """

    _memo: tuple[object, object, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if self._memo is None or self._memo[0] is not base or self._memo[1] is not updates:
            self._memo = (base, updates, super().table_metadata)
        return self._memo[2]


class IcebergEngine(Engine):
    """Iceberg tables in a pyiceberg SQL catalog (SQLite or PostgreSQL) and a warehouse URI.

    The warehouse is any location pyiceberg's FileIO writes: file:// or s3://bucket/prefix,
    the latter configured by `properties` ("s3.endpoint", "s3.region", ...).
    """

    name = "iceberg"
    can_stage = True
    can_retain = True
    can_maintain = True

    def __init__(
        self,
        *,
        catalog_name: str,
        catalog_uri: str,
        warehouse: str,
        properties: Mapping[str, str] | None = None,
    ):
        self.catalog_name = catalog_name
        self.catalog_uri = catalog_uri
        self.warehouse = warehouse
        self.properties = dict(properties or {})

    def ping(self) -> None:
        with self._errors("reach the catalog"):
            self._catalog().list_namespaces()

    def table_exists(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"look up {table_name}"):
            return self._catalog().table_exists(table_name)

    def describe_table(self, table_name: str) -> TableInfo:
        table = self._load_table(table_name)
        if table is None:
            return TableInfo.missing(table_name)
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot and snapshot.summary else {}
        return TableInfo(
            table_name=table_name,
            exists=True,
            row_count=_summary_int(summary, "total-records"),
            size_bytes=_summary_int(summary, "total-files-size"),
            file_count=_summary_int(summary, "total-data-files"),
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            last_updated_at=_from_epoch_ms(table.metadata.last_updated_ms),
        )

    def table_schema(self, table_name: str) -> pa.Schema | None:
        table = self._load_table(table_name)
        if table is None:
            return None
        # Without field ids: callers compare and cast by name, like any other engine's schema.
        return schema_to_pyarrow(table.schema(), include_field_ids=False)

    def sample_rows(self, table_name: str, *, limit: int) -> pa.Table | None:
        table = self._load_table(table_name)
        if table is None:
            return None
        with self._errors(f"read rows of {table_name}"):
            return table.scan(limit=limit).to_arrow()

    def drop_table(self, table_name: str) -> bool:
        validate_table_name(table_name)
        with self._errors(f"drop {table_name}"):
            try:
                # purge_table logs, rather than raises, a data file it fails to delete.
                self._catalog().purge_table(table_name)
            except iceberg_errors.NoSuchTableError:
                return False
        return True

    def append(
        self,
        table_name: str,
        data: pa.Table,
        *,
        properties: dict[str, str],
        branch: str | None = None,
    ) -> int:
        validate_table_name(table_name)
        if not all(isinstance(item, str) for pair in properties.items() for item in pair):
            raise TypeError("Snapshot properties must map strings to strings.")
        with self._errors(f"append to {table_name}"):
            table = self._table_for_append(table_name, data.schema)
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    with _Transaction(table) as transaction:
                        if not _has_schema(table, data.schema):
                            # Adds columns and widens types in the same commit as the data.
                            with transaction.update_schema() as schema_update:
                                schema_update.union_by_name(data.schema)
                        transaction.append(
                            data, snapshot_properties=properties, branch=branch or MAIN
                        )
                except iceberg_errors.CommitFailedException:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    table = self._catalog().load_table(table_name)
                else:
                    break
            # The committed metadata is the table's now, so the branch's head is ours.
            if branch:
                return table.metadata.refs[branch].snapshot_id
            return table.current_snapshot().snapshot_id

    def _table_for_append(self, table_name: str, schema: pa.Schema) -> Table:
        """The table, loaded, or created (with its namespace) from `schema` when missing.

        Loaded for each append, not kept between them: a table kept from an earlier batch
        goes stale when anything else commits to (or renames, or drops) it, and a stale
        table writes its data files before its commit is refused, leaving orphans. pyiceberg
        loads the table again to commit in any case, so keeping it would save one read.
        """
        catalog = self._catalog()
        try:
            return catalog.load_table(table_name)
        except iceberg_errors.NoSuchTableError:
            pass
        catalog.create_namespace_if_not_exists(table_name.split(".")[0])
        try:
            return catalog.create_table(
                table_name,
                schema=schema,
                location=self._table_location(table_name),
                properties=NEW_TABLE_PROPERTIES,
            )
        except iceberg_errors.TableAlreadyExistsError:
            return catalog.load_table(table_name)  # created meanwhile by another writer

    def stage_begin(
        self, table_name: str, *, name: str, replacing: list[str] | None = None
    ) -> Stage:
        validate_table_name(table_name)
        with self._errors(f"stage a new version of {table_name}"):
            catalog = self._catalog()
            try:
                table = catalog.load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                table = None
            if replacing is not None and (table is None or table.current_snapshot() is None):
                raise EngineError(f"{table_name} has no rows to replace a part of.")
            if table is None or table.current_snapshot() is None:
                # Nothing to branch from: the new version is built as a table of its own and
                # renamed into place when published.
                namespace, table_part = table_name.split(".")
                staging = f"{namespace}.{table_part}__{name}"[: len(namespace) + 130]
                if catalog.table_exists(staging):
                    catalog.purge_table(staging)  # a discarded attempt's leftovers
                return Stage(table_name=table_name, write_to=staging, branch=None, base=None)
            base = table.current_snapshot().snapshot_id
            with table.manage_snapshots() as snapshots:
                if name in table.metadata.refs:
                    # Left by an attempt that died before it recorded its stage (so before
                    # any batch): it may still hold the old rows; start it again.
                    snapshots.remove_branch(name)
                snapshots.create_branch(base, name)
            table = catalog.load_table(table_name)
            if replacing is None:
                # The new version starts empty; the live table is untouched on main.
                table.delete(AlwaysTrue(), branch=name)
            elif replacing:
                # It starts as the live rows less those of the files it reloads.
                table.delete(In("_source_file", replacing), branch=name)
            return Stage(table_name=table_name, write_to=table_name, branch=name, base=base)

    def stage_publish(self, stage: Stage) -> int | None:
        with self._errors(f"publish the new version of {stage.table_name}"):
            catalog = self._catalog()
            if stage.branch is None:
                if not catalog.table_exists(stage.write_to):
                    return None  # published already (a retried publish)
                if catalog.table_exists(stage.table_name):
                    raise EngineError(
                        f"{stage.table_name} was created while its new version was staged."
                    )
                table = catalog.rename_table(stage.write_to, stage.table_name)
                snapshot = table.current_snapshot()
                return snapshot.snapshot_id if snapshot else None
            table = catalog.load_table(stage.table_name)
            head = table.metadata.refs.get(stage.branch)
            if head is None:
                return table.current_snapshot().snapshot_id  # published already
            current = table.current_snapshot()
            if current is None or current.snapshot_id != stage.base:
                raise EngineError(
                    f"{stage.table_name} changed while its new version was staged "
                    f"(main is at {current.snapshot_id if current else None}, not {stage.base})."
                )
            # One commit: readers see the old rows, then the new ones, never anything between.
            with table.manage_snapshots() as snapshots:
                snapshots.set_current_snapshot(head.snapshot_id)
                snapshots.remove_branch(stage.branch)
            return head.snapshot_id

    def stage_discard(self, stage: Stage) -> None:
        with self._errors(f"discard the new version of {stage.table_name}"):
            catalog = self._catalog()
            if stage.branch is None:
                if catalog.table_exists(stage.write_to):
                    catalog.purge_table(stage.write_to)
                return
            try:
                table = catalog.load_table(stage.table_name)
            except iceberg_errors.NoSuchTableError:
                return
            if stage.branch in table.metadata.refs:
                with table.manage_snapshots() as snapshots:
                    snapshots.remove_branch(stage.branch)

    def retain(self, table_name: str, *, name: str) -> dict:
        table = self._load_table(table_name)
        snapshot = table.current_snapshot() if table is not None else None
        if snapshot is None:
            return {"kind": "absent", "row_count": 0, "size_bytes": 0}
        with (
            self._errors(f"keep the current version of {table_name}"),
            table.manage_snapshots() as snapshots,
        ):
            if name in table.metadata.refs:
                snapshots.remove_tag(name)  # an earlier attempt's: the table is unchanged
            snapshots.create_tag(snapshot.snapshot_id, name)
        summary = snapshot.summary or {}
        return {
            "kind": "snapshot",
            "tag": name,
            "snapshot_id": snapshot.snapshot_id,
            "row_count": _summary_int(summary, "total-records"),
            "size_bytes": _summary_int(summary, "total-files-size"),
        }

    def retire(self, table_name: str, *, name: str) -> dict:
        validate_table_name(table_name)
        retired = _retired_name(table_name, name)
        with self._errors(f"set {table_name} aside"):
            catalog = self._catalog()
            if catalog.table_exists(table_name):
                catalog.rename_table(table_name, retired)
            elif not catalog.table_exists(retired):
                return {"kind": "absent", "row_count": 0, "size_bytes": 0}
        info = self.describe_table(retired)  # a retry after the rename finds it there
        return {
            "kind": "retired",
            "table": retired,
            "row_count": info.row_count,
            "size_bytes": info.size_bytes,
        }

    def restore(self, table_name: str, point: dict) -> None:
        validate_table_name(table_name)
        with self._errors(f"restore {table_name}"):
            catalog = self._catalog()
            if point["kind"] == "snapshot":
                table = self._load_table(table_name)
                if table is None:
                    raise EngineError(f"{table_name} no longer exists: its version is gone.")
                target = point["snapshot_id"]
                if table.metadata.snapshot_by_id(target) is None:
                    raise EngineError(f"Snapshot {target} of {table_name} was expired.")
                current = table.current_snapshot()
                # One commit: readers see the rows of now, then the restored ones.
                with table.manage_snapshots() as snapshots:
                    if current is None or current.snapshot_id != target:
                        snapshots.set_current_snapshot(target)
                    if point["tag"] in table.metadata.refs:
                        snapshots.remove_tag(point["tag"])
                # The version undone is no one's any more: its snapshots and files go now.
                _expire_unreachable(catalog.load_table(table_name))
                return
            if point["kind"] == "retired" and not catalog.table_exists(point["table"]):
                if catalog.table_exists(table_name):
                    return  # restored already (a retried undo)
                raise EngineError(f"The dropped {table_name} was purged: it cannot come back.")
            if catalog.table_exists(table_name):
                catalog.purge_table(table_name)  # what was written since the operation
            if point["kind"] == "retired":
                catalog.rename_table(point["table"], table_name)

    def release(self, table_name: str, point: dict, *, expire_before: datetime | None) -> int:
        validate_table_name(table_name)
        with self._errors(f"release the kept version of {table_name}"):
            catalog = self._catalog()
            if point["kind"] == "retired":
                if not catalog.table_exists(point["table"]):
                    return 0
                size = self.describe_table(point["table"]).size_bytes
                catalog.purge_table(point["table"])
                return size
            table = self._load_table(table_name)
            if table is None or point["kind"] != "snapshot":
                return 0
            if point["tag"] in table.metadata.refs:
                with table.manage_snapshots() as snapshots:
                    snapshots.remove_tag(point["tag"])
                table = catalog.load_table(table_name)
            if expire_before is None:
                return 0
            return _expire_and_delete(table, _snapshots_to_expire(table, before=expire_before))

    def source_file_rows(self, table_name: str) -> dict[str, int]:
        table = self._load_table(table_name)
        if table is None or "_source_file" not in table.schema().column_names:
            return {}
        with self._errors(f"read {table_name}"):
            lineage = table.scan(selected_fields=("_source_file",)).to_arrow()
            counts = lineage.group_by("_source_file").aggregate([([], "count_all")])
        return {
            path: count
            for path, count in zip(
                counts.column("_source_file").to_pylist(),
                counts.column("count_all").to_pylist(),
                strict=True,
            )
            if path is not None
        }

    def _table_location(self, table_name: str) -> str | None:
        return table_location(self.warehouse, table_name)

    def list_snapshots(self, table_name: str) -> list[SnapshotInfo]:
        table = self._load_table(table_name)
        if table is None:
            return []
        snapshots = sorted(
            table.metadata.snapshots,
            key=lambda snapshot: (snapshot.sequence_number or 0, snapshot.timestamp_ms),
        )
        return [_snapshot_info(snapshot) for snapshot in snapshots]

    def _load_table(self, table_name: str) -> Table | None:
        validate_table_name(table_name)
        with self._errors(f"load {table_name}"):
            try:
                return self._catalog().load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                return None

    def _catalog(self) -> SqlCatalog:
        key = (
            os.getpid(),
            self.catalog_name,
            self.catalog_uri,
            self.warehouse,
            tuple(sorted(self.properties.items())),
        )
        with _catalogs_lock:
            catalog = _catalogs.get(key)
            if catalog is None:
                catalog = _open_catalog(
                    self.catalog_name,
                    uri=self.catalog_uri,
                    warehouse=self.warehouse,
                    # A cached pool outlives database restarts; test connections before use.
                    pool_pre_ping="true",
                    **self.properties,
                )
                _catalogs[key] = catalog
            return catalog

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate catalog and pyiceberg failures into the autoloader's errors."""
        try:
            yield
        except AutoloaderError:
            raise
        except _CATALOG_UNREACHABLE as exc:
            raise EngineUnavailableError(
                f"Iceberg catalog {self.catalog_name!r} is unreachable, could not {action}: "
                f"{_reason(exc)}"
            ) from exc
        except iceberg_errors.ValidationError as exc:
            raise SchemaMismatchError(f"Could not {action}: {_reason(exc)}") from exc
        except _ENGINE_FAILURES as exc:
            raise EngineError(f"Iceberg could not {action}: {_reason(exc)}") from exc

    # --- maintenance (see docs/maintenance.md) -----------------------------------------

    def expire_snapshots(
        self, table_name: str, *, before: datetime, keep_last: int
    ) -> MaintenanceResult:
        table = self._load_table(table_name)
        if table is None:
            return MaintenanceResult()
        with self._errors(f"expire snapshots of {table_name}"):
            expired = _snapshots_to_expire(table, before=before, keep_last=keep_last)
            freed = _expire_and_delete(table, expired)
        return MaintenanceResult(snapshots_expired=len(expired), bytes_freed=freed)

    def compact_files(
        self,
        table_name: str,
        *,
        small_file_bytes: int,
        min_files: int,
        max_bytes: int,
        properties: dict[str, str],
    ) -> MaintenanceResult:
        # pyiceberg 0.12 has no rewrite action: an overwrite that deletes the small files and
        # adds their rows back, in one commit, is one (what its own `delete` does per file).
        from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

        table = self._load_table(table_name)
        if table is None or table.current_snapshot() is None:
            return MaintenanceResult()
        with self._errors(f"compact the data files of {table_name}"):
            if not table.spec().is_unpartitioned():
                return MaintenanceResult()  # files of different partitions cannot be merged
            tasks = list(table.scan().plan_files())
            if any(task.delete_files for task in tasks):
                return MaintenanceResult()  # merge-on-read deletes: rewriting must apply them
            small, size = [], 0
            for task in sorted(tasks, key=lambda task: task.file.file_size_in_bytes):
                file_size = task.file.file_size_in_bytes
                if file_size >= small_file_bytes or (small and size + file_size > max_bytes):
                    break
                small.append(task)
                size += file_size
            if len(small) < min_files:
                return MaintenanceResult()
            # Read with the table's current schema: files written before a column was added
            # or widened are read the way the table reads them.
            rows = ArrowScan(
                table_metadata=table.metadata,
                io=table.io,
                projected_schema=table.schema(),
                row_filter=AlwaysTrue(),
            ).to_table(tasks=small)
            expected = sum(task.file.record_count for task in small)
            if rows.num_rows != expected:
                raise EngineError(
                    f"Compaction of {table_name} read {rows.num_rows} rows, not {expected}."
                )
            # The overwrite asserts that main is still the snapshot the files were read from:
            # a run committing meanwhile makes this commit fail, never the run's.
            with (
                table.transaction() as transaction,
                transaction.update_snapshot(
                    snapshot_properties=properties, branch=MAIN
                ).overwrite() as rewrite,
            ):
                written = list(
                    _dataframe_to_data_files(
                        table_metadata=transaction.table_metadata,
                        df=rows,
                        io=table.io,
                        write_uuid=rewrite.commit_uuid,
                    )
                )
                for task in small:
                    rewrite.delete_data_file(task.file)
                for data_file in written:
                    rewrite.append_data_file(data_file)
            snapshot_id = table.current_snapshot().snapshot_id
        return MaintenanceResult(
            files_compacted=len(small), files_written=len(written), snapshot_id=snapshot_id
        )

    def remove_orphan_files(self, table_name: str, *, older_than: datetime) -> MaintenanceResult:
        from pyarrow.fs import FileSelector, FileType

        table = self._load_table(table_name)
        if table is None or not hasattr(table.io, "fs_by_scheme"):
            return MaintenanceResult()  # not pyarrow's FileIO: nothing to list files with
        with self._errors(f"remove orphan files of {table_name}"):
            location = table.location().rstrip("/")
            scheme, netloc, root = table.io.parse_location(location)
            filesystem = table.io.fs_by_scheme(scheme, netloc)
            referenced = {
                table.io.parse_location(path)[2]
                for holder in [table, *self._tables_sharing(table_name, location)]
                for path in self._referenced_files(holder)
            }
            cutoff = older_than.timestamp()
            removed = freed = 0
            selector = FileSelector(root, recursive=True, allow_not_found=True)
            for info in filesystem.get_file_info(selector):
                if info.type != FileType.File or info.path in referenced:
                    continue
                if info.mtime is None or info.mtime.timestamp() >= cutoff:
                    continue  # possibly a write in flight
                try:
                    filesystem.delete_file(info.path)
                except FileNotFoundError:
                    continue
                removed += 1
                freed += info.size or 0
        return MaintenanceResult(files_removed=removed, bytes_freed=freed)

    def _tables_sharing(self, table_name: str, location: str) -> list[Table]:
        """The other tables of the namespace whose files lie in, or around, the location: a
        table set aside for undo keeps the location of the table it was, which a new table of
        the same name takes again."""
        catalog = self._catalog()
        tables = []
        for identifier in catalog.list_tables(table_name.split(".")[0]):
            if ".".join(identifier) == table_name:
                continue
            try:
                other = catalog.load_table(identifier)
            except iceberg_errors.NoSuchTableError:
                continue  # dropped meanwhile
            other_location = other.location().rstrip("/")
            if (
                other_location == location
                or other_location.startswith(f"{location}/")
                or location.startswith(f"{other_location}/")
            ):
                tables.append(other)
        return tables

    @staticmethod
    def _referenced_files(table: Table) -> set[str]:
        """Every file the table's metadata still names: metadata versions, statistics,
        manifest lists, manifests and live data files."""
        metadata = table.metadata
        files = {table.metadata_location}
        files |= {entry.metadata_file for entry in metadata.metadata_log}
        files |= {statistics.statistics_path for statistics in metadata.statistics}
        files |= {statistics.statistics_path for statistics in metadata.partition_statistics}
        files |= set(_reachable_files(metadata.snapshots, table.io))
        return files


def _has_schema(table: Table, schema: pa.Schema) -> bool:
    """Whether `schema` is the table's (as Arrow types): then there is nothing to merge."""
    return schema.equals(schema_to_pyarrow(table.schema(), include_field_ids=False))


def _retired_name(table_name: str, name: str) -> str:
    namespace, table = table_name.split(".")
    return f"{namespace}.{table}__{name}"[: len(namespace) + 1 + MAX_PHYSICAL_NAME_PART_LENGTH]


def _snapshots_to_expire(table: Table, *, before: datetime, keep_last: int = 0) -> list[int]:
    """The snapshots committed before `before` that no tag or branch holds, but for the
    newest `keep_last`: expire them with `_expire_and_delete`."""
    snapshots = sorted(
        table.metadata.snapshots,
        key=lambda snapshot: (snapshot.sequence_number or 0, snapshot.timestamp_ms),
    )
    kept = {ref.snapshot_id for ref in table.metadata.refs.values()}
    if keep_last > 0:
        kept |= {snapshot.snapshot_id for snapshot in snapshots[-keep_last:]}
    cutoff = int(before.timestamp() * 1000)
    return [
        snapshot.snapshot_id
        for snapshot in snapshots
        if snapshot.timestamp_ms < cutoff and snapshot.snapshot_id not in kept
    ]


def _expire_unreachable(table: Table) -> int:
    """Expire the snapshots that are in the history of no tag or branch (a version undone),
    then delete the files that only they referenced."""
    parents = {
        snapshot.snapshot_id: snapshot.parent_snapshot_id for snapshot in table.metadata.snapshots
    }
    reachable: set[int] = set()
    for ref in table.metadata.refs.values():
        snapshot_id = ref.snapshot_id
        while snapshot_id is not None and snapshot_id not in reachable:
            reachable.add(snapshot_id)
            snapshot_id = parents.get(snapshot_id)
    return _expire_and_delete(table, [sid for sid in parents if sid not in reachable])


def _expire_and_delete(table: Table, expired: list[int]) -> int:
    """Expire `expired` (pyiceberg does it in the metadata only), then delete the files no
    remaining snapshot references."""
    if not expired:
        return 0
    io = table.io
    reachable_before = _reachable_files(table.metadata.snapshots, io)
    table.maintenance.expire_snapshots().by_ids(expired).commit()
    table.refresh()
    reachable_after = _reachable_files(table.metadata.snapshots, io)
    freed = 0
    for path, size in reachable_before.items():
        if path not in reachable_after:
            try:
                io.delete(path)
            except OSError:
                continue  # gone already (a retried expiry)
            freed += size
    return freed


def _reachable_files(snapshots, io) -> dict[str, int]:
    """Every manifest list, manifest and live data file of the snapshots, with data sizes."""
    files: dict[str, int] = {}
    for snapshot in snapshots:
        files[snapshot.manifest_list] = 0
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in files:
                continue  # shared with a snapshot read already
            files[manifest.manifest_path] = 0
            # Live entries only: a file a retained snapshot deleted is no longer its own.
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                files[entry.data_file.file_path] = entry.data_file.file_size_in_bytes
    return files


def _open_catalog(name: str, **properties: str) -> SqlCatalog:
    """Open a SQL catalog, creating its tables if needed, safely beside another process.

    pyiceberg creates the catalog tables (two of them, one after the other) on first use;
    processes starting together (the web and the worker) all try, and a loser fails with
    "table ... already exists". A table that exists stays, so opening again gets further:
    a loser can lose once per catalog table, hence a few attempts, not one.
    """
    for attempt in range(1, CATALOG_OPEN_ATTEMPTS + 1):
        try:
            return SqlCatalog(name, **properties)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            if "already exists" not in str(exc) or attempt == CATALOG_OPEN_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)  # let the winner finish creating the other table
    raise AssertionError("unreachable")


# pyiceberg's SQL catalog has two tables; each can be lost to another process once.
CATALOG_OPEN_ATTEMPTS = 5


def _snapshot_info(snapshot: Snapshot) -> SnapshotInfo:
    properties = {}
    if snapshot.summary is not None:
        properties = {
            "operation": snapshot.summary.operation.value,
            **snapshot.summary.additional_properties,
        }
    return SnapshotInfo(
        snapshot_id=snapshot.snapshot_id,
        committed_at=_from_epoch_ms(snapshot.timestamp_ms),
        properties=properties,
    )


def _summary_int(summary: Mapping[str, str], key: str) -> int:
    # pyiceberg's Summary answers None for a missing key instead of raising.
    value = summary.get(key)
    return int(value) if value else 0


def _from_epoch_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def _reason(exc: BaseException) -> str:
    # SQLAlchemy appends a "Background on this error" link on its own line. Paths of the
    # warehouse, its manifests and the catalog file are not the client's to know.
    lines = str(exc).strip().splitlines()
    return redact_server_paths(lines[0]) if lines else type(exc).__name__
