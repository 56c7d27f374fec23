"""Runs load new files exactly once, report failures per file, cancel and resume."""

import pyarrow.compute as pc
import pytest
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import RunInProgressError, RunNotCancellableError
from ingestions.models import CommitStatus, ProcessedFile, Run, RunBatch, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import run_cancel, run_request, runs_recover_stale

from ..helpers import FaultyEngine, WorkerKilled, drain_queue, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


def table_rows_by_file(table_name: str) -> dict[str, int]:
    data = open_table(table_name).scan(selected_fields=("_source_file",)).to_arrow()
    counts = pc.value_counts(data["_source_file"]).to_pylist()
    return {item["values"]: item["counts"] for item in counts}


def test_run_loads_every_row_of_every_file_once(csv_ingestion, source_dir):
    # The tenant's own physical table behind the user's "raw.sales".
    assert csv_ingestion.table_identifier == "acme__raw.sales"
    write_csv_files(source_dir, files=5, rows=40)
    run = run_request(ingestion=csv_ingestion)
    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    assert (run.files_found, run.files_loaded, run.files_failed) == (5, 5, 0)
    assert run.rows_written == 200
    assert run.progress == 1.0
    assert table_rows_by_file(csv_ingestion.table_identifier) == {
        f"part-{i:04d}.csv": 40 for i in range(5)
    }
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == 5
    info = load_engine().describe_table(csv_ingestion.table_identifier)
    assert info.row_count == 200


def test_second_run_loads_only_new_files(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=3, rows=10)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    write_csv_files(source_dir, files=2, rows=10, start=3)

    second = run_request(ingestion=csv_ingestion)
    drain_queue()

    second.refresh_from_db()
    assert (second.status, second.files_found, second.files_loaded) == (RunStatus.SUCCESS, 2, 2)
    assert sum(table_rows_by_file(csv_ingestion.table_identifier).values()) == 50


def test_run_in_batches_commits_one_snapshot_per_batch(settings, csv_ingestion, source_dir):
    settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=3)
    run_request(ingestion=csv_ingestion)
    drain_queue()

    snapshots = load_engine().list_snapshots(csv_ingestion.table_identifier)
    assert len(snapshots) == 3
    assert RunBatch.objects.filter(status=CommitStatus.COMMITTED).count() == 3
    keys = {snapshot.properties["autoloader.batch-key"] for snapshot in snapshots}
    assert keys == set(RunBatch.objects.values_list("batch_key", flat=True))


def test_malformed_file_gives_partial_success_and_is_not_marked_processed(
    csv_ingestion, source_dir
):
    write_csv_files(source_dir, files=2, rows=5)
    (source_dir / "broken.csv").write_bytes(b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n")
    run = run_request(ingestion=csv_ingestion)
    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.PARTIAL_SUCCESS
    assert (run.files_loaded, run.files_failed) == (2, 1)
    assert run.failed_files[0]["path"] == "broken.csv"
    assert run.failed_files[0]["error"]
    assert not ProcessedFile.objects.filter(path="broken.csv").exists()
    assert sum(table_rows_by_file(csv_ingestion.table_identifier).values()) == 10


def test_missing_source_fails_with_a_readable_error(csv_ingestion, source_dir):
    source_dir.rmdir()
    run = run_request(ingestion=csv_ingestion)
    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert str(source_dir) in run.error
    assert run.finished_at is not None


def test_a_second_run_request_while_one_is_active_is_refused(csv_ingestion):
    first = run_request(ingestion=csv_ingestion)
    with pytest.raises(RunInProgressError) as refused:
        run_request(ingestion=csv_ingestion)
    assert refused.value.current_run_id == first.public_id
    assert Run.objects.filter(ingestion=csv_ingestion).count() == 1


def test_cancel_a_queued_run_means_it_never_loads(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=2, rows=5)
    run = run_request(ingestion=csv_ingestion)
    run_cancel(run=run)
    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert not load_engine().table_exists(csv_ingestion.table_identifier)
    with pytest.raises(RunNotCancellableError):
        run_cancel(run=run)


def test_cancel_a_running_run_stops_at_the_next_batch(settings, csv_ingestion, source_dir):
    settings.AUTOLOADER_BATCH_MAX_FILES = 1
    write_csv_files(source_dir, files=4, rows=5)
    run = run_request(ingestion=csv_ingestion)
    real = load_engine()

    class CancelDuringFirstAppend:
        def __getattr__(self, name):
            return getattr(real, name)

        def append(self, *args, **kwargs):
            snapshot_id = real.append(*args, **kwargs)
            Run.objects.filter(pk=run.pk).update(cancel_requested=True)
            return snapshot_id

    run_execute(run_id=run.public_id, engine=CancelDuringFirstAppend())

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.files_loaded == 1
    assert sum(table_rows_by_file(csv_ingestion.table_identifier).values()) == 5
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == 1


@pytest.mark.parametrize("after_real_call", [True, False], ids=["after-commit", "before-commit"])
def test_a_run_whose_worker_died_mid_batch_resumes_without_duplicates_or_losses(
    settings, csv_ingestion, source_dir, after_real_call
):
    settings.AUTOLOADER_BATCH_MAX_FILES = 2
    write_csv_files(source_dir, files=5, rows=7)
    run = run_request(ingestion=csv_ingestion)
    dying = FaultyEngine(
        load_engine(), fail_on="append", after_real_call=after_real_call, exception=WorkerKilled()
    )
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run.public_id, engine=dying)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # a dead worker finishes nothing
    assert RunBatch.objects.filter(status=CommitStatus.PENDING).count() == 1

    # Time passes: the heartbeat goes stale and a live worker's reaper re-queues the run.
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert runs_recover_stale() == [run.public_id]
    drain_queue()

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS
    assert run.attempts == 2
    assert run.files_loaded == 5
    assert table_rows_by_file(csv_ingestion.table_identifier) == {
        f"part-{i:04d}.csv": 7 for i in range(5)
    }
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == 5
    assert not RunBatch.objects.filter(status=CommitStatus.PENDING).exists()


def test_a_live_run_is_not_taken_over(csv_ingestion, source_dir):
    run = run_request(ingestion=csv_ingestion)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=timezone.now())

    assert runs_recover_stale() == []
    assert run_execute(run_id=run.public_id) is None


def test_an_engine_failure_fails_the_run_with_its_message(csv_ingestion, source_dir):
    from ingestions.errors import EngineError

    write_csv_files(source_dir, files=1, rows=3)
    run = run_request(ingestion=csv_ingestion)
    broken = FaultyEngine(
        load_engine(),
        fail_on="append",
        after_real_call=False,
        exception=EngineError("catalog commit refused"),
    )
    run_execute(run_id=run.public_id, engine=broken)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "catalog commit refused" in run.error
    assert RunBatch.objects.get().status == CommitStatus.ABANDONED
    assert not ProcessedFile.objects.exists()
