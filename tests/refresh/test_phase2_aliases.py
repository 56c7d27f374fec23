"""The requirements' phase-2 shapes, accepted as written, each a second door to an existing
service: `POST /batch-refresh` (= `/refresh-batches`), `PUT/PATCH /ingestions/{id}` with
`refresh_schedule` (= `POST /ingestions/{id}/schedules`), `POST .../refresh-range` (= a full
refresh scoped to a modification-time range). Each is driven end to end beside its canonical
endpoint: the same results, the same refusals."""

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestions.api import REFRESH_SCHEDULE_OPERATIONS
from ingestions.models import Ingestion, ProcessedFile, Role
from ingestions.runs import run_request
from refresh.models import BatchStatus, RefreshBatch, RefreshOperation, Schedule
from refresh.schedules import REFRESH_ACTIONS

from ..factories import IngestionFactory
from ..helpers import drain_queue, rows

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = "/api/v1/batch-refresh"
BATCHES = "/api/v1/refresh-batches"
MEMBERS = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}


def comparable(payload: dict) -> dict:
    """A response without what differs between two calls (ids, times)."""
    volatile = {"batch_id", "plan_id", "timestamp", "created_at", "updated_at", "operation_id"}
    volatile |= {"next_steps", "kept_until"}  # they quote the plan_id, the time
    if isinstance(payload, dict):
        return {key: comparable(value) for key, value in payload.items() if key not in volatile}
    if isinstance(payload, list):
        return [comparable(item) for item in payload]
    return payload


# --- POST /batch-refresh ---------------------------------------------------------------------


def test_batch_refresh_previews_and_executes_exactly_as_refresh_batches(three, member):
    admin = member(Role.ADMIN)

    alias_preview = admin.post(BATCH, {**MEMBERS, "dry_run": True}, format="json")
    canonical_preview = admin.post(BATCHES, {**MEMBERS, "dry_run": True}, format="json")

    assert alias_preview.status_code == canonical_preview.status_code == 200
    assert comparable(alias_preview.json()) == comparable(canonical_preview.json())
    assert [m["impact"]["files_to_process"] for m in alias_preview.json()["members"]] == [5, 4, 3]
    assert not RefreshOperation.objects.exists()

    # The PRD's exact body; its plan_id is the alias's own dry-run's.
    plan_id = alias_preview.json()["plan_id"]
    response = admin.post(BATCH, {**MEMBERS, "confirm": True, "plan_id": plan_id}, format="json")

    assert response.status_code == 202, response.content
    batch = response.json()
    assert response["Location"] == f"{BATCHES}/{batch['batch_id']}"  # read at the canonical
    assert RefreshOperation.objects.count() == 3
    drain_queue()
    assert admin.get(f"{BATCHES}/{batch['batch_id']}").json()["status"] == "published"
    assert [rows(ingestion) for ingestion in three] == [45, 35, 25]


@pytest.mark.parametrize(
    ("body", "role", "status", "code"),
    [
        pytest.param(MEMBERS, Role.ADMIN, 400, "CONFIRMATION_REQUIRED", id="no-confirm"),
        pytest.param(
            {**MEMBERS, "confirm": "yes"},
            Role.ADMIN,
            400,
            "CONFIRMATION_REQUIRED",
            id="confirm-text",
        ),
        pytest.param(
            {**MEMBERS, "confirm": True}, Role.VIEWER, 403, "INSUFFICIENT_PERMISSIONS", id="viewer"
        ),
        pytest.param(
            {**MEMBERS, "ingestion_ids": ["orders", "theirs"], "confirm": True},
            Role.ADMIN,
            404,
            "INGESTION_NOT_FOUND",
            id="another-tenants-member",
        ),
        pytest.param(
            {**MEMBERS, "operation": "drop_table", "confirm": True},
            Role.ADMIN,
            400,
            "VALIDATION_ERROR",
            id="not-a-refresh",
        ),
        pytest.param(
            {**MEMBERS, "ingestion_ids": ["orders", "orders"], "confirm": True},
            Role.ADMIN,
            400,
            "VALIDATION_ERROR",
            id="twice",
        ),
    ],
)
def test_batch_refresh_refuses_as_refresh_batches_does(
    three, member, other_tenant, body, role, status, code
):
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    client = member(role)

    alias = client.post(BATCH, body, format="json")
    canonical = client.post(BATCHES, body, format="json")

    assert (alias.status_code, alias.json()["error_code"]) == (status, code), alias.content
    assert (canonical.status_code, canonical.json()["error_code"]) == (status, code)
    assert alias.json()["detail"] == canonical.json()["detail"]
    assert not RefreshOperation.objects.exists()
    assert not RefreshBatch.objects.exclude(status=BatchStatus.PLANNED).exists()


# --- POST /ingestions/{id}/refresh-range -----------------------------------------------------


def write(root: Path, path: str, rows_count: int, modified: datetime, tag: str = "v1") -> None:
    file = root / path
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "amount"])
        for row in range(rows_count):
            writer.writerow([row, f"{tag}-{path}-{row}", row])
    os.utime(file, (modified.timestamp(), modified.timestamp()))


# Modification times around January 2025, in UTC: the range 2025-01-01..2025-01-31 holds
# exactly the "in" files, whatever the second they were written.
FILES = {
    "dec31-last-second.csv": (datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), False),
    "jan01-midnight.csv": (datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC), True),
    "jan15.csv": (datetime(2025, 1, 15, 12, 0, tzinfo=UTC), True),
    "jan31-last-second.csv": (datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC), True),
    "feb01-midnight.csv": (datetime(2025, 2, 1, 0, 0, 0, tzinfo=UTC), False),
}
RANGE = {"start_date": "2025-01-01", "end_date": "2025-01-31", "operation": "reprocess"}
SCOPE = {"modified_after": "2024-12-31T23:59:59.999999Z", "modified_before": "2025-02-01T00:00:00Z"}


@pytest.fixture
def by_day(csv_ingestion, source_dir):
    for path, (modified, _) in FILES.items():
        write(source_dir, path, 10, modified)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    # Every file is rewritten upstream with 20 rows, keeping its modification time.
    for path, (modified, _) in FILES.items():
        write(source_dir, path, 20, modified, tag="v2")
    return Ingestion.objects.get(pk=csv_ingestion.pk)


def rows_by_file(ingestion) -> dict[str, int]:
    return dict(ProcessedFile.objects.filter(ingestion=ingestion).values_list("path", "rows"))


def test_refresh_range_previews_as_full_refresh_with_the_same_scope(by_day, member):
    admin = member(Role.ADMIN)

    alias = admin.post(
        "/api/v1/ingestions/sales/refresh-range", {**RANGE, "dry_run": True}, format="json"
    )
    canonical = admin.post(
        "/api/v1/ingestions/sales/full-refresh", {"scope": SCOPE, "dry_run": True}, format="json"
    )

    assert alias.status_code == canonical.status_code == 200, alias.content
    assert comparable(alias.json()) == comparable(canonical.json())
    scope = alias.json()["scope"]
    assert scope["files_to_reload"] == 3
    assert sorted(item["path"] for item in scope["files"]) == sorted(
        path for path, (_, inside) in FILES.items() if inside
    )
    assert not RefreshOperation.objects.exists()


def test_refresh_range_reloads_exactly_the_files_of_those_whole_utc_days(by_day, member):
    admin = member(Role.ADMIN)

    response = admin.post(
        "/api/v1/ingestions/sales/refresh-range", {**RANGE, "confirm": True}, format="json"
    )

    assert response.status_code == 202, response.content
    operation = RefreshOperation.objects.get()
    assert operation.request["scope"] == {
        "modified_after": "2024-12-31T23:59:59.999999+00:00",
        "modified_before": "2025-02-01T00:00:00+00:00",
    }
    assert response.json()["label"] == "Selective refresh · 3 files"
    drain_queue()
    assert rows_by_file(by_day) == {
        path: 20 if inside else 10 for path, (_, inside) in FILES.items()
    }
    assert rows(by_day) == 3 * 20 + 2 * 10


def test_dates_the_other_way_round_are_the_same_days(by_day, member):
    admin = member(Role.ADMIN)
    url = "/api/v1/ingestions/sales/refresh-range"

    forward = admin.post(url, {**RANGE, "dry_run": True}, format="json").json()
    backward = admin.post(
        url,
        {"start_date": "2025-01-31", "end_date": "2025-01-01", "dry_run": True},
        format="json",
    ).json()

    assert backward["scope"]["scope"] == forward["scope"]["scope"]
    assert comparable(backward) == comparable(forward)


def test_one_day_is_start_and_end_the_same(by_day, member):
    admin = member(Role.ADMIN)
    one_day = {"start_date": "2025-01-15", "end_date": "2025-01-15"}

    preview = admin.post(
        "/api/v1/ingestions/sales/refresh-range", {**one_day, "dry_run": True}, format="json"
    ).json()

    assert [item["path"] for item in preview["scope"]["files"]] == ["jan15.csv"]


@pytest.mark.parametrize(
    ("body", "role", "ingestion_id", "status", "code"),
    [
        pytest.param({}, Role.ADMIN, "sales", 400, "CONFIRMATION_REQUIRED", id="no-confirm"),
        pytest.param(
            {"confirm": True}, Role.VIEWER, "sales", 403, "INSUFFICIENT_PERMISSIONS", id="viewer"
        ),
        pytest.param(
            {"confirm": True}, Role.OPERATOR, "sales", 403, "INSUFFICIENT_PERMISSIONS", id="op"
        ),
        pytest.param(
            {"confirm": True}, Role.ADMIN, "theirs", 404, "INGESTION_NOT_FOUND", id="other-tenant"
        ),
        pytest.param(
            {"confirm": True, "mode": "drop_first"},
            Role.ADMIN,
            "sales",
            409,
            "SCOPE_NOT_APPLICABLE",
            id="drop-first",
        ),
    ],
)
def test_refresh_range_refuses_as_a_scoped_full_refresh_does(
    by_day, member, other_tenant, body, role, ingestion_id, status, code
):
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    client = member(role)

    alias = client.post(
        f"/api/v1/ingestions/{ingestion_id}/refresh-range", {**RANGE, **body}, format="json"
    )
    canonical = client.post(
        f"/api/v1/ingestions/{ingestion_id}/full-refresh", {"scope": SCOPE, **body}, format="json"
    )

    assert (canonical.status_code, canonical.json()["error_code"]) == (status, code)
    assert (alias.status_code, alias.json()["error_code"]) == (status, code), alias.content
    assert alias.json()["detail"] == canonical.json()["detail"]
    assert not RefreshOperation.objects.exists()


@pytest.mark.parametrize(
    ("dates", "field"),
    [
        ({"start_date": "2025-02-30", "end_date": "2025-03-01"}, "start_date"),
        ({"start_date": "20250101", "end_date": "2025-01-31"}, "start_date"),
        ({"start_date": "2025-01-01T00:00:00Z", "end_date": "2025-01-31"}, "start_date"),
        ({"start_date": "0001-01-01", "end_date": "2025-01-31"}, "start_date"),
        ({"start_date": "2025-01-01", "end_date": "2100-01-01"}, "end_date"),
        ({"start_date": 20250101, "end_date": "2025-01-31"}, "start_date"),
        ({"end_date": "2025-01-31"}, "start_date"),
    ],
)
def test_refresh_range_refuses_bad_dates_and_changes_nothing(by_day, member, dates, field):
    admin = member(Role.ADMIN)

    response = admin.post(
        "/api/v1/ingestions/sales/refresh-range", {**dates, "confirm": True}, format="json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert field in response.json()["detail"]
    assert not RefreshOperation.objects.exists()


# --- PUT / PATCH /ingestions/{id} with refresh_schedule ---------------------------------------


PRD_SCHEDULE = {"refresh_schedule": {"operation": "full_refresh", "cron": "0 2 * * *"}}


def schedule_shape(payload: dict) -> dict:
    keep = ("action", "cron", "timezone", "paused", "condition", "created_by", "approval")
    return {key: payload[key] for key in keep}


@pytest.mark.parametrize("method", ["put", "patch"])
def test_refresh_schedule_sets_the_same_schedule_as_the_schedules_endpoint(member, tenant, method):
    admin = member(Role.ADMIN)
    IngestionFactory(tenant=tenant, public_id="sales")
    IngestionFactory(tenant=tenant, public_id="users")

    alias = getattr(admin, method)("/api/v1/ingestions/sales", PRD_SCHEDULE, format="json")
    canonical = admin.post(
        "/api/v1/ingestions/users/schedules",
        {"action": "full_refresh", "cron": "0 2 * * *"},
        format="json",
    )

    assert alias.status_code == 200, alias.content
    assert canonical.status_code == 201
    shown = alias.json()["refresh_schedule"]
    assert schedule_shape(shown) == schedule_shape(canonical.json())
    assert alias.json()["id"] == "sales"  # the ingestion, as PATCH answers
    listed = admin.get("/api/v1/ingestions/sales/schedules").json()
    assert [item["id"] for item in listed] == [shown["id"]]

    # Again (PUT is idempotent): the one full_refresh schedule changes, none is added.
    again = getattr(admin, method)(
        "/api/v1/ingestions/sales",
        {
            "refresh_schedule": {
                "operation": "full_refresh",
                "cron": "30 3 * * *",
                "timezone": "Europe/Berlin",
            }
        },
        format="json",
    )
    assert again.status_code == 200, again.content
    assert again.json()["refresh_schedule"]["id"] == shown["id"]
    schedule = Schedule.objects.get(ingestion__public_id="sales")
    assert (schedule.cron, schedule.timezone) == ("30 3 * * *", "Europe/Berlin")


def test_refresh_schedule_of_an_ingestion_with_several_is_refused(member, tenant):
    admin = member(Role.ADMIN)
    IngestionFactory(tenant=tenant, public_id="sales")
    for cron in ("0 2 * * *", "0 4 * * *"):
        admin.post(
            "/api/v1/ingestions/sales/schedules",
            {"action": "full_refresh", "cron": cron},
            format="json",
        )

    response = admin.put("/api/v1/ingestions/sales", PRD_SCHEDULE, format="json")

    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert "several full_refresh schedules" in response.json()["detail"]
    assert Schedule.objects.count() == 2


@pytest.mark.parametrize(
    ("value", "role", "ingestion_id", "status", "code"),
    [
        pytest.param(
            {"operation": "full_refresh", "cron": "0 2 * * *"},
            Role.VIEWER,
            "sales",
            403,
            "INSUFFICIENT_PERMISSIONS",
            id="viewer",
        ),
        pytest.param(
            {"operation": "full_refresh", "cron": "0 2 * * *"},
            Role.OPERATOR,
            "sales",
            403,
            "INSUFFICIENT_PERMISSIONS",
            id="operator-full-refresh",
        ),
        pytest.param(
            {"operation": "fresh_start", "cron": "0 2 * * *"},
            Role.OPERATOR,
            "sales",
            200,
            None,
            id="operator-fresh-start",
        ),
        pytest.param(
            {"operation": "full_refresh", "cron": "0 2 * * *"},
            Role.ADMIN,
            "theirs",
            404,
            "INGESTION_NOT_FOUND",
            id="other-tenant",
        ),
        pytest.param(
            {"operation": "full_refresh", "cron": "* * * * *"},
            Role.ADMIN,
            "sales",
            400,
            "VALIDATION_ERROR",
            id="too-often",
        ),
        pytest.param(
            {"operation": "full_refresh", "cron": "0 2 * * *", "timezone": "Mars/Base"},
            Role.ADMIN,
            "sales",
            400,
            "VALIDATION_ERROR",
            id="bad-zone",
        ),
    ],
)
def test_refresh_schedule_refuses_as_the_schedules_endpoint_does(
    member, tenant, other_tenant, value, role, ingestion_id, status, code
):
    IngestionFactory(tenant=tenant, public_id="sales")
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    client = member(role)
    action = {"action": value["operation"], **{k: v for k, v in value.items() if k != "operation"}}

    alias = client.put(
        f"/api/v1/ingestions/{ingestion_id}", {"refresh_schedule": value}, format="json"
    )
    canonical = client.post(f"/api/v1/ingestions/{ingestion_id}/schedules", action, format="json")

    assert alias.status_code == status, alias.content
    assert canonical.status_code == (201 if status == 200 else status)
    if code:
        assert alias.json()["error_code"] == canonical.json()["error_code"] == code
        assert not Schedule.objects.exists()
    else:
        assert Schedule.objects.count() == 2  # one by each door


@pytest.mark.parametrize(
    "value",
    [
        {"cron": "0 2 * * *"},
        {"operation": "run", "cron": "0 2 * * *"},
        {"operation": "full_refresh"},
        {"operation": "full_refresh", "cron": "0 2 * * *", "condition": "new_files > 0"},
        None,
        "0 2 * * *",
    ],
)
def test_a_malformed_refresh_schedule_is_a_400_and_changes_nothing(member, tenant, value):
    admin = member(Role.ADMIN)
    ingestion = IngestionFactory(tenant=tenant, public_id="sales", name="Sales")

    response = admin.patch(
        "/api/v1/ingestions/sales",
        {"name": "Renamed", "refresh_schedule": value},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert not Schedule.objects.exists()
    ingestion.refresh_from_db()
    assert ingestion.name == "Sales"  # one request, one outcome


def test_put_without_refresh_schedule_is_patch(member, tenant):
    admin = member(Role.ADMIN)
    ingestion = IngestionFactory(tenant=tenant, public_id="sales", name="Sales")

    response = admin.put("/api/v1/ingestions/sales", {"name": "Renamed"}, format="json")

    assert response.status_code == 200
    ingestion.refresh_from_db()
    assert ingestion.name == "Renamed"
    assert (
        member(Role.VIEWER)
        .put("/api/v1/ingestions/sales", {"name": "X"}, format="json")
        .status_code
        == 403
    )


# --- the schema documents both spellings ----------------------------------------------------


def test_the_schema_documents_each_alias_and_names_the_canonical_door(admin_client):
    schema = admin_client.get("/api/schema/?format=json").json()
    paths = schema["paths"]

    batch = paths["/api/v1/batch-refresh"]["post"]
    assert "/api/v1/refresh-batches" in batch["summary"] and "canonical" in batch["summary"]
    assert "batch-refresh" in paths["/api/v1/refresh-batches"]["post"]["description"]
    ranged = paths["/api/v1/ingestions/{ingestion_id}/refresh-range"]["post"]
    assert "UTC" in ranged["description"] and "both are included" in ranged["description"]
    assert "full-refresh" in ranged["description"]
    put = paths["/api/v1/ingestions/{ingestion_id}"]["put"]
    assert "PATCH" in put["summary"] and "canonical" in put["summary"]
    request = schema["components"]["schemas"]
    refresh_schedule = next(
        component["properties"]["refresh_schedule"]
        for component in request.values()
        if "refresh_schedule" in component.get("properties", {})
    )
    assert refresh_schedule["properties"]["operation"]["enum"] == list(REFRESH_ACTIONS)
    assert "/schedules" in refresh_schedule["description"]
    assert "refresh-if" in " ".join(paths)


def test_the_ingestion_api_names_the_operations_refresh_schedules():
    assert [action.value for action in REFRESH_ACTIONS] == REFRESH_SCHEDULE_OPERATIONS
