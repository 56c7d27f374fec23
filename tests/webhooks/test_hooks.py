"""The domain's changes reach the outbox: runs, refresh operations (preview, start,
publish, failure, undo) and quarantined files, each once, with what a receiver acts on."""

import pytest

from ingestions.errors import EngineUnavailableError
from ingestions.models import FileFailure, Role, RunStatus
from ingestions.runs import run_request
from refresh.models import OperationStatus, RefreshOperation
from refresh.preview import refresh_preview
from refresh.services import refresh_execute
from refresh.sync import operation_sync
from refresh.undo import refresh_undo
from webhooks.delivery import deliver_due
from webhooks.models import EVENTS, WebhookEvent

from ..helpers import FaultingEngine, drain_queue, write_csv_files
from .conftest import verify

pytestmark = pytest.mark.django_db(transaction=True)

BAD = b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n"


def received(receiver) -> list[tuple[str, dict]]:
    deliver_due()
    return [(item["type"], item["data"]) for item in receiver.events()]


def test_a_run_sends_started_then_finished_with_counts_and_failed_files(
    csv_ingestion, source_dir, subscribe, receiver, settings
):
    settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES = 1
    _client, body = subscribe(receiver.url, list(EVENTS))
    write_csv_files(source_dir, files=2, rows=10)
    (source_dir / "broken.csv").write_bytes(BAD)

    run = run_request(ingestion=csv_ingestion)
    drain_queue()

    events = received(receiver)
    assert [name for name, _data in events] == ["run.started", "file.quarantined", "run.finished"]
    started, quarantined, finished = (data for _name, data in events)
    assert started["run_id"] == run.public_id and started["status"] == "RUNNING"
    assert started["ingestion_id"] == "sales" and started["attempt"] == 1
    assert quarantined["path"] == "broken.csv" and quarantined["automatic"] is True
    assert quarantined["run_id"] == run.public_id
    assert finished["status"] == RunStatus.PARTIAL_SUCCESS
    assert (finished["files_loaded"], finished["files_failed"]) == (2, 1)
    assert finished["rows_written"] == 20
    assert [item["path"] for item in finished["failed_files"]] == ["broken.csv"]
    assert finished["finished_at"] is not None
    assert all(verify(request, body["secret"]) for request in receiver.requests)


def test_quarantine_by_hand_sends_file_quarantined_once(
    csv_ingestion, source_dir, member, subscribe, receiver
):
    subscribe(receiver.url, ["file.quarantined"])
    (source_dir / "broken.csv").write_bytes(BAD)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    failure = FileFailure.objects.get()
    operator = member(Role.OPERATOR)
    url = f"/api/v1/ingestions/sales/failed-files/{failure.pk}/quarantine"

    assert operator.post(url).status_code == 200
    assert operator.post(url).status_code == 409  # refused: no second event

    events = received(receiver)
    assert [(name, data["path"], data["automatic"]) for name, data in events] == [
        ("file.quarantined", "broken.csv", False)
    ]


def test_a_zero_downtime_refresh_sends_previewed_started_published_then_undone(
    loaded,
    member,
    subscribe,
    receiver,
):
    admin = member(Role.ADMIN).user
    subscribe(receiver.url, [event for event in EVENTS if event.startswith("refresh.")])

    plan = refresh_preview(ingestion=loaded, kind="full_refresh", actor=admin)
    operation = refresh_execute(ingestion=loaded, kind="full_refresh", actor=admin, confirm=True)
    drain_queue()
    operation = operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk))
    assert operation.status == OperationStatus.PUBLISHED
    refresh_undo(operation=operation, actor=admin, confirm=True)

    events = received(receiver)
    assert [name for name, _data in events] == [
        "refresh.previewed",
        "refresh.started",
        "refresh.published",
        "refresh.undone",
    ]
    previewed, started, published, undone = (data for _name, data in events)
    assert previewed["plan_id"] == plan.plan_id and previewed["kind"] == "full_refresh"
    assert previewed["impact"]["files_to_process"] == 4
    assert started["operation_id"] == operation.public_id and started["mode"] == "atomic"
    assert published["status"] == "published" and published["run_id"] == operation.run.public_id
    assert undone["status"] == "undone" and undone["table"] == "raw.sales"


def test_a_refresh_whose_step_fails_sends_refresh_failed(
    loaded,
    member,
    subscribe,
    receiver,
):
    admin = member(Role.ADMIN).user
    subscribe(receiver.url, ["refresh.started", "refresh.failed", "refresh.published"])
    engine = FaultingEngine({"ping": EngineUnavailableError("the cluster is away")})

    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin, confirm=True, engine=engine
    )

    assert operation.status == OperationStatus.FAILED
    events = received(receiver)
    assert [name for name, _data in events] == ["refresh.started", "refresh.failed"]
    assert events[1][1]["error_code"] == "CLUSTER_UNAVAILABLE"


def test_a_drop_table_sends_refresh_published_when_done(
    loaded,
    member,
    subscribe,
    receiver,
):
    admin = member(Role.ADMIN).user
    subscribe(receiver.url, ["refresh.published", "refresh.failed"])

    refresh_execute(ingestion=loaded, kind="drop_table", actor=admin, confirm=True)

    events = received(receiver)
    assert [(name, data["kind"], data["status"]) for name, data in events] == [
        ("refresh.published", "drop_table", "success")
    ]


def test_a_zero_downtime_refresh_whose_run_fails_sends_refresh_failed_once(
    loaded,
    source_dir,
    member,
    subscribe,
    receiver,
):
    admin = member(Role.ADMIN).user
    subscribe(receiver.url, ["refresh.published", "refresh.failed"])
    for path in source_dir.iterdir():
        path.write_bytes(BAD)  # every file fails: the new version is discarded

    operation = refresh_execute(ingestion=loaded, kind="full_refresh", actor=admin, confirm=True)
    drain_queue()

    events = received(receiver)
    assert [(name, data["operation_id"], data["status"]) for name, data in events] == [
        ("refresh.failed", operation.public_id, "discarded")
    ]
    assert operation_sync(operation=operation).status == OperationStatus.FAILED


def test_a_viewers_dry_runs_send_no_webhook(
    loaded,
    member,
    subscribe,
    receiver,
):
    subscribe(receiver.url, ["refresh.previewed"])
    viewer = member(Role.VIEWER)
    full = "/api/v1/ingestions/sales/full-refresh"

    for _ in range(5):  # a read-only user previews at will...
        response = viewer.post(full, {"dry_run": True}, format="json")
        assert response.status_code == 200 and response.json()["status"] == "dry_run"
    assert not WebhookEvent.objects.exists()  # ...and drives no outbound traffic

    admin = member(Role.ADMIN)
    assert admin.post(full, {"dry_run": True}, format="json").status_code == 200
    events = received(receiver)
    assert [name for name, _data in events] == ["refresh.previewed"]
    assert len(receiver.requests) == 1
