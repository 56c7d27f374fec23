"""Table maintenance on real tables: expiry, compaction, orphan removal, records and the API."""

import os
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.utils import timezone

from console.management.commands.autoloader_worker import Command
from ingestions import maintenance
from ingestions.engines import load_engine
from ingestions.engines.iceberg import IcebergEngine
from ingestions.maintenance import (
    SNAPSHOT_MAINTENANCE_KEY,
    maintenance_due,
    maintenance_run,
)
from ingestions.models import (
    CommitStatus,
    Ingestion,
    MaintenanceAction,
    ProcessedFile,
    Role,
    RunBatch,
    RunStatus,
    TableMaintenance,
)
from ingestions.run_executor import run_execute
from ingestions.runs import SNAPSHOT_BATCH_KEY, run_request
from ingestions.staging import batch_resolve

from ..factories import IngestionFactory
from ..helpers import open_table, run_once, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def maintenance_policy(settings):
    """Everything is due at once: no retention, compaction from 3 small files."""
    settings.AUTOLOADER_SNAPSHOT_RETENTION_HOURS = 0
    settings.AUTOLOADER_SNAPSHOT_RETAIN_LAST = 1
    settings.AUTOLOADER_COMPACT_MIN_FILES = 3
    settings.AUTOLOADER_MAINTENANCE_INTERVAL_SECONDS = 3600
    return settings


def lineage(ingestion) -> Counter:
    rows = open_table(ingestion.table_identifier).scan().to_arrow()
    return Counter(rows.column("_source_file").to_pylist())


def table_rows(ingestion) -> list[tuple]:
    rows = open_table(ingestion.table_identifier).scan().to_arrow()
    return sorted(zip(*(rows.column(name).to_pylist() for name in rows.column_names), strict=True))


def history_of(ingestion) -> Counter:
    return Counter(
        dict(ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", "rows"))
    )


def data_file_count(ingestion) -> int:
    return len(list(open_table(ingestion.table_identifier).scan().plan_files()))


def table_folder(ingestion) -> Path:
    return Path(urlparse(open_table(ingestion.table_identifier).location()).path)


def console_page(api_client, ingestion) -> str:
    """The ingestion's console page, seen by the same user logged in to the console."""
    client = Client()
    client.force_login(api_client.user)
    response = client.get(f"/ingestions/{ingestion.public_id}/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def small_runs(csv_ingestion, source_dir):
    """The csv ingestion after 5 runs of one small file each: 5 snapshots, 5 data files."""
    return [run_once(csv_ingestion, source_dir, index) for index in range(5)]


def test_maintenance_compacts_expires_and_removes_orphans_keeping_what_is_needed(
    csv_ingestion, small_runs, monkeypatch
):
    table_name = csv_ingestion.table_identifier
    engine = load_engine()
    # An undo window holds the table as it was after run 2 (as a refresh's `retain` does).
    after_run_2 = small_runs[1].batches.get().snapshot_id
    with open_table(table_name).manage_snapshots() as refs:
        refs.create_tag(after_run_2, "autoloader_undo_test")
    tag_point = {"kind": "snapshot", "tag": "autoloader_undo_test", "snapshot_id": after_run_2}
    rows_before, lineage_before = table_rows(csv_ingestion), lineage(csv_ingestion)
    assert lineage_before == history_of(csv_ingestion)
    # Run 4's batch is PENDING again, as if its worker died before recording the commit.
    pending = RunBatch.objects.get(run=small_runs[3])
    pending_snapshot = pending.snapshot_id
    RunBatch.objects.filter(pk=pending.pk).update(status=CommitStatus.PENDING, snapshot_id=None)
    ProcessedFile.objects.filter(run=small_runs[3]).delete()
    monkeypatch.setattr(maintenance, "PENDING_BATCH_MARGIN", timezone.timedelta(0))
    # Files no metadata names: one old enough to be an orphan, one a write may still own.
    data_folder = table_folder(csv_ingestion) / "data"
    old_orphan, fresh_orphan = data_folder / "old-orphan.parquet", data_folder / "fresh.parquet"
    old_orphan.write_bytes(b"x" * 100)
    fresh_orphan.write_bytes(b"y" * 100)
    two_hours_ago = time.time() - 7200
    os.utime(old_orphan, (two_hours_ago, two_hours_ago))
    snapshots_before = {snapshot.snapshot_id for snapshot in engine.list_snapshots(table_name)}
    assert data_file_count(csv_ingestion) == 5

    done = maintenance_run(ingestion=csv_ingestion)

    assert [record.action for record in done] == [
        MaintenanceAction.COMPACT_FILES,
        MaintenanceAction.EXPIRE_SNAPSHOTS,
        MaintenanceAction.REMOVE_ORPHAN_FILES,
    ]
    assert all(record.error == "" and record.finished_at for record in done)
    compaction, expiry, orphans = done
    # Compaction: 5 files became 1; every row and its lineage survive exactly.
    assert (compaction.files_compacted, compaction.files_written) == (5, 1)
    assert data_file_count(csv_ingestion) == 1
    assert table_rows(csv_ingestion) == rows_before
    assert lineage(csv_ingestion) == lineage_before
    rewrite = engine.list_snapshots(table_name)[-1]
    assert rewrite.snapshot_id == compaction.snapshot_id
    assert rewrite.properties[SNAPSHOT_MAINTENANCE_KEY] == "compact_files"
    assert SNAPSHOT_BATCH_KEY not in rewrite.properties
    # Expiry: runs 1 and 3 went; the undo tag's snapshot and the pending batch's stay.
    snapshots_after = {snapshot.snapshot_id for snapshot in engine.list_snapshots(table_name)}
    expired = snapshots_before - snapshots_after
    assert {small_runs[0].batches.get().snapshot_id, small_runs[2].batches.get().snapshot_id} == (
        expired
    )
    assert expiry.snapshots_expired == 2
    assert tag_point["snapshot_id"] in snapshots_after
    assert pending_snapshot in snapshots_after
    assert batch_resolve(batch=pending, engine=engine) == CommitStatus.COMMITTED
    assert history_of(csv_ingestion) == lineage_before
    # Orphans: the old file went, the fresh one stays; nothing the table needs went.
    assert not old_orphan.exists()
    assert fresh_orphan.exists()
    assert orphans.files_removed >= 1
    assert orphans.bytes_freed >= 100
    assert table_rows(csv_ingestion) == rows_before
    engine.restore(table_name, tag_point)  # the undo window still works
    assert sum(lineage(csv_ingestion).values()) == 2 * 20
    assert TableMaintenance.objects.filter(ingestion=csv_ingestion).count() == 3


class RacingEngine(IcebergEngine):
    """The real engine, with a run committing to the table just after maintenance read it."""

    def __init__(self, race):
        real = load_engine()
        super().__init__(
            catalog_name=real.catalog_name,
            catalog_uri=real.catalog_uri,
            warehouse=real.warehouse,
            properties=real.properties,
        )
        self.race = race

    def _load_table(self, table_name):
        table = super()._load_table(table_name)
        race, self.race = self.race, None
        if race is not None:
            race()
        return table


def test_a_run_committing_during_a_compaction_makes_it_fail_and_loses_nothing(
    csv_ingestion, small_runs, source_dir
):
    racer = RacingEngine(lambda: run_once(csv_ingestion, source_dir, 99))

    done = maintenance_run(ingestion=csv_ingestion, engine=racer)

    compaction = done[0]
    assert compaction.action == MaintenanceAction.COMPACT_FILES
    assert "could not compact" in compaction.error
    assert compaction.files_compacted == 0
    history = history_of(csv_ingestion)
    assert len(history) == 6
    assert lineage(csv_ingestion) == history
    # The next turn compacts them all.
    again = maintenance_run(ingestion=csv_ingestion)
    assert again[0].files_compacted == 6
    assert lineage(csv_ingestion) == history


class CompactingFirst:
    """The real engine, where a compaction commits just before each append of a run."""

    def __init__(self):
        self._engine = load_engine()

    def append(self, table_name, data, **options):
        self._engine.compact_files(
            table_name,
            small_file_bytes=32 * 1024**2,
            min_files=2,
            max_bytes=1024**3,
            properties={SNAPSHOT_MAINTENANCE_KEY: "compact_files"},
        )
        return self._engine.append(table_name, data, **options)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_a_compaction_committing_during_a_run_loses_none_of_its_rows(
    csv_ingestion, small_runs, source_dir
):
    write_csv_files(source_dir, files=2, rows=20, start=50)
    run = run_request(ingestion=Ingestion.objects.get(pk=csv_ingestion.pk))

    run = run_execute(run_id=run.public_id, engine=CompactingFirst())

    assert run.status == RunStatus.SUCCESS, run.error
    history = history_of(csv_ingestion)
    assert len(history) == 7
    assert lineage(csv_ingestion) == history
    assert data_file_count(csv_ingestion) < 7


def test_the_worker_maintains_a_table_once_per_interval_and_never_while_busy(
    csv_ingestion, small_runs, source_dir, django_assert_num_queries
):
    Command()._reap_once()  # the worker's reaper pass
    actions = TableMaintenance.objects.filter(ingestion=csv_ingestion).values_list("action")
    assert {action for (action,) in actions} == set(MaintenanceAction.values)
    # Maintained already: nothing is due, and finding that out is one query.
    with django_assert_num_queries(1):
        assert maintenance_due() == []
    # An interval later, with a run finished since, it is due again, but not while busy.
    later = timezone.now() + timezone.timedelta(hours=2)
    busy = run_request(ingestion=Ingestion.objects.get(pk=csv_ingestion.pk))
    assert maintenance_due(now=later) == []
    run_execute(run_id=busy.public_id)
    assert len(maintenance_due(now=later)) == 3


def test_maintenance_is_listed_by_the_api_to_members_and_hidden_from_other_tenants(
    csv_ingestion, small_runs, member, other_tenant
):
    maintenance_run(ingestion=csv_ingestion)
    viewer = member(Role.VIEWER)
    url = f"/api/v1/ingestions/{csv_ingestion.public_id}/maintenance"

    response = viewer.get(url, {"limit": 2})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    newest = body["results"][0]
    assert newest["action"] == "remove_orphan_files"
    assert newest["table"] == csv_ingestion.table_identifier
    assert set(newest) >= {"started_at", "finished_at", "snapshots_expired", "bytes_freed"}
    # Another tenant's member: the ingestion does not exist for them.
    IngestionFactory(tenant=other_tenant, public_id="theirs", destination_table="raw.theirs")
    outsider = member(Role.ADMIN, tenant_obj=other_tenant)
    assert outsider.get(url).status_code == 404
    schema = viewer.get("/api/schema/").content.decode()
    assert "ingestions_maintenance_list" in schema


def test_orphan_removal_spares_the_files_of_a_table_set_aside_at_the_same_location(db, tmp_path):
    table_name = "acme__raw.orders"
    rows = pa.table({"id": [1, 2, 3]})
    load_engine().append(table_name, rows, properties={})
    # A drop kept for undo renames the table; its files stay where a new table is created.
    point = load_engine().retire(table_name, name="autoloader_undo_1")
    load_engine().append(table_name, pa.table({"id": [4]}), properties={})
    an_hour_from_now = timezone.now() + timezone.timedelta(hours=1)

    removed = load_engine().remove_orphan_files(table_name, older_than=an_hour_from_now)

    assert removed.files_removed == 0
    assert open_table(point["table"]).scan().to_arrow().num_rows == 3
    load_engine().restore(table_name, point)
    assert open_table(table_name).scan().to_arrow().num_rows == 3


def test_an_ingestion_with_maintenance_off_is_left_as_its_runs_wrote_it(
    csv_ingestion, small_runs, member
):
    admin = member(Role.ADMIN)
    url = f"/api/v1/ingestions/{csv_ingestion.public_id}"

    response = admin.patch(url, {"maintenance_enabled": False}, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["maintenance_enabled"] is False
    Command()._reap_once()
    assert not TableMaintenance.objects.filter(ingestion=csv_ingestion).exists()
    assert data_file_count(csv_ingestion) == 5
    assert "Maintenance is off for this ingestion" in console_page(admin, csv_ingestion)
    # Turned back on, the next reaper pass maintains it; both changes are audited.
    assert admin.patch(url, {"maintenance_enabled": True}, format="json").status_code == 200
    Command()._reap_once()
    assert data_file_count(csv_ingestion) == 1
    changes = [
        entry.changes["maintenance_enabled"]
        for entry in LogEntry.objects.get_for_object(csv_ingestion).order_by("timestamp")
        if "maintenance_enabled" in (entry.changes or {})
    ]
    assert changes[-2:] == [["True", "False"], ["False", "True"]]


def test_an_ingestions_own_snapshot_retention_keeps_its_snapshots_for_time_travel(
    csv_ingestion, small_runs, member
):
    """The server keeps no snapshot (retention 0 in these tests); this ingestion keeps 48 h."""
    admin = member(Role.ADMIN)
    response = admin.patch(
        f"/api/v1/ingestions/{csv_ingestion.public_id}",
        {"snapshot_retention_hours": 48},
        format="json",
    )
    assert response.status_code == 200, response.content
    csv_ingestion.refresh_from_db()
    engine = load_engine()
    snapshots_before = engine.list_snapshots(csv_ingestion.table_identifier)

    done = maintenance_run(ingestion=csv_ingestion)

    expiry = next(item for item in done if item.action == MaintenanceAction.EXPIRE_SNAPSHOTS)
    assert expiry.snapshots_expired == 0
    assert {item.snapshot_id for item in snapshots_before} <= {
        item.snapshot_id for item in engine.list_snapshots(csv_ingestion.table_identifier)
    }
    assert "kept for time travel for 48 h" in console_page(admin, csv_ingestion)
    # The table is maintained again while its last run is within the 48 h, then no more.
    in_a_day = timezone.now() + timezone.timedelta(hours=25)
    assert csv_ingestion in maintenance.ingestions_due_for_maintenance(now=in_a_day)
    in_three_days = timezone.now() + timezone.timedelta(hours=73)
    TableMaintenance.objects.filter(ingestion=csv_ingestion).update(
        started_at=in_three_days - timezone.timedelta(hours=2)
    )
    assert maintenance.ingestions_due_for_maintenance(now=in_three_days) == []
    # Back to the server's retention (none here), the next pass expires them.
    admin.patch(
        f"/api/v1/ingestions/{csv_ingestion.public_id}",
        {"snapshot_retention_hours": None},
        format="json",
    )
    csv_ingestion.refresh_from_db()
    later = maintenance_run(ingestion=csv_ingestion)
    expired = [item for item in later if item.action == MaintenanceAction.EXPIRE_SNAPSHOTS]
    assert expired[0].snapshots_expired >= 5


@pytest.mark.parametrize(
    "body",
    [
        {"snapshot_retention_hours": -1},
        {"snapshot_retention_hours": 24 * 367},
        {"snapshot_retention_hours": "a day"},
        {"maintenance_enabled": "sometimes"},
    ],
)
def test_a_bad_maintenance_policy_is_refused_and_changes_nothing(csv_ingestion, member, body):
    admin = member(Role.ADMIN)

    response = admin.patch(f"/api/v1/ingestions/{csv_ingestion.public_id}", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert next(iter(body)) in response.json()["detail"]
    csv_ingestion.refresh_from_db()
    assert (csv_ingestion.maintenance_enabled, csv_ingestion.snapshot_retention_hours) == (
        True,
        None,
    )


def test_a_viewer_cannot_change_the_maintenance_policy(csv_ingestion, member):
    viewer = member(Role.VIEWER)

    response = viewer.patch(
        f"/api/v1/ingestions/{csv_ingestion.public_id}",
        {"maintenance_enabled": False},
        format="json",
    )

    assert response.status_code == 403
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.maintenance_enabled is True
