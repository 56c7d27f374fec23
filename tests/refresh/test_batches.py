"""Batch refresh: one preview and one confirmation for several ingestions, each member an
operation of its own (rules, audit), and their new tables published only when every one of
them has loaded: a failure in one publishes none and says which."""

import pytest
from auditlog.models import LogEntry

from ingestions.models import ProcessedFile, PublishState, Role, Run, RunStatus
from refresh.batches import batches_sync_due
from refresh.models import BatchStatus, OperationStatus, RefreshBatch, RefreshOperation

from ..helpers import drain_queue, rows

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/refresh-batches"


def test_a_dry_run_previews_each_member_and_the_totals(three, member):
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    preview = admin.post(URL, {**body, "dry_run": True}, format="json").json()

    assert preview["status"] == "dry_run" and preview["plan_id"].startswith("batch-")
    assert [m["ingestion_id"] for m in preview["members"]] == ["orders", "users", "items"]
    assert [m["impact"]["files_to_process"] for m in preview["members"]] == [5, 4, 3]
    assert preview["totals"]["tables"] == 3
    assert preview["totals"]["files_to_process"] == 12
    assert not RefreshOperation.objects.exists()  # nothing executed
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]


def test_every_member_loads_then_all_are_published_together(three, member):
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}
    plan = admin.post(URL, {**body, "dry_run": True}, format="json").json()["plan_id"]

    response = admin.post(URL, {**body, "confirm": True, "plan_id": plan}, format="json")

    assert response.status_code == 202, response.content
    batch = response.json()
    assert batch["status"] == "loading"
    assert [m["status"] for m in batch["members"]] == ["accepted"] * 3
    operations = RefreshOperation.objects.all()
    assert {operation.request["batch_id"] for operation in operations} == {batch["batch_id"]}
    # Each member is audited as an operation of its own, by the requesting admin.
    assert (
        LogEntry.objects.filter(additional_data__operation="full_refresh", actor=admin.user).count()
        >= 3
    )

    drain_queue()

    final = admin.get(f"{URL}/{batch['batch_id']}").json()
    assert final["status"] == "published"
    assert [m["status"] for m in final["members"]] == ["published"] * 3
    assert [rows(ingestion) for ingestion in three] == [45, 35, 25]
    assert [ProcessedFile.objects.filter(ingestion=i).count() for i in three] == [5, 4, 3]
    assert not Run.objects.filter(error__contains="waits for the other tables").exists()


@pytest.mark.parametrize("broken", ["every file", "one file"])
def test_one_member_failing_publishes_none_and_names_it(three, member, tmp_path, broken):
    admin = member(Role.ADMIN)
    # Files of "users" are now unreadable: its staged run fails (every file) or ends
    # PARTIAL_SUCCESS (one file), and a member that did not load all its files is not loaded.
    paths = sorted((tmp_path / "landing" / "users").iterdir())
    for path in paths if broken == "every file" else paths[:1]:
        path.write_bytes(b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n")
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    batch_id = admin.post(URL, {**body, "confirm": True}, format="json").json()["batch_id"]
    drain_queue()
    batches_sync_due()

    final = admin.get(f"{URL}/{batch_id}").json()
    assert final["status"] == "failed"
    assert final["failed_ingestion_id"] == "users"
    assert "users" in final["detail"]
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]  # none published
    assert [ProcessedFile.objects.filter(ingestion=i).count() for i in three] == [4, 3, 2]
    statuses = {m["ingestion_id"]: m["status"] for m in final["members"]}
    assert statuses["users"] in (OperationStatus.FAILED, OperationStatus.DISCARDED)
    users_run = Run.objects.filter(ingestion=three[1]).latest("created_at")
    assert users_run.status == (
        RunStatus.FAILED if broken == "every file" else RunStatus.PARTIAL_SUCCESS
    )
    # "orders" had loaded: its version is discarded; "items" had not started: cancelled.
    assert statuses["orders"] == OperationStatus.DISCARDED
    assert statuses["items"] == OperationStatus.CANCELLED
    assert not Run.objects.filter(publish_state=PublishState.AWAITING_BATCH).exists()


def test_a_member_held_waits_and_its_ingestion_refuses_other_changes(three, member):
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users"], "operation": "fresh_start", "confirm": True}
    batch_id = admin.post(URL, body, format="json").json()["batch_id"]
    orders_run = RefreshOperation.objects.get(ingestion__public_id="orders").run

    from ingestions.run_executor import run_execute

    run_execute(run_id=orders_run.public_id)  # only "orders" has loaded so far
    orders_run.refresh_from_db()
    assert (orders_run.status, orders_run.publish_state) == (
        RunStatus.SUCCESS,
        PublishState.AWAITING_BATCH,
    )
    assert rows(three[0]) == 40  # not published yet
    response = admin.post("/api/v1/ingestions/orders/run")
    assert (response.status_code, response.json()["error_code"]) == (409, "REFRESH_IN_PROGRESS")
    assert RefreshBatch.objects.get(public_id=batch_id).status == BatchStatus.LOADING

    drain_queue()
    assert admin.get(f"{URL}/{batch_id}").json()["status"] == "published"
    assert [rows(ingestion) for ingestion in three[:2]] == [5, 5]  # the new files only


def test_a_refused_member_starts_nothing(three, member):
    three[1].protected = True
    three[1].save()
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users"], "operation": "full_refresh", "confirm": True}

    response = admin.post(URL, body, format="json")

    assert (response.status_code, response.json()["error_code"]) == (423, "TABLE_PROTECTED")
    assert response.json()["ingestion_id"] == "users"
    assert not RefreshOperation.objects.exists()
    assert not RefreshBatch.objects.exclude(status=BatchStatus.PLANNED).exists()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"ingestion_ids": [], "operation": "full_refresh"}, 400, "VALIDATION_ERROR"),
        ({"ingestion_ids": ["orders", "orders"], "operation": "full_refresh"}, 400, None),
        ({"ingestion_ids": ["orders"], "operation": "drop_table"}, 400, "VALIDATION_ERROR"),
        ({"ingestion_ids": ["orders", "nope"], "operation": "full_refresh"}, 404, None),
        ({"ingestion_ids": ["orders"], "operation": "full_refresh"}, 400, None),  # no confirm
        (
            {"ingestion_ids": ["orders"], "operation": "full_refresh", "confirm": True,
             "plan_id": "batch-000000000000"},
            400,
            "DRY_RUN_REQUIRED",
        ),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_cleanly(three, member, body, status, code):
    response = member(Role.ADMIN).post(URL, body, format="json")
    assert response.status_code == status, response.content
    if code:
        assert response.json()["error_code"] == code
    assert not RefreshOperation.objects.exists()


def test_viewers_and_other_tenants_are_refused(three, member, other_tenant):
    body = {"ingestion_ids": ["orders"], "operation": "full_refresh", "confirm": True}
    viewer = member(Role.VIEWER)
    response = viewer.post(URL, body, format="json")
    assert (response.status_code, response.json()["error_code"]) == (
        403,
        "INSUFFICIENT_PERMISSIONS",
    )
    outsider = member(Role.ADMIN, tenant_obj=other_tenant)
    assert outsider.post(URL, body, format="json").status_code == 404
    assert outsider.post(URL, {**body, "dry_run": True}, format="json").status_code == 404
    # The victim's tables and history are untouched, and nothing was started or planned.
    assert [rows(ingestion) for ingestion in three] == [40, 30, 20]
    assert [ProcessedFile.objects.filter(ingestion=i).count() for i in three] == [4, 3, 2]
    assert not RefreshOperation.objects.exists() and not RefreshBatch.objects.exists()
    batch_id = member(Role.ADMIN).post(URL, body, format="json").json()["batch_id"]
    assert outsider.get(f"{URL}/{batch_id}").json()["error_code"] == "BATCH_NOT_FOUND"
    assert not RefreshOperation.objects.exclude(request__batch_id=batch_id).exists()


def test_a_batch_preview_counts_once_against_the_preview_rate(three, member, settings):
    settings.AUTOLOADER_PREVIEW_RATE_LIMITS = {"user": "2/m", "tenant": "100/m"}
    admin = member(Role.ADMIN)
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    answers = [admin.post(URL, {**body, "dry_run": True}, format="json") for _ in range(3)]

    # Three members listed per request, yet one request is one preview: two pass, the
    # third is refused before any member is listed, and no batch plan is recorded for it.
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[2].json()["error_code"] == "RATE_LIMITED"
    assert RefreshBatch.objects.count() == 2
