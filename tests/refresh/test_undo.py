"""Undo: every destructive operation brings back the table and the processed-file history
exactly as they were before it, within its retention window; exactly-once holds across it."""

from datetime import timedelta
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.utils import timezone
from pyiceberg.exceptions import NoSuchTableError

from ingestions.errors import EngineError, PermissionDeniedError, RunInProgressError
from ingestions.models import Ingestion, ProcessedFile, Role, Run, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request
from refresh.errors import OperationNotUndoableError
from refresh.models import OperationStatus, RefreshOperation, Retention
from refresh.services import refresh_execute
from refresh.sync import operation_sync
from refresh.undo import refresh_undo, retention_expire, undo_preview

from ..helpers import FaultingEngine, drain_queue, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


def rows_of(ingestion) -> int | None:
    try:
        return open_table(ingestion.table_identifier).scan().to_arrow().num_rows
    except NoSuchTableError:
        return None


def history_of(ingestion) -> set[tuple]:
    """The history in force, with what each row says (not only the paths)."""
    return set(
        ProcessedFile.objects.filter(ingestion=ingestion).values_list(
            "path", "rows", "size_bytes", "run_id"
        )
    )


def execute(ingestion, actor, kind, **options):
    operation = refresh_execute(
        ingestion=ingestion, kind=kind, actor=actor, confirm=True, **options
    )
    drain_queue()  # the operation's run, if it triggered one, loads (and publishes)
    return operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))


def undo(operation, actor):
    return refresh_undo(operation=operation, actor=actor, confirm=True)


def run_once(ingestion) -> Run:
    run = run_request(ingestion=Ingestion.objects.get(pk=ingestion.pk))
    drain_queue()
    run.refresh_from_db()
    return run


CASES = [
    ("full_refresh", {}),
    ("full_refresh", {"mode": "drop_first"}),
    ("fresh_start", {}),
    ("fresh_start", {"mode": "drop_first"}),
    ("drop_table", {}),
    ("clear_processed_files", {}),
]


@pytest.mark.parametrize(("kind", "options"), CASES, ids=lambda value: str(value))
def test_undo_of_each_kind_restores_rows_and_history_then_a_run_loads_exactly_the_new_files(
    loaded, admin_user, source_dir, kind, options
):
    before_rows, before_history = rows_of(loaded), history_of(loaded)
    assert before_rows == 100 and len(before_history) == 4
    write_csv_files(source_dir, files=1, rows=10, start=4)  # arrives before the operation

    operation = execute(loaded, admin_user, kind, **options)
    assert operation.retention == Retention.KEPT
    assert operation.retained_until > timezone.now() + timedelta(days=6)
    changed = (rows_of(loaded), history_of(loaded))
    assert changed != (before_rows, before_history)  # the operation did change something

    preview = undo_preview(operation=operation, actor=admin_user).as_response()
    assert preview["undoable"], preview["blocked_by"]
    assert preview["restores"]["row_count"] in (100, None)  # None: the table is left as is
    assert preview["restores"]["history_files"] == 4

    operation = undo(operation, admin_user)

    assert operation.status == OperationStatus.UNDONE
    assert operation.retention == Retention.RESTORED
    assert rows_of(loaded) == 100
    assert history_of(loaded) == before_history
    # Exactly-once across undo: the next run loads the one file that was new before it.
    run = run_once(loaded)
    assert run.status == RunStatus.SUCCESS and run.files_loaded == 1
    assert rows_of(loaded) == 110


def test_undo_of_a_history_clear_loses_the_rows_loaded_since_and_says_so(loaded, admin_user):
    operation = execute(loaded, admin_user, "clear_processed_files")
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 0
    # Archived, not deleted: one generation bump, whatever the history's size.
    assert ProcessedFile.all_generations.filter(ingestion=loaded).count() == 4
    reload = run_once(loaded)
    # Every file again, each replacing its own rows (issue 24): no duplicates.
    assert reload.files_loaded == 4 and rows_of(loaded) == 100

    preview = undo_preview(operation=operation, actor=admin_user).as_response()
    assert preview["discards"]["runs_since"] == [reload.public_id]
    assert preview["discards"]["rows_loaded_since"] == 100
    assert preview["discards"]["row_count"] == 100

    undo(operation, admin_user)
    assert rows_of(loaded) == 100
    assert len(history_of(loaded)) == 4
    assert run_once(loaded).files_loaded == 0


def test_an_atomic_refresh_of_a_missing_table_is_undone_by_removing_it(
    csv_ingestion, admin_user, source_dir
):
    write_csv_files(source_dir, files=2, rows=5)
    operation = execute(csv_ingestion, admin_user, "full_refresh")
    assert operation.status == OperationStatus.PUBLISHED and rows_of(csv_ingestion) == 10

    undo(operation, admin_user)
    assert rows_of(csv_ingestion) is None
    assert not ProcessedFile.objects.filter(ingestion=csv_ingestion).exists()


def test_a_later_operation_must_be_undone_first_and_the_refusal_names_it(loaded, admin_user):
    first = execute(loaded, admin_user, "clear_processed_files")
    second = execute(loaded, admin_user, "full_refresh")

    with pytest.raises(OperationNotUndoableError, match=second.public_id):
        undo(first, admin_user)
    undo(second, admin_user)
    undo(RefreshOperation.objects.get(pk=first.pk), admin_user)
    assert rows_of(loaded) == 100 and len(history_of(loaded)) == 4


def test_undo_is_idempotent_and_audited(loaded, admin_user):
    operation = execute(loaded, admin_user, "drop_table")
    undone = undo(operation, admin_user)
    again = undo(RefreshOperation.objects.get(pk=operation.pk), admin_user)
    assert again.status == OperationStatus.UNDONE and again.undone_at == undone.undone_at
    entries = LogEntry.objects.filter(additional_data__operation="undo")
    assert entries.count() == 1
    assert entries.get().additional_data["actor"] == admin_user.username


def test_nothing_kept_nothing_to_undo(loaded, admin_user):
    operation = execute(loaded, admin_user, "drop_table", retain_days=0)
    assert operation.retention == Retention.NONE
    with pytest.raises(OperationNotUndoableError, match="kept nothing"):
        undo(operation, admin_user)


def test_an_operation_that_changed_nothing_cannot_be_undone(loaded, admin_user):
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True
    )
    failing = FaultingEngine({"append": EngineError("the cluster went away")})
    run_execute(run_id=operation.run.public_id, engine=failing)
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.FAILED  # nothing was published
    with pytest.raises(OperationNotUndoableError, match="changed nothing"):
        undo(operation, admin_user)
    # What it kept is let go at once.
    assert retention_expire() == [operation.public_id]
    assert "autoloader_undo" not in str(open_table(loaded.table_identifier).metadata.refs)


def test_undo_needs_the_operations_permission_and_confirmation(loaded, admin_user, member):
    operation = execute(loaded, admin_user, "full_refresh")
    viewer = member(Role.VIEWER).user
    with pytest.raises(PermissionDeniedError):
        refresh_undo(operation=operation, actor=viewer, confirm=True)
    from refresh.errors import ConfirmationRequiredError

    with pytest.raises(ConfirmationRequiredError):
        refresh_undo(operation=operation, actor=admin_user, confirm="true")
    assert rows_of(loaded) == 100  # the full refresh's new version is still live


def test_undo_waits_for_a_run_in_progress(loaded, admin_user, source_dir):
    operation = execute(loaded, admin_user, "clear_processed_files")
    run_request(ingestion=loaded)  # queued: it would load into the table undo restores
    with pytest.raises(RunInProgressError):
        undo(operation, admin_user)


def test_expiry_purges_what_was_kept_then_undo_is_refused(loaded, admin_user, tmp_path):
    operation = execute(loaded, admin_user, "full_refresh")
    table = open_table(loaded.table_identifier)
    old_files = {
        task.file.file_path
        for task in table.scan(
            snapshot_id=operation.restore_point["table"]["snapshot_id"]
        ).plan_files()
    }
    assert all(Path(path.removeprefix("file://")).exists() for path in old_files)
    assert operation.retained_bytes > 0

    assert retention_expire() == []  # still within the window
    RefreshOperation.objects.filter(pk=operation.pk).update(
        retained_until=timezone.now() - timedelta(seconds=1)
    )
    assert retention_expire() == [operation.public_id]

    assert not any(Path(path.removeprefix("file://")).exists() for path in old_files)
    assert rows_of(loaded) == 100  # the live table is untouched
    operation.refresh_from_db()
    assert operation.retention == Retention.EXPIRED and operation.retained_bytes == 0
    with pytest.raises(OperationNotUndoableError, match="retention"):
        undo(operation, admin_user)
    # The archived history the refresh replaced is purged too; the live one stays.
    assert ProcessedFile.all_generations.filter(ingestion=loaded).count() == 4


def test_expiry_of_a_drop_purges_the_table_set_aside(loaded, admin_user):
    operation = execute(loaded, admin_user, "drop_table", retain_days=1)
    set_aside = operation.restore_point["table"]["table"]
    assert open_table(set_aside).scan().to_arrow().num_rows == 100
    retention_expire(now=timezone.now() + timedelta(days=1, seconds=1))
    with pytest.raises(NoSuchTableError):
        open_table(set_aside)


# --- REST ---------------------------------------------------------------------------------


def test_rest_undo_previews_then_undoes_and_every_answer_says_what_is_kept(loaded, admin_client):
    response = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh",
        {"confirm": True, "retain_days": 3},
        format="json",
    )
    assert response.status_code == 202, response.json()
    retention = response.json()["retention"]
    assert (retention["state"], retention["retain_days"]) == ("kept", 3)
    assert retention["actions"]["undo"].startswith("POST /api/v1/refresh-operations/op-")
    drain_queue()
    url = f"/api/v1/refresh-operations/{response.json()['operation_id']}/undo"

    preview = admin_client.post(url, {"dry_run": True}, format="json")
    assert preview.status_code == 200
    body = preview.json()
    assert body["dry_run"] is True and body["undoable"] is True and body["blocked_by"] is None
    assert body["restores"]["row_count"] == 100 and body["restores"]["history_files"] == 4
    assert rows_of(loaded) == 100  # a reload of the same 4 files: the preview changed nothing

    refused = admin_client.post(url, {}, format="json")
    assert (refused.status_code, refused.json()["error_code"]) == (400, "CONFIRMATION_REQUIRED")
    undone = admin_client.post(url, {"confirm": True}, format="json")
    assert undone.status_code == 200, undone.json()
    assert undone.json()["status"] == "undone"
    assert undone.json()["undo"]["restored"]["row_count"] == 100
    assert undone.json()["retention"]["state"] == "restored"

    again = admin_client.post(url, {"dry_run": True}, format="json").json()
    assert again["undoable"] is False
    assert again["blocked_by"]["error_code"] == "OPERATION_NOT_UNDOABLE"


def test_rest_undo_refusals(loaded, admin_client, member, other_tenant):
    preview = admin_client.delete("/api/v1/ingestions/sales/table?dry_run=true").json()
    assert preview["retention"]["retain_days"] == 7
    assert preview["retention"]["storage_kept_bytes"] > 0  # the table is set aside, not purged
    drop = admin_client.delete("/api/v1/ingestions/sales/table?confirm=true")
    url = f"/api/v1/refresh-operations/{drop.json()['operation_id']}/undo"

    stranger = member(Role.ADMIN, tenant_obj=other_tenant)
    assert stranger.post(url, {"confirm": True}, format="json").status_code == 404
    viewer = member(Role.VIEWER)
    assert viewer.post(url, {"confirm": True}, format="json").status_code == 403
    typo = admin_client.post(url, {"confrim": True}, format="json")
    assert (typo.status_code, typo.json()["error_code"]) == (400, "VALIDATION_ERROR")
    assert rows_of(loaded) is None  # still dropped

    too_long = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh",
        {"confirm": True, "retain_days": 10_000},
        format="json",
    )
    assert (too_long.status_code, too_long.json()["error_code"]) == (400, "VALIDATION_ERROR")

    later = admin_client.delete("/api/v1/ingestions/sales/processed-files?confirm=true")
    assert later.status_code == 200
    blocked = admin_client.post(url, {"confirm": True}, format="json")
    assert blocked.status_code == 409
    assert later.json()["operation_id"] in blocked.json()["detail"]


def test_an_ingestion_chooses_its_own_retention(loaded, admin_client):
    response = admin_client.patch("/api/v1/ingestions/sales", {"retain_days": 0}, format="json")
    assert response.status_code == 200 and response.json()["retain_days"] == 0
    drop = admin_client.delete("/api/v1/ingestions/sales/table?confirm=true").json()
    assert drop["retention"]["state"] == "none"
    assert RefreshOperation.objects.get().retention == Retention.NONE


def test_undo_deletes_the_version_it_throws_away(loaded, admin_user):
    operation = execute(loaded, admin_user, "full_refresh")
    table = open_table(loaded.table_identifier)
    new_files = {task.file.file_path for task in table.scan().plan_files()}
    old_files = {
        task.file.file_path
        for task in table.scan(
            snapshot_id=operation.restore_point["table"]["snapshot_id"]
        ).plan_files()
    }
    assert new_files and not new_files & old_files

    undo(operation, admin_user)

    assert not any(Path(path.removeprefix("file://")).exists() for path in new_files)
    assert all(Path(path.removeprefix("file://")).exists() for path in old_files)
    assert rows_of(loaded) == 100


def test_the_operation_tells_its_whole_story(loaded, admin_client):
    accepted = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh", {"confirm": True}, format="json"
    ).json()
    assert accepted["status"] == "accepted"  # the PRD's synchronous answer
    assert accepted["phase"] == "queued" and accepted["run"]["status"] == "QUEUED"
    assert all(step["timestamp"] for step in accepted["operations"])  # the PRD's shape
    url = f"/api/v1/refresh-operations/{accepted['operation_id']}"

    drain_queue()
    published = admin_client.get(url).json()
    assert (published["status"], published["phase"]) == ("published", "published")
    assert published["run"]["rows_written"] == 100
    assert published["publish"]["published_at"]

    admin_client.post(f"{url}/undo", {"confirm": True}, format="json")
    undone = admin_client.get(url).json()
    assert undone["phase"] == "undone"
    assert undone["undo"]["requested_by"] and undone["undo"]["finished_at"]
