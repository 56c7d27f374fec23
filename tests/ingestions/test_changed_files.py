"""Exactly once by content (issue 24): a file loaded before that changed in place is seen,
and the ingestion's policy says what a run does with it: reload (its new rows replace its
old ones in one commit), warn (load nothing, flag it) or ignore (today's behaviour)."""

import os
import threading
from datetime import timedelta

import pyarrow as pa
import pytest
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.models import ChangedFiles, CommitStatus, ProcessedFile, Run, RunBatch, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_request, runs_recover_stale

from ..factories import IngestionFactory
from ..helpers import FaultyEngine, WorkerKilled, drain_queue, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

OLD_AMOUNTS = [0.0, 1.5, 3.0, 4.5, 6.0]  # write_csv_files' amounts for 5 rows
NEW_CONTENT = "id,name,amount\n1,corrected,1275.00\n2,corrected,20.00\n3,added,30.00\n"
NEW_AMOUNTS = [20.0, 30.0, 1275.0]


@pytest.fixture
def loaded(tenant, source_dir):
    """`sales`: three files of five rows, loaded."""
    write_csv_files(source_dir, files=3, rows=5)
    ingestion = IngestionFactory(
        tenant=tenant, public_id="sales", source_uri=str(source_dir), destination_table="raw.sales"
    )
    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)
    assert run.status == RunStatus.SUCCESS, run.error
    return ingestion


def correct_in_place(path) -> None:
    """Rewrite a loaded file, as someone fixing a data quality issue would."""
    stat = path.stat()
    path.write_text(NEW_CONTENT)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def amounts_by_file(ingestion) -> dict[str, list[float]]:
    table = (
        open_table(ingestion.table_identifier)
        .scan(selected_fields=("_source_file", "amount"))
        .to_arrow()
    )
    found: dict[str, list[float]] = {}
    for row in table.to_pylist():
        found.setdefault(row["_source_file"], []).append(row["amount"])
    return {path: sorted(values) for path, values in found.items()}


def test_a_corrected_file_replaces_its_rows_in_one_commit_and_a_reader_sees_old_or_new(
    loaded, source_dir
):
    was_size = (source_dir / "part-0001.csv").stat().st_size
    before = open_table(loaded.table_identifier).metadata
    versions_before, snapshots_before = len(before.metadata_log), len(before.snapshots)
    correct_in_place(source_dir / "part-0001.csv")
    seen, stop = [], threading.Event()

    def reader():
        # Another Iceberg reader polls the file's rows all through the run.
        while not stop.is_set():
            seen.append(amounts_by_file(loaded).get("part-0001.csv"))

    poller = threading.Thread(target=reader)
    poller.start()
    try:
        run = run_execute(run_id=run_request(ingestion=loaded).public_id)
    finally:
        stop.set()
        poller.join()

    assert run.status == RunStatus.SUCCESS, run.error
    assert run.files_changed == 1
    assert run.changed_files == [
        {
            "path": "part-0001.csv",
            "action": "reloaded",
            "size_bytes": len(NEW_CONTENT),
            "was_size_bytes": was_size,
        }
    ]
    assert run.files_loaded == 1 and run.rows_written == 3
    by_file = amounts_by_file(loaded)
    assert by_file["part-0001.csv"] == NEW_AMOUNTS
    assert by_file["part-0000.csv"] == by_file["part-0002.csv"] == OLD_AMOUNTS
    # One commit (one new metadata version): the old rows out and the new in, together.
    table = open_table(loaded.table_identifier)
    assert len(table.metadata.metadata_log) == versions_before + 1
    # ... and one snapshot: an overwrite that names the run, like any batch's commit.
    assert len(table.metadata.snapshots) == snapshots_before + 1
    summary = table.current_snapshot().summary
    assert summary.operation.value == "overwrite"
    assert summary["autoloader.run-id"] == run.public_id
    # Copy-on-write: the data file of all three files out (15 rows), its 10 other rows
    # written again with the file's 3 new ones.
    assert (summary["deleted-records"], summary["added-records"]) == ("15", "13")
    assert summary["total-records"] == "13"
    # Never neither, never both: every state a reader saw is the old file or the new one.
    assert seen and all(state in (OLD_AMOUNTS, NEW_AMOUNTS) for state in seen), seen
    # The history knows the new file, and which run replaced it.
    entry = ProcessedFile.objects.get(ingestion=loaded, path="part-0001.csv")
    assert (entry.size_bytes, entry.rows, entry.run_id) == (len(NEW_CONTENT), 3, run.pk)
    assert entry.modified_ns == (source_dir / "part-0001.csv").stat().st_mtime_ns  # as listed
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 3

    # Nothing changed since: the next run finds nothing to do.
    again = run_execute(run_id=run_request(ingestion=loaded).public_id)
    assert (again.files_found, again.files_changed) == (0, 0)


def test_a_reload_leaves_data_files_without_the_files_rows_untouched(tenant, source_dir):
    """Only data files holding the changed file's rows are dropped or rewritten. A later
    run's data file of `a.csv` and `z.csv` (whose `_source_file` bounds take in
    `part-0000.csv`, so metadata alone cannot rule it out) stays in the new snapshot."""
    write_csv_files(source_dir, files=1, rows=5)
    ingestion = IngestionFactory(
        tenant=tenant, public_id="sales", source_uri=str(source_dir), destination_table="raw.sales"
    )
    run_execute(run_id=run_request(ingestion=ingestion).public_id)
    for name in ("a", "z"):
        (source_dir / f"{name}.csv").write_text("id,name,amount\n9,later,9.00\n")
    run_execute(run_id=run_request(ingestion=ingestion).public_id)
    table = open_table(ingestion.table_identifier)
    later = {task.file.file_path for task in table.scan(row_filter="name == 'later'").plan_files()}
    assert len(later) == 1
    correct_in_place(source_dir / "part-0000.csv")

    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert (run.status, run.files_changed) == (RunStatus.SUCCESS, 1)
    now = {
        task.file.file_path for task in open_table(ingestion.table_identifier).scan().plan_files()
    }
    assert later <= now  # neither dropped nor rewritten
    assert amounts_by_file(ingestion) == {
        "part-0000.csv": NEW_AMOUNTS,
        "a.csv": [9.0],
        "z.csv": [9.0],
    }


@pytest.mark.parametrize("policy", [ChangedFiles.WARN, ChangedFiles.IGNORE])
def test_warn_and_ignore_load_nothing_and_say_so_on_the_run(loaded, source_dir, policy):
    loaded.changed_files = policy
    loaded.save(update_fields=["changed_files"])
    correct_in_place(source_dir / "part-0002.csv")

    run = run_execute(run_id=run_request(ingestion=loaded).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert run.files_changed == 1 and run.files_loaded == 0
    assert [(item["path"], item["action"]) for item in run.changed_files] == [
        ("part-0002.csv", "warned" if policy == ChangedFiles.WARN else "ignored")
    ]
    assert amounts_by_file(loaded)["part-0002.csv"] == OLD_AMOUNTS  # the old rows stay


@pytest.mark.parametrize("policy", [ChangedFiles.WARN, ChangedFiles.IGNORE])
def test_a_change_is_reported_by_the_first_run_that_sees_it_and_again_only_if_it_changes_again(
    loaded, source_dir, policy
):
    from webhooks.models import WebhookEvent

    loaded.changed_files = policy
    loaded.save(update_fields=["changed_files"])
    correct_in_place(source_dir / "part-0002.csv")
    first = run_execute(run_id=run_request(ingestion=loaded).public_id)
    events = WebhookEvent.objects.filter(event="file.changed").count()

    second = run_execute(run_id=run_request(ingestion=loaded).public_id)

    assert first.files_changed == 1
    # Not flagged again, no second file.changed: the file is as the first run reported it.
    assert (second.files_changed, second.changed_files) == (0, [])
    assert WebhookEvent.objects.filter(event="file.changed").count() == events
    # The old rows stay, and the verify report still counts the file as changed.
    assert amounts_by_file(loaded)["part-0002.csv"] == OLD_AMOUNTS
    assert ProcessedFile.objects.get(ingestion=loaded, path="part-0002.csv").noticed_change

    # Changed once more: reported once more.
    correct_in_place(source_dir / "part-0002.csv")
    third = run_execute(run_id=run_request(ingestion=loaded).public_id)
    assert [item["path"] for item in third.changed_files] == ["part-0002.csv"]


@pytest.mark.parametrize("after_real_call", [True, False], ids=["after-commit", "before-commit"])
def test_a_worker_killed_mid_reload_leaves_the_new_content_exactly_once(
    loaded, source_dir, after_real_call
):
    correct_in_place(source_dir / "part-0001.csv")
    run = run_request(ingestion=loaded)
    dying = FaultyEngine(
        load_engine(),
        fail_on="append",
        after_real_call=after_real_call,
        exception=WorkerKilled(),
    )
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.public_id, engine=dying)
    # Before the recovery: the old rows or the new ones, whole.
    assert amounts_by_file(loaded)["part-0001.csv"] == (
        NEW_AMOUNTS if after_real_call else OLD_AMOUNTS
    )
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert runs_recover_stale() == [run.public_id]

    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    by_file = amounts_by_file(loaded)
    assert by_file["part-0001.csv"] == NEW_AMOUNTS
    assert by_file["part-0000.csv"] == by_file["part-0002.csv"] == OLD_AMOUNTS
    assert ProcessedFile.objects.get(ingestion=loaded, path="part-0001.csv").rows == 3
    assert not RunBatch.objects.filter(status=CommitStatus.PENDING).exists()


def test_the_policy_is_set_on_create_and_edit_and_refuses_anything_else(
    admin_client, tenant, source_dir
):
    body = {
        "id": "orders",
        "name": "Orders",
        "source": {"uri": str(source_dir), "format": "csv"},
        "destination": {"table": "raw.orders"},
    }
    created = admin_client.post("/api/v1/ingestions", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["changed_files"] == "reload"  # the default of a new ingestion

    changed = admin_client.patch(
        "/api/v1/ingestions/orders", {"changed_files": "warn"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["changed_files"] == "warn"

    refused = admin_client.patch(
        "/api/v1/ingestions/orders", {"changed_files": "append"}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "VALIDATION_ERROR"


# --- files gone from the source ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["keep", "remove"])
def test_a_file_gone_from_the_source_is_named_and_removed_only_when_asked(
    loaded, source_dir, policy
):
    loaded.gone_files = policy
    loaded.save(update_fields=["gone_files"])
    (source_dir / "part-0000.csv").unlink()
    versions = len(open_table(loaded.table_identifier).metadata.metadata_log)

    run = run_execute(run_id=run_request(ingestion=loaded).public_id)

    assert run.status == RunStatus.SUCCESS, run.error
    assert (run.files_gone, run.gone_files) == (1, ["part-0000.csv"])
    assert run.gone_removed is (policy == "remove")
    remaining = set(amounts_by_file(loaded))
    history = set(ProcessedFile.objects.filter(ingestion=loaded).values_list("path", flat=True))
    if policy == "remove":
        assert remaining == history == {"part-0001.csv", "part-0002.csv"}
        # One commit removed them: undoable like any change of rows (time travel, undo).
        assert len(open_table(loaded.table_identifier).metadata.metadata_log) == versions + 1
    else:
        assert remaining == history == {"part-0000.csv", "part-0001.csv", "part-0002.csv"}


def test_a_source_that_looks_emptied_is_reported_not_obeyed(loaded, source_dir):
    """More than half the history gone at once (an unmounted share, a moved prefix): the
    rows are kept, whatever the policy says."""
    loaded.gone_files = "remove"
    loaded.save(update_fields=["gone_files"])
    for name in ("part-0000.csv", "part-0001.csv"):
        (source_dir / name).unlink()

    run = run_execute(run_id=run_request(ingestion=loaded).public_id)

    assert run.files_gone == 2 and run.gone_removed is False
    assert set(amounts_by_file(loaded)) == {"part-0000.csv", "part-0001.csv", "part-0002.csv"}


# --- verify a table against its source ---------------------------------------------------


def test_verify_reports_each_files_rows_and_what_changed_in_the_source(
    loaded, source_dir, admin_client
):
    url = f"/api/v1/ingestions/{loaded.public_id}/verify"
    clean = admin_client.post(url).json()
    assert clean["consistent"] is True, clean
    assert clean["table"]["rows"] == clean["history"]["rows"] == 15
    assert clean["counts"] == dict.fromkeys(
        ("rows_differ", "missing_from_table", "changed", "gone", "never_loaded", "unknown"), 0
    )

    # The source moves on; someone writes rows the history does not know.
    correct_in_place(source_dir / "part-0001.csv")
    (source_dir / "part-0002.csv").unlink()
    write_csv_files(source_dir, files=1, rows=2, start=7)
    load_engine().append(
        loaded.table_identifier,
        open_table(loaded.table_identifier)
        .scan(limit=1)
        .to_arrow()
        .set_column(3, "_source_file", pa.array(["elsewhere.csv"])),
        properties={},
    )

    report = admin_client.post(url).json()

    assert report["consistent"] is False
    assert report["counts"] == {
        "rows_differ": 0,
        "missing_from_table": 0,
        "changed": 1,
        "gone": 1,
        "never_loaded": 1,
        "unknown": 1,
    }
    assert report["files"]["changed"][0]["path"] == "part-0001.csv"
    assert report["files"]["gone"] == [{"path": "part-0002.csv"}]
    assert report["files"]["never_loaded"] == [{"path": "part-0007.csv"}]
    assert report["files"]["unknown"] == [{"path": "elsewhere.csv", "table_rows": 1}]


def test_verify_is_read_only_and_checks_who_asks(loaded, member, other_tenant):
    from ingestions.models import Role

    url = f"/api/v1/ingestions/{loaded.public_id}/verify"
    assert member(Role.VIEWER).post(url).status_code == 200  # a viewer may look
    assert member(Role.ADMIN, other_tenant).post(url).status_code == 404
    assert Run.objects.filter(ingestion=loaded).count() == 1  # nothing queued or changed


def test_a_file_corrected_to_no_rows_loses_its_old_rows(tenant, source_dir):
    """A changed file now holding its header alone: a batch of no rows, but its old rows
    still go, in a commit of their own (the history says it was reloaded with 0 rows)."""
    write_csv_files(source_dir, files=2, rows=5)
    ingestion = IngestionFactory(
        tenant=tenant, public_id="sales", source_uri=str(source_dir), destination_table="raw.sales"
    )
    assert run_execute(run_id=run_request(ingestion=ingestion).public_id).status == (
        RunStatus.SUCCESS
    )
    path = source_dir / "part-0001.csv"
    stat = path.stat()
    path.write_text("id,name,amount\n")  # every row withdrawn
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    run = run_execute(run_id=run_request(ingestion=ingestion).public_id)

    assert (run.status, run.files_changed) == (RunStatus.SUCCESS, 1), run.error
    entry = ProcessedFile.objects.get(ingestion=ingestion, path="part-0001.csv")
    assert entry.rows == 0  # the history says: reloaded, no rows
    assert "part-0001.csv" not in amounts_by_file(ingestion)  # ... so the table must agree
