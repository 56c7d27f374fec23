"""Snapshots of a table: what expiring them frees, and how the engine reports them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from ingestions.engines.base import (
    SnapshotInfo,
)

# The branch readers see.
MAIN = "main"


def snapshots_to_expire(table: Table, *, before: datetime, keep_last: int = 0) -> list[int]:
    """The snapshots committed before `before` that no tag or branch holds, but for the
    newest `keep_last`: expire them with `expire_and_delete`."""
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


def expire_unreachable(table: Table) -> int:
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
    return expire_and_delete(table, [sid for sid in parents if sid not in reachable])


def expire_and_delete(table: Table, expired: list[int]) -> int:
    """Expire `expired` (pyiceberg does it in the metadata only), then delete the files no
    remaining snapshot references."""
    if not expired:
        return 0
    io = table.io
    reachable_before = reachable_files(table.metadata.snapshots, io)
    table.maintenance.expire_snapshots().by_ids(expired).commit()
    table.refresh()
    reachable_after = reachable_files(table.metadata.snapshots, io)
    freed = 0
    for path, size in reachable_before.items():
        if path not in reachable_after:
            try:
                io.delete(path)
            except OSError:
                continue  # gone already (a retried expiry)
            freed += size
    return freed


def reachable_files(snapshots, io) -> dict[str, int]:
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


def snapshot_info(snapshot: Snapshot) -> SnapshotInfo:
    properties = {}
    if snapshot.summary is not None:
        properties = {
            "operation": snapshot.summary.operation.value,
            **snapshot.summary.additional_properties,
        }
    return SnapshotInfo(
        snapshot_id=snapshot.snapshot_id,
        committed_at=from_epoch_ms(snapshot.timestamp_ms),
        properties=properties,
    )


def summary_int(summary: Mapping[str, str], key: str) -> int:
    # pyiceberg's Summary answers None for a missing key instead of raising.
    value = summary.get(key)
    return int(value) if value else 0


def from_epoch_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
