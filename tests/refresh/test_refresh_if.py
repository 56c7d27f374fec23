"""Conditional refresh: `POST .../refresh-if` runs only when its condition holds on the
preview's listing, says why with the facts, refuses as the refresh would; and a scheduled
refresh with a condition fires or is skipped (with its facts) at its slot."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from ingestions.models import FileFailure, Role, Run
from refresh.firing import schedules_fire_due
from refresh.models import FiringOutcome, RefreshOperation, Schedule, ScheduleFiring
from refresh.schedules import schedule_set

from ..factories import IngestionFactory
from ..helpers import drain_queue, rows, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/ingestions/sales/refresh-if"


def call(client, body, ingestion_id="sales", key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"/api/v1/ingestions/{ingestion_id}/refresh-if", body, format="json", **headers
    )


def test_it_runs_when_the_condition_holds_and_says_why(loaded, member, source_dir):
    admin = member(Role.ADMIN)
    write_csv_files(source_dir, files=1, rows=25, start=4)  # a new file
    body = {"condition": "new_files > 0", "operation": "full_refresh", "confirm": True}

    response = call(admin, body)

    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["ran"] is True and answer["status"] == "accepted"
    assert answer["condition"]["holds"] is True
    assert answer["condition"]["facts"]["new_files"] == 1
    assert answer["condition"]["facts"]["file_count"] == 5
    assert answer["condition"]["explanation"] == [
        {"comparison": "new_files > 0", "left": 1, "right": 0, "result": True}
    ]
    operation = RefreshOperation.objects.get()
    assert (operation.public_id, operation.kind) == (answer["operation_id"], "full_refresh")
    drain_queue()
    assert rows(loaded) == 125


def test_it_skips_when_the_condition_does_not_hold_and_starts_nothing(loaded, member):
    admin = member(Role.ADMIN)
    runs_before = Run.objects.count()
    body = {"condition": "changed_files > 0", "operation": "full_refresh", "confirm": True}

    response = call(admin, body)

    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["status"], answer["ran"]) == ("skipped", False)
    assert answer["condition"]["holds"] is False
    assert answer["condition"]["facts"]["changed_files"] == 0
    assert "changed_files = 0" in answer["message"] and "Nothing ran" in answer["message"]
    assert not RefreshOperation.objects.exists()
    assert Run.objects.count() == runs_before
    assert rows(loaded) == 100


def test_the_facts_are_read_from_the_listing_and_the_records(loaded, member, source_dir):
    admin = member(Role.ADMIN)
    first = sorted(source_dir.iterdir())[0]
    first.write_text(first.read_text() + "999,late,1.0\n")  # changed: another size
    write_csv_files(source_dir, files=2, rows=5, start=10)  # two new files
    FileFailure.objects.create(
        ingestion=loaded,
        path="broken.csv",
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )
    body = {"condition": "file_count > 100", "operation": "fresh_start", "dry_run": True}

    answer = call(admin, body).json()

    facts = answer["condition"]["facts"]
    assert facts["file_count"] == 6
    assert facts["new_files"] == 2
    assert facts["changed_files"] == 1
    assert facts["files_to_process"] == answer["impact"]["files_to_process"] == 2
    assert facts["bytes_to_process"] > 0
    assert facts["failed_files"] == 1
    assert 0 <= facts["hours_since_last_refresh"] < 1  # created just now, never refreshed
    assert answer["status"] == "dry_run" and answer["ran"] is False
    assert "would not run" in answer["message"]
    assert not RefreshOperation.objects.exists()


def test_hours_since_last_refresh_counts_from_the_last_refresh(loaded, member):
    admin = member(Role.ADMIN)
    call(admin, {"condition": "1 == 1", "operation": "full_refresh", "confirm": True})
    drain_queue()
    RefreshOperation.objects.update(created_at=timezone.now() - timedelta(hours=30))

    answer = call(
        admin,
        {
            "condition": "hours_since_last_refresh > 24",
            "operation": "full_refresh",
            "dry_run": True,
        },
    ).json()

    assert 29.9 < answer["condition"]["facts"]["hours_since_last_refresh"] < 30.1
    assert answer["condition"]["holds"] is True


@pytest.mark.parametrize(
    ("body", "role", "ingestion_id", "status", "code"),
    [
        pytest.param({}, Role.ADMIN, "sales", 400, "CONFIRMATION_REQUIRED", id="no-confirm"),
        pytest.param(
            {"confirm": True}, Role.VIEWER, "sales", 403, "INSUFFICIENT_PERMISSIONS", id="viewer"
        ),
        pytest.param(
            {"confirm": True}, Role.ADMIN, "theirs", 404, "INGESTION_NOT_FOUND", id="other-tenant"
        ),
        pytest.param(
            {"confirm": True}, Role.ADMIN, "guarded", 423, "TABLE_PROTECTED", id="protected"
        ),
    ],
)
def test_it_refuses_as_the_full_refresh_does_whatever_the_facts(
    loaded, member, tenant, other_tenant, body, role, ingestion_id, status, code
):
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    IngestionFactory(tenant=tenant, public_id="guarded", protected=True)
    client = member(role)

    conditional = call(
        client, {"condition": "1 == 1", "operation": "full_refresh", **body}, ingestion_id
    )
    direct = client.post(f"/api/v1/ingestions/{ingestion_id}/full-refresh", body, format="json")

    assert (direct.status_code, direct.json()["error_code"]) == (status, code)
    assert (conditional.status_code, conditional.json()["error_code"]) == (status, code)
    assert not RefreshOperation.objects.exists()


@pytest.mark.parametrize(
    "condition",
    [
        "__import__('os').system('touch /tmp/x')",
        "file_count.__class__ > 0",
        "file_count[0] > 0",
        "'a' == 'a'",
        "lambda: 1",
        "files > 1",
        " or ".join(["new_files > 0"] * 100),
        "(" * 50 + "new_files > 0" + ")" * 50,
    ],
)
def test_a_bad_condition_is_a_400_listing_the_facts_before_anything_is_listed(
    loaded, member, condition
):
    admin = member(Role.ADMIN)

    response = call(admin, {"condition": condition, "operation": "full_refresh", "confirm": True})

    assert response.status_code == 400, response.content
    error = response.json()
    assert error["error_code"] == "INVALID_CONDITION"
    assert set(error["facts"]) >= {"new_files", "changed_files", "files_to_process"}
    assert "new_files" in error["detail"]
    assert not RefreshOperation.objects.exists()


def test_only_a_refresh_can_be_conditional(loaded, member):
    response = call(
        member(Role.ADMIN), {"condition": "1 == 1", "operation": "drop_table", "confirm": True}
    )

    assert (response.status_code, response.json()["error_code"]) == (400, "VALIDATION_ERROR")


# --- a schedule's condition ---------------------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SLOT = datetime(2026, 6, 2, 2, 0, tzinfo=UTC)


def nightly(ingestion, actor, condition="changed_files > 0 or new_files > 0"):
    return schedule_set(
        ingestion=ingestion,
        actor=actor,
        action="full_refresh",
        cron="0 2 * * *",
        condition=condition,
        now=NOW,
    )


def test_a_conditional_schedule_is_skipped_with_its_facts_when_nothing_changed(loaded, member):
    admin = member(Role.ADMIN)
    schedule = nightly(loaded, admin.user)

    (firing,) = schedules_fire_due(now=SLOT)

    assert (firing.outcome, firing.reason) == (FiringOutcome.SKIPPED, "CONDITION_NOT_MET")
    assert firing.facts["changed_files"] == 0 and firing.facts["new_files"] == 0
    assert "does not hold: new_files = 0, changed_files = 0. Nothing ran." in firing.detail
    assert not RefreshOperation.objects.exists()
    assert rows(loaded) == 100
    shown = admin.get(f"/api/v1/schedules/{schedule.public_id}").json()
    assert shown["condition"] == "changed_files > 0 or new_files > 0"
    assert shown["last_firing"]["outcome"] == "skipped"
    assert shown["last_firing"]["facts"]["new_files"] == 0
    entry = LogEntry.objects.filter(additional_data__operation="schedule_fired").get()
    assert entry.additional_data["reason"] == "CONDITION_NOT_MET"
    assert entry.additional_data["facts"]["changed_files"] == 0


def test_a_conditional_schedule_fires_when_its_condition_holds(loaded, member, source_dir):
    admin = member(Role.ADMIN)
    nightly(loaded, admin.user)
    write_csv_files(source_dir, files=1, rows=25, start=4)

    (firing,) = schedules_fire_due(now=SLOT)

    assert firing.outcome == FiringOutcome.FIRED, firing.detail
    assert firing.facts["new_files"] == 1
    assert firing.operation.kind == "full_refresh"
    assert firing.operation.requested_by == admin.user
    drain_queue()
    assert rows(loaded) == 125


def test_ten_workers_firing_a_conditional_slot_record_one_outcome(loaded, member):
    admin = member(Role.ADMIN)
    schedule = nightly(loaded, admin.user)
    workers = 10
    barrier = threading.Barrier(workers)
    fired: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            fired.append(len(schedules_fire_due(now=SLOT)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sorted(fired) == [0] * (workers - 1) + [1]
    (firing,) = ScheduleFiring.objects.filter(schedule=schedule)
    assert firing.reason == "CONDITION_NOT_MET"
    assert LogEntry.objects.filter(additional_data__operation="schedule_fired").count() == 1


def test_a_key_replays_the_first_answer_ran_or_skipped(loaded, member, source_dir):
    admin = member(Role.ADMIN)
    body = {"condition": "new_files > 0", "operation": "full_refresh", "confirm": True}
    skipped = call(admin, body, key="airflow-2026-12-06-skip")
    write_csv_files(source_dir, files=1, rows=25, start=4)  # now the condition holds
    replayed = call(admin, body, key="airflow-2026-12-06-skip")

    assert skipped.status_code == replayed.status_code == 200
    assert replayed.json() == skipped.json() and replayed.json()["ran"] is False
    assert replayed["Idempotent-Replayed"] == "true"
    assert not RefreshOperation.objects.exists()  # the retry did not measure again

    ran = call(admin, body, key="airflow-2026-12-06-run")
    again = call(admin, body, key="airflow-2026-12-06-run")
    assert ran.status_code == again.status_code == 202
    assert again.json() == ran.json() and again["X-Operation-ID"] == ran.json()["operation_id"]
    assert RefreshOperation.objects.count() == 1

    other = call(admin, {**body, "condition": "new_files > 5"}, key="airflow-2026-12-06-run")
    assert other.status_code == 422 and other.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    assert other.json()["operation_id"] == ran.json()["operation_id"]
    too_long = call(admin, {**body, "dry_run": True, "confirm": None}, key="k" * 1000)
    assert too_long.status_code == 400 and too_long.json()["error_code"] == "VALIDATION_ERROR"


def test_ten_callers_with_one_key_start_one_refresh(loaded, member, source_dir):
    admin = member(Role.ADMIN)
    write_csv_files(source_dir, files=1, rows=25, start=4)
    body = {"condition": "new_files > 0", "operation": "full_refresh", "confirm": True}
    callers = 10
    barrier = threading.Barrier(callers)
    answers: list[int] = []
    errors: list[BaseException] = []

    def caller():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {admin.token_key}")
        try:
            barrier.wait()
            answers.append(call(client, body, key="one-nightly-run").status_code)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    # The one that answered first started it; the others replayed it or were told (409)
    # that it is still answering: never a second refresh, never a 500.
    assert answers.count(202) >= 1 and set(answers) <= {202, 409}
    assert RefreshOperation.objects.count() == 1
    audited = LogEntry.objects.filter(additional_data__operation="full_refresh")
    assert audited.count() == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"condition": "files > 0"}, "INVALID_CONDITION"),
        ({"condition": "__import__('os')"}, "INVALID_CONDITION"),
        ({"condition": "   "}, "INVALID_CONDITION"),
        ({"condition": 3}, "VALIDATION_ERROR"),
    ],
)
def test_a_schedules_condition_is_checked_when_it_is_set(loaded, member, body, code):
    admin = member(Role.ADMIN)

    response = admin.post(
        "/api/v1/ingestions/sales/schedules",
        {"action": "full_refresh", "cron": "0 2 * * *", **body},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == code
    assert not Schedule.objects.exists()


def test_a_schedules_condition_is_set_changed_and_cleared_through_the_api(loaded, member):
    admin = member(Role.ADMIN)
    created = admin.post(
        "/api/v1/ingestions/sales/schedules",
        {"action": "fresh_start", "cron": "0 2 * * *", "condition": "new_files  >= 10"},
        format="json",
    ).json()
    assert created["condition"] == "new_files >= 10"
    url = f"/api/v1/schedules/{created['id']}"

    changed = admin.patch(url, {"condition": "(new_files > 0)"}, format="json").json()
    assert changed["condition"] == "(new_files > 0)"
    cleared = admin.patch(url, {"condition": ""}, format="json").json()
    assert cleared["condition"] is None
    assert Schedule.objects.get().condition == ""
