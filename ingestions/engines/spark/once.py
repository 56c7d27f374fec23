"""One pass over a batch's CSV files: Spark reads each file once and writes its rows, with
their lineage columns, to a scratch branch of the table; each file's rows are counted from
the data files that write made; the batch's commit publishes those data files to the
target as one snapshot carrying the batch's properties.

The exactly-once protocol records each file's rows before the commit (`FileBatch`), so the
write cannot be the commit: the scratch branch holds it meanwhile, unseen by readers of
main (or of a staged version's branch). A malformed row (FAILFAST), a file whose header or
values do not fit the others, or a file that changed while it was read makes the pass
give up: its branch is dropped and the batch is read the careful way (`files`), which finds
the file that fails alone. Publishing and dropping are commits of the shared catalog, made
with pyiceberg; on a cluster's own catalog the batch is always read the careful way.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover - types only
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table
    from pyspark.sql.types import StructType

    from ingestions.locations import SourceHandle

logger = logging.getLogger(__name__)

# Branches of a table that hold a batch read but not yet committed. A worker killed in
# between leaves one behind: no reader of main sees it, and the prefix names it.
SCRATCH_BRANCH_PREFIX = "autoloader_read_"
HEADER_BLOCK_BYTES = 1 << 20


@dataclass
class ScratchWrite:
    """A batch written to a scratch branch of its table: what `publish` commits."""

    table_name: str
    branch: str
    base_snapshot_id: int | None  # main's head when the branch was made from it
    snapshot_ids: list[int] = field(default_factory=list)  # the branch's own snapshots
    data_files: list[DataFile] = field(default_factory=list)  # what its write added
    metadata_files: list[str] = field(default_factory=list)  # only its snapshots' manifests
    created_table: bool = False  # the read created the table (dropped with it, if empty)
    done: bool = False  # published or dropped


def scratch_branch_name() -> str:
    return f"{SCRATCH_BRANCH_PREFIX}{uuid.uuid4().hex[:16]}"


def header_names(source: SourceHandle, full_path: str, options: dict) -> list[str] | None:
    """The column names in a CSV file's header line, read by the worker (one block of the
    file), or None when it has no header or it cannot be parsed here."""
    import pyarrow.csv as pacsv

    if str(options.get("header", True)).lower() == "false" or options.get("newlines_in_values"):
        return None
    try:
        with source.filesystem.open_input_stream(full_path) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(
                    block_size=HEADER_BLOCK_BYTES, encoding=options.get("encoding") or "utf8"
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=options.get("delimiter") or ",",
                    quote_char=options.get("quote_char") or '"',
                ),
            )
            return list(reader.schema.names)
    except (OSError, pa.ArrowException, LookupError, ValueError) as exc:
        logger.debug("could not read the header of %s: %s", full_path, exc)
        return None


def table_read_schema(table: StructType, names: list[str]) -> StructType | None:
    """The schema to read a CSV file with `names` in its header by: the table's type of each
    column. None when a column is new to the table (its type must be inferred)."""
    from pyspark.sql.types import StructField, StructType

    types = {item.name: item.dataType for item in table.fields}
    if not names or len(set(names)) != len(names) or any(name not in types for name in names):
        return None
    return StructType([StructField(name, types[name], nullable=True) for name in names])


def read_scratch(table: Table, scratch: ScratchWrite) -> None:
    """Fill in what the scratch branch holds over its base: its own snapshots (the write's,
    and the empty one Iceberg makes to branch a table without any), the data files the
    write added and the manifest lists and manifests only those snapshots hold.

    Only entries ADDED by the write's snapshot are its data files: Spark's append merges
    manifests (past `commit.manifest.min-count-to-merge`), and a manifest the write made by
    merging also lists the base's files as EXISTING. Taking those too would publish main's
    files twice and, on a drop, delete them."""
    from pyiceberg.manifest import ManifestEntryStatus

    snapshot = table.snapshot_by_name(scratch.branch)
    scratch.snapshot_ids, scratch.data_files, scratch.metadata_files = [], [], []
    head = snapshot
    while snapshot is not None and snapshot.snapshot_id != scratch.base_snapshot_id:
        scratch.snapshot_ids.append(snapshot.snapshot_id)
        scratch.metadata_files.append(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            scratch.metadata_files.append(manifest.manifest_path)
            if snapshot is head:
                scratch.data_files += [
                    entry.data_file
                    for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
                    if entry.status == ManifestEntryStatus.ADDED
                    and entry.snapshot_id == snapshot.snapshot_id
                ]
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None


def rows_per_source_file(table: Table, data_files: list[DataFile]) -> dict[str, int]:
    """{`_source_file`: rows} in the data files a scratch write added: one column of
    written Parquet, read by the worker (no source file is read again)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for data_file in data_files:
        with table.io.new_input(data_file.file_path).open() as stream:
            column = pq.read_table(stream, columns=["_source_file"]).column(0)
        if len(column) != data_file.record_count:
            raise ValueError(f"{data_file.file_path} holds {len(column)} rows, not the manifest's")
        for item in pc.value_counts(column).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return counts


def publish(
    table: Table,
    scratch: ScratchWrite,
    *,
    properties: dict[str, str],
    branch: str,
    replacing: list[str] | None,
) -> int:
    """Commit the scratch write's data files to `branch` as one snapshot with `properties`
    (after removing `replacing`'s rows, in the same commit), drop the scratch branch and
    its snapshots; returns the new snapshot's id."""
    from pyiceberg.expressions import In
    from pyiceberg.table.update.snapshot import ExpireSnapshots, ManageSnapshots

    with table.transaction() as transaction:
        if replacing and "_source_file" in table.schema().column_names:
            transaction.delete(
                In("_source_file", replacing), snapshot_properties=properties, branch=branch
            )
        with transaction.update_snapshot(
            snapshot_properties=properties, branch=branch
        ).fast_append() as append:
            for data_file in scratch.data_files:
                append.append_data_file(data_file)
        ManageSnapshots(transaction).remove_branch(scratch.branch).commit()
        ExpireSnapshots(transaction).by_ids(scratch.snapshot_ids).commit()
    scratch.done = True
    published = table.metadata.refs[branch].snapshot_id
    _delete_files(table, scratch.metadata_files)
    return published


def drop(table: Table, scratch: ScratchWrite) -> None:
    """Drop the scratch branch, its snapshots and the files only they hold."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots, ManageSnapshots

    if scratch.branch in table.metadata.refs:
        read_scratch(table, scratch)
        with table.transaction() as transaction:
            ManageSnapshots(transaction).remove_branch(scratch.branch).commit()
            if scratch.snapshot_ids:
                ExpireSnapshots(transaction).by_ids(scratch.snapshot_ids).commit()
        _delete_files(
            table, scratch.metadata_files + [item.file_path for item in scratch.data_files]
        )
    scratch.done = True


def drop_left_behind(table: Table) -> list[str]:
    """Drop the scratch branches a killed worker left on `table` (its batch was never
    committed: recovery reads it again), with the snapshots only they hold; returns their
    names. Called before a batch makes its own: one run at a time writes a table, so a
    scratch branch there now is nobody's. Their data files become orphans, which the
    cluster's `remove_orphan_files` (or the worker's maintenance) deletes."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots, ManageSnapshots

    metadata = table.metadata
    left = sorted(name for name in metadata.refs if name.startswith(SCRATCH_BRANCH_PREFIX))
    if not left:
        return []
    parents = {snapshot.snapshot_id: snapshot.parent_snapshot_id for snapshot in metadata.snapshots}

    def chain(snapshot_id: int | None) -> set[int]:
        seen: set[int] = set()
        while snapshot_id is not None and snapshot_id not in seen:
            seen.add(snapshot_id)
            snapshot_id = parents.get(snapshot_id)
        return seen

    kept = set().union(
        *(chain(ref.snapshot_id) for name, ref in metadata.refs.items() if name not in left)
    )
    own = set().union(*(chain(metadata.refs[name].snapshot_id) for name in left)) - kept
    with table.transaction() as transaction:
        manage = ManageSnapshots(transaction)
        for name in left:
            manage.remove_branch(name)
        manage.commit()
        if own:
            ExpireSnapshots(transaction).by_ids(sorted(own)).commit()
    logger.warning("dropped %d scratch branch(es) left on %s: %s", len(left), table.name(), left)
    return left


def _delete_files(table: Table, paths: list[str]) -> None:
    """Best effort: a file left behind is an orphan, which `remove_orphan_files` finds."""
    for path in paths:
        try:
            table.io.delete(path)
        except Exception as exc:
            logger.debug("could not delete %s: %s", path, exc)
