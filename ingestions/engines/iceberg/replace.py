"""A commit that replaces the rows of some source files: their old rows out and the batch's
rows in, as **one** snapshot (issue 24: a reload is one atomic replace).

pyiceberg's own `Transaction.delete` followed by an append makes up to three snapshots in
the commit (a delete, an overwrite for the files it rewrites, the append), each with its
manifest list, and reads every candidate data file whole. Here the candidates are planned
from the manifests the same way (Iceberg metadata: a data file whose `_source_file` bounds
exclude every path is never opened), but each is read first for its `_source_file` column
alone: a file holding none of the paths costs that one column and stays, a file holding
only them is dropped unread, and only a file holding both is read whole and written again
without them (copy-on-write, as pyiceberg deletes). The deletes, the rewritten files and the
batch's data files then go in one overwrite — pyiceberg's snapshot producer, which writes
the manifests and checks concurrent commits, less the manifests that hold no live file
(`_ReplaceFiles`).
"""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, In
from pyiceberg.io.pyarrow import (
    ArrowScan,
    _check_pyarrow_schema_compatible,
    _dataframe_to_data_files,
)
from pyiceberg.manifest import DataFile, ManifestFile
from pyiceberg.table import DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE, Transaction
from pyiceberg.table.snapshots import Operation
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.utils.config import Config

from ingestions.engines.iceberg.snapshots import MAIN

LINEAGE_COLUMN = "_source_file"


def replace_source_files(
    transaction: Transaction,
    *,
    paths: list[str],
    data_files: list[DataFile],
    properties: dict[str, str],
    branch: str = MAIN,
) -> bool:
    """Remove the rows of `paths` from `branch` and add `data_files`, in one overwrite
    snapshot of `transaction`. Returns False, committing nothing, when no data file of the
    branch holds any of `paths`: the caller appends as usual."""
    metadata = transaction.table_metadata
    if metadata.snapshot_by_name(branch) is None:
        return False
    io = transaction._table.io
    schema = metadata.schema()
    wanted = pa.array(sorted(set(paths)), pa.string())
    overwrite = _ReplaceFiles(
        operation=Operation.OVERWRITE,
        transaction=transaction,
        io=io,
        snapshot_properties=properties,
        branch=branch,
    )
    # One counter for every file this commit rewrites: each call of pyiceberg's writer
    # would start again at 0 and write over the previous file of the same name.
    counter = itertools.count(0)
    deleted: list[DataFile] = []
    rewritten: list[DataFile] = []
    tasks = transaction._scan(row_filter=In(LINEAGE_COLUMN, paths)).use_ref(branch).plan_files()
    for task in tasks:
        lineage = ArrowScan(
            table_metadata=metadata,
            io=io,
            projected_schema=schema.select(LINEAGE_COLUMN),
            row_filter=AlwaysTrue(),
        ).to_table(tasks=[task])[LINEAGE_COLUMN]
        matched = pc.sum(pc.is_in(lineage, value_set=wanted)).as_py() or 0
        if not matched:
            continue
        deleted.append(task.file)
        if matched == len(lineage):
            continue  # only these paths' rows: the file goes, unread
        rows = ArrowScan(
            table_metadata=metadata, io=io, projected_schema=schema, row_filter=AlwaysTrue()
        ).to_table(tasks=[task])
        kept = rows.filter(pc.invert(pc.is_in(rows[LINEAGE_COLUMN], value_set=wanted)))
        # Written at once, file by file: one mixed file's rows in memory at a time.
        rewritten.extend(
            _dataframe_to_data_files(
                table_metadata=metadata,
                df=kept,
                io=io,
                write_uuid=overwrite.commit_uuid,
                counter=counter,
            )
        )
    if not deleted:
        return False
    with overwrite:
        # The predicate scopes pyiceberg's check of concurrent commits to these paths.
        overwrite.delete_by_predicate(In(LINEAGE_COLUMN, paths))
        for data_file in deleted:
            overwrite.delete_data_file(data_file)
        for data_file in [*rewritten, *data_files]:
            overwrite.append_data_file(data_file)
    return True


class _ReplaceFiles(_OverwriteFiles):
    """pyiceberg's overwrite, less the manifests of earlier snapshots that hold no live
    file: pyiceberg 0.12 carries each one forward, so every reload left one more manifest of
    DELETED entries for every later commit to read (its merge on append drops them; an
    overwrite never merges). Their entries only describe the snapshot that wrote them,
    which keeps them in its own manifest list: time travel and history are unchanged (as in
    Iceberg's Java `MergingSnapshotProducer`, which keeps only manifests with live files or
    written by the commit itself)."""

    def _existing_manifests(self) -> list[ManifestFile]:
        return [
            manifest
            for manifest in super()._existing_manifests()
            if manifest.has_added_files() or manifest.has_existing_files()
        ]


def table_data_files(transaction: Transaction, rows: pa.Table) -> list[DataFile]:
    """`rows` written as data files of the transaction's table, checked against its schema
    as pyiceberg's append checks them."""
    metadata = transaction.table_metadata
    _check_pyarrow_schema_compatible(
        metadata.schema(),
        provided_schema=rows.schema,
        downcast_ns_timestamp_to_us=Config().get_bool(DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE)
        or False,
        format_version=metadata.format_version,
    )
    if rows.num_rows == 0:
        return []
    return list(
        _dataframe_to_data_files(table_metadata=metadata, df=rows, io=transaction._table.io)
    )
