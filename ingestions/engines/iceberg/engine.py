"""Engine on pyiceberg's SQL catalog: tables written in-process, no cluster needed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg import exceptions as iceberg_errors
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, EqualTo, In
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.utils.properties import property_as_bool

from ingestions.engines.base import (
    MAX_PHYSICAL_NAME_PART_LENGTH,
    Engine,
    Lineage,
    SnapshotInfo,
    Stage,
    TableInfo,
    TableRef,
    table_location,
    validate_table_name,
)
from ingestions.engines.iceberg.catalog import (
    CATALOG_UNREACHABLE,
    ENGINE_FAILURES,
    MemoTransaction,
    catalog_for,
    failure_reason,
)
from ingestions.engines.iceberg.maintenance import IcebergMaintenance
from ingestions.engines.iceberg.replace import replace_source_files, table_data_files
from ingestions.engines.iceberg.snapshots import (
    MAIN,
    expire_and_delete,
    expire_unreachable,
    from_epoch_ms,
    snapshot_info,
    snapshots_to_expire,
    summary_int,
)
from ingestions.engines.iceberg.writer import IcebergDataWriter, check_written_schema
from ingestions.engines.writing import DataWriter, WrittenData
from ingestions.errors import (
    AutoloaderError,
    EngineError,
    EngineUnavailableError,
    SchemaMismatchError,
)

# A concurrent writer to the same table makes a commit fail: the data (or the data files a
# writer wrote) is committed again on the reloaded table.
COMMIT_ATTEMPTS = 3

# Data files a verification's scan reads at once (`rows_per_source_file_by_data_file`).
PARALLEL_FILE_READS = 4

# Every commit writes a new metadata file; keep the last few, not all of them.
NEW_TABLE_PROPERTIES = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
}


class IcebergEngine(IcebergMaintenance, Engine):
    """Iceberg tables in a pyiceberg SQL catalog (SQLite or PostgreSQL) and a warehouse URI.

    The warehouse is any location pyiceberg's FileIO writes: file:// or s3://bucket/prefix,
    the latter configured by `properties` ("s3.endpoint", "s3.region", ...).
    """

    name = "iceberg"
    can_stage = True
    can_retain = True

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
            row_count=summary_int(summary, "total-records"),
            size_bytes=summary_int(summary, "total-files-size"),
            file_count=summary_int(summary, "total-data-files"),
            snapshot_id=snapshot.snapshot_id if snapshot else None,
            last_updated_at=from_epoch_ms(table.metadata.last_updated_ms),
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

    def open_writer(self, table_name: str, *, branch: str | None = None) -> DataWriter | None:
        validate_table_name(table_name)
        with self._errors(f"write to {table_name}"):
            try:
                table = self._catalog().load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                table = None
        if table is not None and not IcebergDataWriter.supports(table):
            return None  # a partitioned table (not ours): appended whole, pyiceberg splits it
        return IcebergDataWriter(
            table=table,
            create=lambda schema: self._table_for_append(table_name, schema),
            transaction=MemoTransaction,
            errors=self._errors,
        )

    def append(
        self,
        table_name: str,
        data: pa.Table | WrittenData,
        *,
        properties: dict[str, str],
        branch: str | None = None,
        replacing: list[str] | None = None,
    ) -> int:
        validate_table_name(table_name)
        if not all(isinstance(item, str) for pair in properties.items() for item in pair):
            raise TypeError("Snapshot properties must map strings to strings.")
        written = data.handle if isinstance(data, WrittenData) else None
        with self._errors(f"append to {table_name}"):
            if written is not None:
                table = self._catalog().load_table(table_name)  # the writer created it
            else:
                table = self._table_for_append(table_name, data.schema)
            for attempt in range(1, COMMIT_ATTEMPTS + 1):
                try:
                    with MemoTransaction(table) as transaction:
                        if not _has_schema(table, data.schema):
                            # Adds columns and widens types in the same commit as the data.
                            with transaction.update_schema() as schema_update:
                                schema_update.union_by_name(data.schema)
                        if written is not None:
                            schema = transaction.table_metadata.schema()
                            check_written_schema(schema, written.schema)
                        if replacing and "_source_file" in table.schema().column_names:
                            # The files' old rows go in the same snapshot as their new ones.
                            data_files = (
                                written.data_files
                                if written is not None
                                else table_data_files(transaction, data)
                            )
                            if not replace_source_files(
                                transaction,
                                paths=replacing,
                                data_files=data_files,
                                properties=properties,
                                branch=branch or MAIN,
                            ):
                                _append_data_files(
                                    transaction, data_files, properties, branch or MAIN
                                )
                        elif written is None:
                            transaction.append(
                                data, snapshot_properties=properties, branch=branch or MAIN
                            )
                        else:
                            _append_data_files(
                                transaction, written.data_files, properties, branch or MAIN
                            )
                except (iceberg_errors.CommitFailedException, iceberg_errors.ValidationException):
                    # Another writer committed first (a conflicting one: pyiceberg's own
                    # retries gave up): everything is planned again on the table as it is.
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
            "row_count": summary_int(summary, "total-records"),
            "size_bytes": summary_int(summary, "total-files-size"),
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
                expire_unreachable(catalog.load_table(table_name))
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
            return expire_and_delete(table, snapshots_to_expire(table, before=expire_before))

    def source_file_rows(self, table_name: str, *, progress=None) -> dict[str, int]:
        table = self._load_table(table_name)
        if table is None or "_source_file" not in table.schema().column_names:
            return {}
        scan = table.scan(selected_fields=("_source_file",))
        with self._errors(f"read {table_name}"):
            if progress is not None:
                return rows_per_source_file_by_data_file(scan, progress)
            counts = scan.to_arrow().group_by("_source_file").aggregate([([], "count_all")])
        return {
            path: count
            for path, count in zip(
                counts.column("_source_file").to_pylist(),
                counts.column("count_all").to_pylist(),
                strict=True,
            )
            if path is not None
        }

    def holds_rows_ingested_at(
        self, table_name: str, ingested_at: datetime, *, branch: str | None = None
    ) -> bool:
        table = self._load_table(table_name)
        if table is None or "_ingested_at" not in table.schema().column_names:
            return False
        snapshot = table.snapshot_by_name(branch) if branch else table.current_snapshot()
        if snapshot is None:
            return False
        with self._errors(f"read {table_name}"):
            # The column's statistics prune every data file of another batch unread.
            found = table.scan(
                row_filter=EqualTo("_ingested_at", ingested_at.astimezone(UTC).isoformat()),
                snapshot_id=snapshot.snapshot_id,
                selected_fields=("_ingested_at",),
                limit=1,
            ).to_arrow()
        return found.num_rows > 0

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
        return [snapshot_info(snapshot) for snapshot in snapshots]

    def table_lineage(self, table_name: str) -> Lineage | None:
        table = self._load_table(table_name)
        if table is None:
            return None
        metadata = table.metadata
        parents = {
            snapshot.snapshot_id: snapshot.parent_snapshot_id for snapshot in metadata.snapshots
        }
        ancestors, snapshot_id = [], metadata.current_snapshot_id
        while snapshot_id is not None and snapshot_id in parents and snapshot_id not in ancestors:
            ancestors.append(snapshot_id)
            snapshot_id = parents[snapshot_id]
        # Iceberg's snapshot log: each snapshot main's current one became, so what readers saw.
        seen = {entry.snapshot_id for entry in metadata.snapshot_log}
        main = [
            snapshot_id
            for snapshot_id in reversed(ancestors)
            if not seen or snapshot_id in seen or snapshot_id == metadata.current_snapshot_id
        ]
        refs = [
            TableRef(name=name, kind=ref.snapshot_ref_type.value, snapshot_id=ref.snapshot_id)
            for name, ref in sorted(metadata.refs.items())
            if name != MAIN
        ]
        return Lineage(main=main, refs=refs)

    def _load_table(self, table_name: str) -> Table | None:
        validate_table_name(table_name)
        with self._errors(f"load {table_name}"):
            try:
                return self._catalog().load_table(table_name)
            except iceberg_errors.NoSuchTableError:
                return None

    def _catalog(self) -> SqlCatalog:
        return catalog_for(
            self.catalog_name,
            uri=self.catalog_uri,
            warehouse=self.warehouse,
            properties=self.properties,
        )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate catalog and pyiceberg failures into the autoloader's errors."""
        try:
            yield
        except AutoloaderError:
            raise
        except CATALOG_UNREACHABLE as exc:
            raise EngineUnavailableError(
                f"Iceberg catalog {self.catalog_name!r} is unreachable, could not {action}: "
                f"{failure_reason(exc)}"
            ) from exc
        except iceberg_errors.ValidationError as exc:
            raise SchemaMismatchError(f"Could not {action}: {failure_reason(exc)}") from exc
        except ENGINE_FAILURES as exc:
            raise EngineError(f"Iceberg could not {action}: {failure_reason(exc)}") from exc


def _append_data_files(
    transaction: Transaction, data_files: list, properties: dict[str, str], branch: str
) -> None:
    """Add data files written by `IcebergDataWriter` as one snapshot: the snapshot producer
    pyiceberg's own append picks (a merge append when the table merges manifests)."""
    merge = property_as_bool(
        transaction.table_metadata.properties,
        TableProperties.MANIFEST_MERGE_ENABLED,
        TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
    )
    update = transaction.update_snapshot(snapshot_properties=properties, branch=branch)
    with update.merge_append() if merge else update.fast_append() as producer:
        for data_file in data_files:
            producer.append_data_file(data_file)


def _has_schema(table: Table, schema: pa.Schema) -> bool:
    """Whether `schema` is the table's (as Arrow types): then there is nothing to merge."""
    return schema.equals(schema_to_pyarrow(table.schema(), include_field_ids=False))


def _retired_name(table_name: str, name: str) -> str:
    namespace, table = table_name.split(".")
    return f"{namespace}.{table}__{name}"[: len(namespace) + 1 + MAX_PHYSICAL_NAME_PART_LENGTH]


def rows_per_source_file_by_data_file(scan, progress) -> dict[str, int]:
    """`source_file_rows` one data file at a time, calling `progress(done, total)` after each:
    the same one scan of `_source_file`, planned once from the manifests (Iceberg metadata),
    each file's values counted as its batches arrive (memory: one batch per thread)."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.compute as pc
    from pyiceberg.io.pyarrow import ArrowScan

    tasks = list(scan.plan_files())
    progress(0, len(tasks))
    reader = ArrowScan(
        scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive
    )

    def count(task) -> Counter:
        counts: Counter = Counter()
        for batch in reader.to_record_batches([task]):
            found = pc.value_counts(batch.column(0))
            values, tallies = found.field("values"), found.field("counts")
            counts.update(dict(zip(values.to_pylist(), tallies.to_pylist(), strict=True)))
        return counts

    totals: Counter = Counter()
    # A pool of its own: `to_record_batches` runs on pyiceberg's shared executor, and
    # waiting on it from that executor's own threads could take every thread and deadlock.
    with ThreadPoolExecutor(max_workers=PARALLEL_FILE_READS) as pool:
        for done, counts in enumerate(pool.map(count, tasks), start=1):
            totals.update(counts)
            progress(done, len(tasks))
    totals.pop(None, None)
    return dict(totals)
