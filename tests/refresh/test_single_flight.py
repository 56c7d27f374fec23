"""Single-flight transitions: ten callers of one undo, publish, resume or batch sync get one
outcome, one event and one audit entry; reads of a batch or an operation write nothing; a
batch beyond the caller's rate refuses at the door (issue 21 §3, §7, §8)."""

import threading
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.utils import timezone

from console.api_errors import api_exception_handler
from ingestions.errors import EngineError
from ingestions.models import ProcessedFile, PublishState, RateCounter, Role, Run, RunStatus
from ingestions.run_executor import run_execute
from refresh.batches import batch_sync, batches_sync_due
from refresh.errors import RefreshInProgressError
from refresh.models import (
    BatchStatus,
    OperationStatus,
    RefreshBatch,
    RefreshOperation,
    Retention,
)
from refresh.services import refresh_execute
from refresh.sync import operation_sync, operations_sync_due
from refresh.undo import refresh_undo
from webhooks.models import EVENTS, Webhook, WebhookEvent

from ..helpers import FaultingEngine, drain_queue, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

CALLERS = 10
BATCHES = "/api/v1/refresh-batches"


@pytest.fixture(autouse=True)
def unlimited(settings):
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}


@pytest.fixture
def outbox(tenant):
    """A webhook listening to every event, so that each event is recorded in the outbox."""
    Webhook.objects.create(
        tenant=tenant, url="https://hooks.example.com/in", events=list(EVENTS), secret_encrypted="-"
    )


def in_parallel(calls) -> list:
    """Run every call at once, each thread on its own database connection."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as exc:  # recorded: the test asserts on it
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return results


def post_all(clients, url: str, body=None) -> list[tuple[int, dict]]:
    def call(client):
        return lambda: (lambda r: (r.status_code, r.json()))(client.post(url, body, format="json"))

    return in_parallel([call(client) for client in clients])


def assert_one_outcome(answers, *, ok: int, operation_id: str, late: str = "") -> dict:
    """Every answer is the settled result (same code and body) or a 409: naming the
    operation in progress, or (`late`) the refusal of a caller that read the operation
    once it was settled; never a 500. Returns the settled body."""
    assert len(answers) == CALLERS
    assert not [a for a in answers if isinstance(a, Exception)], answers
    settled = [body for status, body in answers if status == ok]
    assert settled, answers
    assert all(body == settled[0] for body in settled)
    for status, body in answers:
        assert status in (ok, 409), (status, body)
        if status == 409 and body["error_code"] != late:
            assert body["error_code"] == "REFRESH_IN_PROGRESS", body
            assert body["current_operation_id"] == operation_id, body
            assert "/" not in body["detail"]
    return settled[0]


def events(name: str) -> int:
    return WebhookEvent.objects.filter(event=name).count()


def main_log(ingestion) -> list:
    """The table's main snapshot log: one entry per change of its current version."""
    return list(open_table(ingestion.table_identifier).metadata.snapshot_log)


def changes_of_main_since(ingestion, log_before: list) -> int:
    """How many times main's current version changed since `log_before` was read (entries
    of snapshots expired meanwhile leave the log, so count the new ones)."""
    last = max(entry.timestamp_ms for entry in log_before)
    return sum(1 for entry in main_log(ingestion) if entry.timestamp_ms > last)


def rows(ingestion) -> int:
    return open_table(ingestion.table_identifier).scan().to_arrow().num_rows


def admins(member) -> list:
    return [member(Role.ADMIN) for _ in range(CALLERS)]


# --- undo ------------------------------------------------------------------------------


def test_ten_parallel_undos_undo_once_with_one_event_and_one_audit_entry(
    loaded, admin_user, member, source_dir, outbox
):
    write_csv_files(source_dir, files=1, rows=10, start=4)
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True
    )
    drain_queue()
    assert RefreshOperation.objects.get(pk=operation.pk).status == OperationStatus.PUBLISHED
    assert rows(loaded) == 110
    log_before = main_log(loaded)

    answers = post_all(
        admins(member),
        f"/api/v1/refresh-operations/{operation.public_id}/undo",
        {"confirm": True},
    )

    settled = assert_one_outcome(answers, ok=200, operation_id=operation.public_id)
    assert settled["status"] == OperationStatus.UNDONE
    assert events("refresh.undone") == 1
    assert LogEntry.objects.filter(additional_data__operation="undo").count() == 1
    assert changes_of_main_since(loaded, log_before) == 1  # one restore of main
    assert rows(loaded) == 100
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    operation.refresh_from_db()
    assert (operation.status, operation.retention) == (OperationStatus.UNDONE, Retention.RESTORED)


def test_an_undo_being_restored_is_refused_then_taken_over_once_its_claimant_died(
    settings, loaded, admin_user, outbox
):
    settings.REFRESH_STALE_SECONDS = 30
    operation = refresh_execute(
        ingestion=loaded, kind="clear_processed_files", actor=admin_user, confirm=True
    )
    # A claimant that set the undo going, then stopped (its heartbeat is what tells).
    RefreshOperation.objects.filter(pk=operation.pk).update(
        retention=Retention.RESTORING,
        status=OperationStatus.IN_PROGRESS,
        undo={"previous_status": operation.status},
    )
    with pytest.raises(RefreshInProgressError) as refused:
        refresh_undo(operation=operation, actor=admin_user, confirm=True)
    assert refused.value.current_operation_id == operation.public_id
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 0  # untouched

    RefreshOperation.objects.filter(pk=operation.pk).update(
        updated_at=timezone.now() - timedelta(seconds=31)
    )
    undone = refresh_undo(operation=operation, actor=admin_user, confirm=True)

    assert undone.status == OperationStatus.UNDONE
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    assert events("refresh.undone") == 1
    assert LogEntry.objects.filter(additional_data__operation="undo").count() == 1


# --- publish and resume -----------------------------------------------------------------


def test_ten_parallel_publishes_publish_once(loaded, admin_user, member, source_dir, outbox):
    (source_dir / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3,4\n")
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True
    )
    drain_queue()  # the worker records the outcome: nothing to read first
    assert RefreshOperation.objects.get(pk=operation.pk).status == OperationStatus.AWAITING_DECISION
    log_before = main_log(loaded)
    published_before = events("refresh.published")

    answers = post_all(
        admins(member),
        f"/api/v1/refresh-operations/{operation.public_id}/publish",
        {"confirm": True},
    )

    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {200, 409}, answers
    settled = [body for status, body in answers if status == 200]
    assert settled and all(body == settled[0] for body in settled)
    assert settled[0]["status"] == OperationStatus.PUBLISHED
    for status, body in answers:  # late callers: nothing waits for a decision any more
        if status == 409:
            assert body["error_code"] == "OPERATION_NOT_DECIDABLE", body
    assert events("refresh.published") == published_before + 1
    assert LogEntry.objects.filter(additional_data__decision="published").count() == 1
    assert changes_of_main_since(loaded, log_before) == 1  # one publish commit on main
    assert rows(loaded) == 100  # the four good files


def test_ten_parallel_resumes_of_a_partial_failure_resume_once(loaded, admin_user, member, outbox):
    unreachable = FaultingEngine({"ping": EngineError("the cluster went away")})
    operation = refresh_execute(
        ingestion=loaded,
        kind="full_refresh",
        actor=admin_user,
        confirm=True,
        mode="drop_first",
        engine=unreachable,
    )
    assert operation.status == OperationStatus.PARTIAL_FAILURE
    published_before = events("refresh.published")

    answers = post_all(admins(member), f"/api/v1/refresh-operations/{operation.public_id}/resume")

    settled = assert_one_outcome(
        answers, ok=202, operation_id=operation.public_id, late="OPERATION_NOT_RESUMABLE"
    )
    assert settled["status"] == OperationStatus.ACCEPTED
    operation.refresh_from_db()
    assert operation.attempts == 2  # resumed once
    assert Run.objects.filter(ingestion=loaded, created_at__gt=operation.created_at).count() == 1
    assert events("refresh.published") == published_before + 1
    assert (
        LogEntry.objects.filter(
            additional_data__operation_id=operation.public_id, additional_data__attempt=2
        ).count()
        == 1
    )


# --- batches: reads write nothing, the worker publishes once ----------------------------


def loaded_but_held(three, member) -> tuple:
    """A batch of the three whose members have all loaded and wait to be published."""
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}
    response = admin.post(BATCHES, {**body, "confirm": True}, format="json")
    assert response.status_code == 202, response.json()
    batch = RefreshBatch.objects.get(public_id=response.json()["batch_id"])
    for operation in RefreshOperation.objects.filter(request__batch_id=batch.public_id):
        run_execute(run_id=operation.run.public_id)  # the run alone: no worker moved the batch
    assert set(Run.objects.filter(publish_hold=True).values_list("publish_state", flat=True)) == {
        PublishState.AWAITING_BATCH
    }
    return admin, batch


def state(batch, three) -> tuple:
    """Everything a read must leave as it is."""
    return (
        list(RefreshBatch.objects.values_list("public_id", "status", "updated_at", "members")),
        list(RefreshOperation.objects.values_list("public_id", "status", "updated_at", "error")),
        list(Run.objects.values_list("public_id", "status", "publish_state", "error")),
        [len(main_log(ingestion)) for ingestion in three],
        WebhookEvent.objects.count(),
        LogEntry.objects.count(),
    )


def test_ten_parallel_reads_of_a_batch_awaiting_publish_write_nothing(three, member, outbox):
    admin, batch = loaded_but_held(three, member)
    operation_id = batch.members[0]["operation_id"]
    before = state(batch, three)

    answers = in_parallel(
        [lambda: admin.get(f"{BATCHES}/{batch.public_id}") for _ in range(CALLERS // 2)]
        + [
            lambda: admin.get(f"/api/v1/refresh-operations/{operation_id}")
            for _ in range(CALLERS // 2)
        ]
    )

    assert [getattr(answer, "status_code", answer) for answer in answers] == [200] * CALLERS
    assert {answer.json()["status"] for answer in answers[: CALLERS // 2]} == {"loading"}
    assert state(batch, three) == before
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]

    published_before = events("refresh.published")
    in_parallel([batches_sync_due for _ in range(CALLERS)])  # the worker's passes

    batch.refresh_from_db()
    assert batch.status == BatchStatus.PUBLISHED
    assert events("refresh.published") == published_before + 3  # one per member
    assert [rows(ingestion) for ingestion in three] == [45, 35, 25]
    for operation in RefreshOperation.objects.filter(request__batch_id=batch.public_id):
        assert operation.status == OperationStatus.PUBLISHED
        assert (
            LogEntry.objects.filter(
                additional_data__operation_id=operation.public_id,
                additional_data__outcome=OperationStatus.PUBLISHED,
            ).count()
            == 1
        )
    after = state(batch, three)
    assert [answer.status_code for answer in in_parallel(
        [lambda: admin.get(f"{BATCHES}/{batch.public_id}") for _ in range(CALLERS)]
    )] == [200] * CALLERS  # fmt: skip
    assert state(batch, three) == after


def test_ten_parallel_syncs_of_a_batch_publish_each_member_once(three, member, outbox):
    _admin, batch = loaded_but_held(three, member)
    logs_before = [main_log(ingestion) for ingestion in three]

    results = in_parallel([lambda: batch_sync(batch=batch) for _ in range(CALLERS)])

    assert not [result for result in results if isinstance(result, Exception)], results
    batch.refresh_from_db()
    assert batch.status == BatchStatus.PUBLISHED
    assert events("refresh.published") == 3
    assert [changes_of_main_since(i, log) for i, log in zip(three, logs_before, strict=True)] == [
        1,
        1,
        1,
    ]


def test_a_member_with_failed_files_fails_the_batch_and_members_agree_with_operations(
    three, member, tmp_path
):
    admin = member(Role.ADMIN)
    (tmp_path / "landing" / "users" / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3\n")
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    batch_id = admin.post(BATCHES, {**body, "confirm": True}, format="json").json()["batch_id"]
    drain_queue()

    users_run = RefreshOperation.objects.get(ingestion__public_id="users").run
    assert users_run.status == RunStatus.PARTIAL_SUCCESS  # files failed: not "loaded"
    final = admin.get(f"{BATCHES}/{batch_id}").json()
    assert final["status"] == "failed" and final["failed_ingestion_id"] == "users"
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]  # none published
    for item in final["members"]:
        operation = admin.get(f"/api/v1/refresh-operations/{item['operation_id']}").json()
        assert item["status"] == operation["status"] != OperationStatus.ACCEPTED


# --- batches: all or nothing at the door -------------------------------------------------


def refresh_slots_taken(applies_to: str = "user") -> int:
    """Slots taken on the refresh counters of one kind of limit ("user", "tenant", or
    "full_refresh" for the tables' rate of that kind)."""
    counters = RateCounter.objects.filter(key__startswith=f"refresh:{applies_to}:")
    return sum(counters.values_list("count", flat=True))


def test_a_batch_beyond_the_rate_limit_is_refused_before_any_member_starts(settings, three, member):
    settings.REFRESH_RATE_LIMITS = {"full_refresh": "5/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "2/h"}
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}
    runs_before = Run.objects.count()

    preview = admin.post(BATCHES, {**body, "dry_run": True}, format="json").json()
    assert preview["quota"]["full_refresh"]["limit"] == 2
    assert preview["quota"]["full_refresh"]["remaining"] == 2
    assert preview["quota"]["full_refresh"]["applies_to"] == "user"
    assert preview["quota"]["full_refresh"]["members_startable"] == 2
    assert preview["quota"]["full_refresh"]["resets_at"]
    assert any("REFRESH_RATE_PER_USER" in warning for warning in preview["warnings"])

    refused = admin.post(BATCHES, {**body, "confirm": True}, format="json")

    assert refused.status_code == 429, refused.json()
    assert refused.json()["error_code"] == "RATE_LIMITED"
    assert int(refused["Retry-After"]) > 0
    assert not RefreshOperation.objects.exists()
    assert not RefreshBatch.objects.exclude(status=BatchStatus.PLANNED).exists()
    assert Run.objects.count() == runs_before
    assert refresh_slots_taken() == 0  # unspent
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]

    # What the quota covers still starts, and spends exactly its members' slots.
    two = {**body, "ingestion_ids": ["orders", "users"], "confirm": True}
    assert admin.post(BATCHES, two, format="json").status_code == 202
    assert refresh_slots_taken() == 2
    assert refresh_slots_taken("full_refresh") == 2  # one of each member's table
    preview = admin.post(BATCHES, {**body, "dry_run": True}, format="json").json()
    assert preview["quota"]["full_refresh"]["remaining"] == 0


def test_a_batch_member_refused_while_starting_gives_back_the_slots_not_used(
    settings, three, member
):
    settings.REFRESH_RATE_LIMITS = {"full_refresh": "5/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "5/h", "tenant": "5/h"}
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = -1  # every member needs its plan
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    refused = admin.post(BATCHES, {**body, "confirm": True}, format="json")

    assert refused.status_code == 400 and refused.json()["error_code"] == "DRY_RUN_REQUIRED"
    assert refresh_slots_taken() == refresh_slots_taken("tenant") == 0
    assert refresh_slots_taken("full_refresh") == 0
    assert not RefreshOperation.objects.filter(status=OperationStatus.ACCEPTED).exists()


# --- errors --------------------------------------------------------------------------------


def test_engine_errors_never_quote_server_paths():
    error = EngineError(
        "Iceberg could not restore raw.sales: Failed to open local file "
        "'/srv/autoloader/var/warehouse/raw.db/sales/metadata/snap-1-0.avro' "
        "(catalog sqlite:////srv/autoloader/var/catalog.db)"
    )

    response = api_exception_handler(error, {})

    assert response.status_code == 500
    assert "/srv" not in response.data["detail"] and "warehouse" not in response.data["detail"]
    assert response.data["detail"].startswith("Iceberg could not restore raw.sales")


def test_reads_of_an_operation_show_its_runs_outcome_and_the_worker_records_it(
    loaded, admin_user, admin_client
):
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True
    )
    run_execute(run_id=operation.run.public_id)  # the run alone, as if the worker died after
    url = f"/api/v1/refresh-operations/{operation.public_id}"

    assert admin_client.get(url).json()["status"] == OperationStatus.PUBLISHED
    assert RefreshOperation.objects.get(pk=operation.pk).status == OperationStatus.ACCEPTED

    assert operations_sync_due() == [operation.public_id]
    assert RefreshOperation.objects.get(pk=operation.pk).status == OperationStatus.PUBLISHED
    assert operations_sync_due() == []
    assert operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk)).status == (
        OperationStatus.PUBLISHED
    )
