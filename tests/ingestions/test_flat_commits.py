"""Flat commits (issue 26): a commit does not pay for every snapshot the table keeps.

The mechanisms, each tested so that it cannot silently stop working: the catalog parses a
metadata file once and applies updates without deep-copying the metadata, appends merge
manifests (the manifest list stays short), and frequent runs make a table due for
maintenance before the interval is up; time travel within the retention window survives
all of it. No timing assertions: `bench/commit_growth.py` measures the cost.
"""

import json
from urllib.parse import urlparse

import pyarrow as pa
import pytest
from pyiceberg.table import Transaction
from pyiceberg.table.update import (
    RemovePropertiesUpdate,
    RemoveSnapshotRefUpdate,
    RemoveSnapshotsUpdate,
    SetPropertiesUpdate,
    SetSnapshotRefUpdate,
    update_table_metadata,
)
from pyiceberg.types import StringType

from ingestions.engines.iceberg.catalog import (
    FLAT_COMMIT_PROPERTIES,
    MemoTransaction,
    metadata_updated,
    parsed_metadata,
    snapshot_json,
)
from ingestions.maintenance import maintenance_due, maintenance_run
from ingestions.models import Ingestion, MaintenanceAction, RunStatus, TableMaintenance
from ingestions.runs import run_request

from ..helpers import drain_queue, open_table, run_once

TABLE = "sales.orders"
MIN_COUNT_TO_MERGE = int(FLAT_COMMIT_PROPERTIES["commit.manifest.min-count-to-merge"])


def orders(*ids: int) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": [f"order {i}" for i in ids]})


def comparable(metadata) -> dict:
    """The metadata without what depends on the clock (pyiceberg stamps 'now' when no
    update sets the time)."""
    dumped = metadata.model_dump(by_alias=False)
    dumped.pop("last_updated_ms")
    dumped["snapshot_log"] = [entry["snapshot_id"] for entry in dumped["snapshot_log"]]
    return dumped


def staged_updates(table, stage) -> tuple:
    """The updates a plain pyiceberg transaction stages for `stage(transaction)`."""
    transaction = Transaction(table, autocommit=False)
    stage(transaction)
    return transaction._updates


def test_metadata_updated_is_pyiceberg_s_update_for_every_kind_the_engine_commits(engine):
    for index in range(3):
        engine.append(TABLE, orders(index), properties={"autoloader.batch-key": f"b{index}"})
    table = engine._load_table(TABLE)
    first, *_, last = [snapshot.snapshot_id for snapshot in table.metadata.snapshots]

    def add_column(transaction):
        with transaction.update_schema() as schema:
            schema.add_column("region", StringType())

    cases = {
        "append": staged_updates(table, lambda tx: tx.append(orders(10, 11))),
        "overwrite": staged_updates(table, lambda tx: tx.overwrite(orders(12))),
        "schema": staged_updates(table, add_column),
        "properties": (SetPropertiesUpdate(updates={"owner": "data team"}),),
        "remove properties": (RemovePropertiesUpdate(removals=["owner"]),),
        "tag": (SetSnapshotRefUpdate(ref_name="undo", type="tag", snapshot_id=first),),
        "branch": (SetSnapshotRefUpdate(ref_name="stage", type="branch", snapshot_id=last),),
        "rollback main": (SetSnapshotRefUpdate(ref_name="main", type="branch", snapshot_id=first),),
        "expire": (RemoveSnapshotsUpdate(snapshot_ids=[first]),),
        "remove ref": (RemoveSnapshotRefUpdate(ref_name="main"),),
    }
    base = table.metadata.model_copy(
        update={"properties": {**table.metadata.properties, "owner": "x"}}
    )
    for kind, updates in cases.items():
        assert updates, kind
        ours = metadata_updated(base, updates, metadata_location=table.metadata_location)
        pyiceberg = update_table_metadata(base, updates, metadata_location=table.metadata_location)
        assert comparable(ours) == comparable(pyiceberg), kind


def test_a_commit_shares_the_snapshots_it_did_not_change_instead_of_copying_them(engine):
    engine.append(TABLE, orders(1), properties={})
    engine.append(TABLE, orders(2), properties={})
    table = engine._load_table(TABLE)
    before = table.metadata

    pending = MemoTransaction(table)
    pending.append(orders(3))
    assert pending.table_metadata.snapshots[0] is before.snapshots[0]

    engine.append(TABLE, orders(3), properties={})
    after = engine._load_table(TABLE).metadata
    assert len(after.snapshots) == 3
    # Neither parsed again nor deep-copied by the commit: the very same snapshot objects.
    assert after.snapshots[0] is before.snapshots[0]
    assert after.schemas[0] is before.schemas[0]


def test_a_metadata_file_is_parsed_once_and_another_writer_s_commit_is_seen(engine, tmp_path):
    engine.append(TABLE, orders(1), properties={})
    first, again = engine._load_table(TABLE), engine._load_table(TABLE)
    assert first.metadata is again.metadata
    assert parsed_metadata.get(first.metadata_location) is first.metadata

    # Another process's commit (plain pyiceberg, its own catalog object) writes a new
    # metadata file: the engine reads the catalog's pointer, so it sees the new version.
    from pyiceberg.catalog.sql import SqlCatalog

    outsider = SqlCatalog(
        "test",
        uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
    )
    outsider.load_table(TABLE).append(orders(2))
    seen = engine._load_table(TABLE)
    assert seen.metadata_location != first.metadata_location
    assert len(seen.metadata.snapshots) == 2
    assert sorted(seen.scan().to_arrow().column("id").to_pylist()) == [1, 2]


def test_the_metadata_file_written_is_pyiceberg_s_with_each_snapshot_serialized_once(engine):
    engine.append(TABLE, orders(1), properties={"autoloader.batch-key": "b1"})
    engine.append(TABLE, orders(2), properties={"autoloader.batch-key": "b2"})
    first = engine._load_table(TABLE).metadata.snapshots[0]
    with engine._load_table(TABLE).manage_snapshots() as refs:
        refs.create_tag(first.snapshot_id, "autoloader_undo_test")
    engine.append(TABLE, orders(3), properties={}, replacing=None)

    table = engine._load_table(TABLE)
    written = urlparse(table.metadata_location).path
    with open(written) as handle:
        assert json.load(handle) == json.loads(table.metadata.model_dump_json())
    assert table.metadata.snapshots[0] is first
    assert id(first) in snapshot_json._entries  # written from its cached JSON
    assert open_table(TABLE).metadata == table.metadata  # what any reader parses


@pytest.mark.parametrize("expired", ["none", "first", "middle"])
def test_a_metadata_file_extended_from_the_last_one_written_is_still_pyiceberg_s(engine, expired):
    """The snapshots array is extended from the text written for the version before
    (`snapshots_json`) only when the list starts with exactly those snapshots: after an
    expiry that removed the first or a middle one, it is written whole, and every file is
    what pyiceberg itself would write."""
    for index in range(4):
        engine.append(TABLE, orders(index), properties={"autoloader.batch-key": f"b{index}"})
    table = engine._load_table(TABLE)
    ids = [snapshot.snapshot_id for snapshot in table.metadata.snapshots]
    if expired != "none":
        gone = ids[0] if expired == "first" else ids[1]
        table.maintenance.expire_snapshots().by_ids([gone]).commit()
    for index in range(4, 6):
        engine.append(TABLE, orders(index), properties={"autoloader.batch-key": f"b{index}"})
        table = engine._load_table(TABLE)
        with open(urlparse(table.metadata_location).path) as handle:
            assert json.load(handle) == json.loads(table.metadata.model_dump_json())
    assert len(table.metadata.snapshots) == (6 if expired == "none" else 5)
    assert open_table(TABLE).metadata == table.metadata  # what any reader parses


def test_repeated_reloads_keep_the_manifest_list_short_and_time_travel_intact(engine):
    """A reload's overwrite drops the manifests of earlier snapshots that hold no live file
    (pyiceberg carries each one forward: one more per reload, never merged); the snapshots
    that wrote them still read as they did."""

    def rows(files: list[str], version: int) -> pa.Table:
        return pa.table(
            {
                "id": pa.array(range(len(files)), pa.int64()),
                "version": pa.array([version] * len(files), pa.int64()),
                "_source_file": files,
            }
        )

    engine.append(TABLE, rows([f"f{index:03d}.csv" for index in range(50)], 0), properties={})
    versions = []
    for version in range(1, 9):
        reloaded = ["f010.csv", "f040.csv"]
        engine.append(TABLE, rows(reloaded, version), properties={}, replacing=reloaded)
        versions.append(engine._load_table(TABLE).current_snapshot().snapshot_id)
    table = engine._load_table(TABLE)
    assert len(table.current_snapshot().manifests(table.io)) <= 3
    for version, snapshot_id in enumerate(versions, start=1):
        seen = table.scan(snapshot_id=snapshot_id, row_filter="_source_file == 'f010.csv'")
        assert seen.to_arrow().column("version").to_pylist() == [version]
    assert table.scan().to_arrow().num_rows == 50


def test_appends_merge_manifests_so_the_manifest_list_stays_short(engine):
    appends = 2 * MIN_COUNT_TO_MERGE + 5
    for index in range(appends):
        engine.append(TABLE, orders(index), properties={})
    table = engine._load_table(TABLE)
    manifests = table.current_snapshot().manifests(table.io)
    assert len(table.metadata.snapshots) == appends
    assert len(manifests) <= MIN_COUNT_TO_MERGE
    assert table.scan().to_arrow().num_rows == appends


def test_a_table_created_without_the_properties_gets_them_with_its_next_commit(engine, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    outsider = SqlCatalog(
        "test",
        uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=(tmp_path / "warehouse").as_uri(),
    )
    outsider.create_namespace("sales")
    outsider.create_table(TABLE, schema=orders(0).schema, properties={"owner": "them"})
    assert "commit.manifest-merge.enabled" not in outsider.load_table(TABLE).properties

    engine.append(TABLE, orders(1), properties={})

    properties = outsider.load_table(TABLE).properties
    assert {key: properties[key] for key in FLAT_COMMIT_PROPERTIES} == FLAT_COMMIT_PROPERTIES
    assert properties["owner"] == "them"


def test_a_table_s_own_merge_setting_is_kept(engine, tmp_path):
    engine.append(TABLE, orders(1), properties={})
    with engine._load_table(TABLE).transaction() as transaction:
        transaction.set_properties({"commit.manifest-merge.enabled": "false"})
    for index in range(MIN_COUNT_TO_MERGE + 2):
        engine.append(TABLE, orders(index + 2), properties={})
    table = engine._load_table(TABLE)
    assert table.properties["commit.manifest-merge.enabled"] == "false"
    assert len(table.current_snapshot().manifests(table.io)) == MIN_COUNT_TO_MERGE + 3


# --- through the product: runs, maintenance, time travel --------------------------------


@pytest.mark.django_db(transaction=True)
def test_frequent_runs_make_a_table_due_before_the_interval(csv_ingestion, source_dir, settings):
    settings.AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS = 3600
    settings.AUTOLOADER_MAINTENANCE_AFTER_RUNS = 3
    run_once(csv_ingestion, source_dir, 0)
    assert maintenance_due()  # the first pass: never maintained
    passes = TableMaintenance.objects.count()

    run_once(csv_ingestion, source_dir, 1)
    run_once(csv_ingestion, source_dir, 2)
    assert maintenance_due() == []  # two runs since the pass, within the hour

    run_once(csv_ingestion, source_dir, 3)
    actions = maintenance_due()
    assert [action.action for action in actions] == [
        MaintenanceAction.COMPACT_FILES,
        MaintenanceAction.EXPIRE_SNAPSHOTS,
        MaintenanceAction.REMOVE_ORPHAN_FILES,
    ]
    assert all(not action.error for action in actions)
    assert TableMaintenance.objects.count() == passes + 3
    assert maintenance_due() == []  # the count starts again from this pass


@pytest.mark.django_db(transaction=True)
def test_runs_that_wrote_nothing_do_not_count(csv_ingestion, source_dir, settings):
    settings.AUTOLOADER_MAINTENANCE_AFTER_RUNS = 2
    run_once(csv_ingestion, source_dir, 0)
    maintenance_due()
    for _ in range(3):  # no new file: nothing written
        run = run_request(ingestion=Ingestion.objects.get(pk=csv_ingestion.pk))
        drain_queue()
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCESS and run.rows_written == 0
    assert maintenance_due() == []


@pytest.mark.django_db(transaction=True)
def test_the_count_trigger_off_leaves_maintenance_to_the_interval(
    csv_ingestion, source_dir, settings
):
    settings.AUTOLOADER_MAINTENANCE_AFTER_RUNS = 0
    run_once(csv_ingestion, source_dir, 0)
    maintenance_due()
    for index in range(1, 4):
        run_once(csv_ingestion, source_dir, index)
    assert maintenance_due() == []


@pytest.mark.django_db(transaction=True)
def test_a_snapshot_within_the_retention_stays_readable_through_merges_and_maintenance(
    csv_ingestion, source_dir, settings
):
    settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS = 24
    settings.AUTOLOADER_SNAPSHOT_RETAIN_LAST = 1
    settings.AUTOLOADER_COMPACT_MIN_FILES = 3
    settings.AUTOLOADER_ORPHAN_MIN_AGE_HOURS = 0
    runs = [run_once(csv_ingestion, source_dir, index) for index in range(MIN_COUNT_TO_MERGE + 5)]
    # Compaction rewrites the small files, expiry and orphan removal (of every unreferenced
    # file) run; every snapshot is younger than the retention.
    actions = maintenance_run(ingestion=csv_ingestion)
    assert {action.action: action.error for action in actions} == {
        MaintenanceAction.COMPACT_FILES: "",
        MaintenanceAction.EXPIRE_SNAPSHOTS: "",
        MaintenanceAction.REMOVE_ORPHAN_FILES: "",
    }
    assert (
        TableMaintenance.objects.get(
            ingestion=csv_ingestion, action=MaintenanceAction.COMPACT_FILES
        ).files_compacted
        >= 3
    )

    table = open_table(csv_ingestion.table_identifier)
    manifests = table.current_snapshot().manifests(table.io)
    assert len(manifests) <= MIN_COUNT_TO_MERGE
    for number in (0, 1, MIN_COUNT_TO_MERGE):  # before, at and after the first merge
        snapshot_id = runs[number].batches.get().snapshot_id
        travelled = table.scan(snapshot_id=snapshot_id).to_arrow()
        assert travelled.num_rows == 20 * (number + 1)
        assert len(set(travelled.column("_source_file").to_pylist())) == number + 1
    assert table.scan().to_arrow().num_rows == 20 * len(runs)
