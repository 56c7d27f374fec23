"""Zero-downtime refresh: the live table keeps its rows until the new version is published,
in one step, when the run ends; a failed or cancelled run publishes nothing."""

import threading

import pytest
from pyiceberg.exceptions import NoSuchTableError

from ingestions.models import ProcessedFile, PublishState, Run, RunStatus
from ingestions.runs import run_request
from refresh.models import OperationStatus, RefreshOperation
from refresh.services import refresh_execute
from refresh.steps import stage_name_for
from refresh.sync import operation_sync, refresh_decide
from refresh.undo import retention_expire

from ..helpers import FaultingEngine, drain_queue, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


def rows_of(ingestion) -> int:
    return open_table(ingestion.table_identifier).scan().to_arrow().num_rows


def main_log(ingestion) -> list[int]:
    """The snapshots main pointed at, oldest first: what readers of main could ever see."""
    return [
        entry.snapshot_id for entry in open_table(ingestion.table_identifier).metadata.snapshot_log
    ]


def rows_at(ingestion, snapshot_id: int) -> int:
    table = open_table(ingestion.table_identifier)
    return table.scan(snapshot_id=snapshot_id).to_arrow().num_rows


def history_of(ingestion) -> set[str]:
    return set(ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", flat=True))


def full_refresh(ingestion, actor, **options):
    return refresh_execute(
        ingestion=ingestion, kind="full_refresh", actor=actor, confirm=True, **options
    )


def test_until_the_run_ends_readers_see_the_old_rows_then_exactly_the_new_ones(
    loaded, admin_user, source_dir
):
    write_csv_files(source_dir, files=1, rows=25, start=4)  # a fifth file: 125 rows in all
    before = main_log(loaded)
    operation = full_refresh(loaded, admin_user)

    assert operation.status == OperationStatus.ACCEPTED
    assert rows_of(loaded) == 100 and len(history_of(loaded)) == 4  # nothing dropped yet
    assert operation.steps.first().details["replaced_at_publish"]

    seen: list[int | str] = []
    stop = threading.Event()

    def read_from_outside() -> None:
        while not stop.is_set():
            try:
                seen.append(rows_of(loaded))
            except NoSuchTableError:
                seen.append("missing")

    reader = threading.Thread(target=read_from_outside)
    reader.start()
    try:
        drain_queue()
    finally:
        stop.set()
        reader.join()

    assert seen and set(seen) <= {100, 125}, sorted(set(map(str, seen)))
    assert seen[-1] == 125
    # Decided on state, not on what a reader thread happened to catch: main moved once,
    # from the old version straight to the new one, with nothing in between.
    after = main_log(loaded)
    assert after[: len(before)] == before and len(after) == len(before) + 1, (before, after)
    assert rows_at(loaded, before[-1]) == 100 and rows_at(loaded, after[-1]) == 125
    assert rows_of(loaded) == 125
    assert len(history_of(loaded)) == 5
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.PUBLISHED
    assert Run.objects.get(pk=operation.run_id).publish_state == PublishState.PUBLISHED


def test_a_run_that_fails_publishes_nothing_and_the_operation_says_failed(loaded, admin_user):
    from ingestions.errors import EngineError

    operation = full_refresh(loaded, admin_user)
    failing = FaultingEngine({"append": EngineError("the cluster went away")})
    from ingestions.run_executor import run_execute

    run_execute(run_id=operation.run.public_id, engine=failing)

    assert rows_of(loaded) == 100 and len(history_of(loaded)) == 4
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.FAILED
    assert "cluster went away" in operation.error
    table = open_table(loaded.table_identifier)
    assert stage_name_for(operation) not in table.metadata.refs  # the staged branch is gone
    # The tag kept for undo goes at the reaper's next pass: nothing was changed.
    assert retention_expire() == [operation.public_id]
    assert set(open_table(loaded.table_identifier).metadata.refs) == {"main"}


def test_a_cancelled_run_publishes_nothing(loaded, admin_user):
    from ingestions.runs import run_cancel

    operation = full_refresh(loaded, admin_user)
    run_cancel(run=operation.run)
    drain_queue()

    assert rows_of(loaded) == 100 and len(history_of(loaded)) == 4
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.CANCELLED


def test_failed_files_wait_for_a_decision_and_block_runs_until_then(
    loaded, admin_user, source_dir, admin_client
):
    (source_dir / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3,4\n")
    operation = full_refresh(loaded, admin_user)
    drain_queue()

    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.AWAITING_DECISION
    assert rows_of(loaded) == 100  # nothing published yet
    response = admin_client.post(f"/api/v1/ingestions/{loaded.public_id}/run")
    assert response.status_code == 409 and response.json()["error_code"] == "REFRESH_IN_PROGRESS"
    body = admin_client.get(f"/api/v1/refresh-operations/{operation.public_id}").json()
    assert body["status"] == "awaiting_decision"
    assert body["publish"]["failed_files"][0]["path"] == "part-9999.csv"

    refused = admin_client.post(
        f"/api/v1/refresh-operations/{operation.public_id}/publish", {}, format="json"
    )
    assert refused.status_code == 400
    published = admin_client.post(
        f"/api/v1/refresh-operations/{operation.public_id}/publish",
        {"confirm": True},
        format="json",
    )
    assert published.status_code == 200, published.json()
    assert published.json()["status"] == "published"
    assert rows_of(loaded) == 100  # the four good files, reloaded once
    assert history_of(loaded) == {f"part-{index:04d}.csv" for index in range(4)}
    again = admin_client.post(
        f"/api/v1/refresh-operations/{operation.public_id}/discard",
        {"confirm": True},
        format="json",
    )
    assert again.status_code == 409


def test_discarding_keeps_the_table_and_history_as_they_were(loaded, admin_user, source_dir):
    (source_dir / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3,4\n")
    write_csv_files(source_dir, files=1, rows=25, start=4)
    operation = full_refresh(loaded, admin_user)
    drain_queue()

    operation = refresh_decide(
        operation=RefreshOperation.objects.get(pk=operation.pk),
        actor=admin_user,
        publish=False,
        confirm=True,
    )

    assert operation.status == OperationStatus.DISCARDED
    assert rows_of(loaded) == 100 and len(history_of(loaded)) == 4
    run = run_request(ingestion=loaded)  # runs are allowed again
    drain_queue()
    run.refresh_from_db()
    assert run.status == RunStatus.PARTIAL_SUCCESS  # the fifth file loads; the bad one fails
    assert rows_of(loaded) == 125


def test_a_failing_file_can_be_published_or_discarded_up_front(loaded, admin_user, source_dir):
    (source_dir / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3,4\n")
    operation = full_refresh(loaded, admin_user, on_partial_failure="discard")
    drain_queue()
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.DISCARDED


def test_fresh_start_keeps_the_history_and_publishes_only_new_files(loaded, admin_user, source_dir):
    write_csv_files(source_dir, files=1, rows=25, start=4)
    operation = refresh_execute(
        ingestion=loaded, kind="fresh_start", actor=admin_user, confirm=True
    )
    assert rows_of(loaded) == 100
    drain_queue()

    assert rows_of(loaded) == 25  # the new table holds the new file only
    assert len(history_of(loaded)) == 5
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.PUBLISHED


def test_a_refresh_of_a_missing_table_appears_whole_when_published(
    csv_ingestion, admin_user, source_dir
):
    write_csv_files(source_dir, files=3, rows=10)
    full_refresh(csv_ingestion, admin_user)
    with pytest.raises(NoSuchTableError):
        rows_of(csv_ingestion)
    drain_queue()
    assert rows_of(csv_ingestion) == 30


def test_drop_first_keeps_the_prds_immediate_drop(loaded, admin_user):
    operation = full_refresh(loaded, admin_user, mode="drop_first")
    assert operation.request["mode"] == "drop_first"
    with pytest.raises(NoSuchTableError):
        rows_of(loaded)
    assert not history_of(loaded)
    drain_queue()
    assert rows_of(loaded) == 100
