"""Table maintenance on the embedded engine (see docs/maintenance.md): expiry, compaction
and orphan files."""

from __future__ import annotations

from datetime import datetime

from pyiceberg import exceptions as iceberg_errors
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.table import Table

from ingestions.engines.base import (
    MaintenanceResult,
)
from ingestions.engines.iceberg.snapshots import (
    MAIN,
    expire_and_delete,
    reachable_files,
    snapshots_to_expire,
)
from ingestions.errors import (
    EngineError,
)


class IcebergMaintenance:
    """The Maintenance interface of `IcebergEngine` (its `_load_table`, `_catalog` and
    `_errors`)."""

    can_maintain = True

    def expire_snapshots(
        self, table_name: str, *, before: datetime, keep_last: int
    ) -> MaintenanceResult:
        table = self._load_table(table_name)
        if table is None:
            return MaintenanceResult()
        with self._errors(f"expire snapshots of {table_name}"):
            expired = snapshots_to_expire(table, before=before, keep_last=keep_last)
            freed = expire_and_delete(table, expired)
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
        files |= set(reachable_files(metadata.snapshots, table.io))
        return files
