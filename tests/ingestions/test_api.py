"""The granular REST API: shapes, validation, runs, history, errors."""

import pytest

from ingestions.models import Ingestion, ProcessedFile, Role, Run, RunStatus

from ..factories import IngestionFactory
from ..helpers import drain_queue, write_csv_files


def create_body(source_dir, **overrides):
    body = {
        "name": "Sales",
        "source": {"uri": str(source_dir), "format": "csv", "pattern": "*.csv"},
        "destination": {"table": "raw.sales_data"},
    }
    body.update(overrides)
    return body


@pytest.mark.django_db
def test_create_returns_the_ingestion_with_its_table_and_last_run(admin_client, source_dir):
    response = admin_client.post("/api/v1/ingestions", create_body(source_dir), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"].startswith("ing-")
    assert body["source"] == {
        "uri": source_dir.as_uri(),  # given as a bare path: returned in the one form
        "format": "csv",
        "pattern": "*.csv",
        "options": {},
    }
    # The user's name, and the tenant's own physical table behind it.
    assert body["destination"] == {"table": "raw.sales_data", "identifier": "acme__raw.sales_data"}
    assert body["engine"] == "iceberg"
    assert body["cost_per_gb_usd"] == 0.25
    assert body["table"]["identifier"] == "acme__raw.sales_data"
    assert body["table"]["exists"] is False
    assert body["last_run"] is None


@pytest.mark.django_db
def test_create_with_a_chosen_slug(admin_client, source_dir):
    response = admin_client.post(
        "/api/v1/ingestions", create_body(source_dir, id="users-snapshot"), format="json"
    )
    assert response.status_code == 201
    assert response.json()["id"] == "users-snapshot"
    again = admin_client.post(
        "/api/v1/ingestions",
        create_body(source_dir, id="users-snapshot", destination={"table": "raw.other"}),
        format="json",
    )
    assert again.status_code == 409
    assert again.json()["error_code"] == "INGESTION_EXISTS"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source": {"format": "xml"}}, "source"),
        ({"destination": {"table": "no_namespace"}}, "destination"),
        ({"destination": {"table": "raw.Bad-Name"}}, "destination"),
        ({"source": None}, "source"),
        ({"name": ""}, "name"),
        ({"id": "Not A Slug"}, "id"),
        ({"cost_per_gb_usd": -1}, "cost_per_gb_usd"),
        ({"engine": "duckdb"}, "engine"),
        ({"surprise": 1}, "surprise"),
        ({"source": {"format": "csv", "options": {"delimitr": ";"}}}, "source.options"),
    ],
)
def test_create_refuses_bad_bodies_with_field_errors(admin_client, source_dir, change, field):
    if isinstance(change.get("source"), dict):
        # A source inside the tenant's location: what is refused is the field under test.
        change = {**change, "source": {"uri": str(source_dir), **change["source"]}}
    body = create_body(source_dir)
    body.update(change)
    response = admin_client.post("/api/v1/ingestions", body, format="json")

    assert response.status_code == 400
    payload = response.json()
    assert payload["error_code"] == "VALIDATION_ERROR"
    assert field in payload["errors"]
    assert payload["detail"].startswith("Invalid request.")
    assert not Ingestion.objects.exists()


@pytest.mark.django_db
def test_malformed_json_is_a_validation_error(admin_client):
    response = admin_client.post("/api/v1/ingestions", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"


@pytest.mark.django_db
def test_list_get_patch_delete(admin_client, tenant, source_dir):
    ingestion = IngestionFactory(tenant=tenant, public_id="sales")

    listing = admin_client.get("/api/v1/ingestions").json()
    assert [item["id"] for item in listing["results"]] == ["sales"]

    patched = admin_client.patch(
        "/api/v1/ingestions/sales",
        {"name": "Renamed", "protected": True, "source": {"pattern": "*.gz"}},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["name"] == "Renamed"
    assert patched.json()["protected"] is True
    assert patched.json()["source"]["pattern"] == "*.gz"

    refused = admin_client.patch(
        "/api/v1/ingestions/sales", {"destination": {"table": "raw.x"}}, format="json"
    )
    assert refused.status_code == 400

    assert admin_client.get("/api/v1/ingestions/sales").json()["name"] == "Renamed"
    unconfirmed = admin_client.delete("/api/v1/ingestions/sales")
    assert unconfirmed.status_code == 400
    assert unconfirmed.json()["error_code"] == "CONFIRMATION_REQUIRED"
    protected = admin_client.delete("/api/v1/ingestions/sales", {"confirm": True}, format="json")
    assert protected.status_code == 423
    assert protected.json()["error_code"] == "TABLE_PROTECTED"
    assert Ingestion.objects.filter(pk=ingestion.pk).exists()

    admin_client.patch("/api/v1/ingestions/sales", {"protected": False}, format="json")
    deleted = admin_client.delete("/api/v1/ingestions/sales", {"confirm": True}, format="json")
    assert deleted.status_code == 200, deleted.json()
    body = deleted.json()
    assert (body["id"], body["deleted"]) == ("sales", True)
    assert body["table"]["name"] == ingestion.destination_table
    assert body["table"]["identifier"] == ingestion.table_identifier
    assert body["table"]["action"] == "kept"
    assert not Ingestion.objects.filter(pk=ingestion.pk).exists()
    missing = admin_client.get("/api/v1/ingestions/sales")
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "INGESTION_NOT_FOUND"


@pytest.mark.django_db(transaction=True)
def test_run_endpoint_queues_a_run_and_the_worker_loads_it(admin_client, csv_ingestion, source_dir):
    write_csv_files(source_dir, files=3, rows=4)

    response = admin_client.post("/api/v1/ingestions/sales/run")
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.json()["status"] == "QUEUED"

    conflict = admin_client.post("/api/v1/ingestions/sales/run")
    assert conflict.status_code == 409
    assert conflict.json()["error_code"] == "RUN_IN_PROGRESS"
    assert conflict.json()["current_run_id"] == run_id
    assert conflict["X-Current-Run-ID"] == run_id

    drain_queue()
    run = admin_client.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "SUCCESS"
    assert run["files_found"] == run["files_loaded"] == 3
    assert run["rows_written"] == 12
    assert run["progress"] == 1.0
    assert set(run) >= {
        "run_id", "ingestion_id", "status", "trigger", "files_found", "files_loaded",
        "files_failed", "failed_files", "rows_written", "bytes_read", "progress",
        "created_at", "started_at", "finished_at", "error",
    }  # fmt: skip

    detail = admin_client.get("/api/v1/ingestions/sales").json()
    assert detail["table"]["exists"] is True
    assert detail["table"]["row_count"] == 12
    assert detail["table"]["snapshot_id"]
    assert detail["last_run"]["run_id"] == run_id

    runs = admin_client.get("/api/v1/ingestions/sales/runs").json()
    assert [item["run_id"] for item in runs["results"]] == [run_id]

    files = admin_client.get("/api/v1/ingestions/sales/processed-files").json()
    assert sorted(item["path"] for item in files["results"]) == [
        "part-0000.csv",
        "part-0001.csv",
        "part-0002.csv",
    ]


@pytest.mark.django_db
def test_cancel_endpoint(admin_client, csv_ingestion):
    run_id = admin_client.post("/api/v1/ingestions/sales/run").json()["run_id"]

    cancelled = admin_client.post(f"/api/v1/runs/{run_id}/cancel")
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "CANCELLED"
    again = admin_client.post(f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error_code"] == "RUN_NOT_CANCELLABLE"


@pytest.mark.django_db
def test_clearing_history_needs_confirmation_and_says_how_many(admin_client, csv_ingestion):
    from django.utils import timezone

    ProcessedFile.objects.bulk_create(
        ProcessedFile(ingestion=csv_ingestion, path=f"f{i}.csv", loaded_at=timezone.now())
        for i in range(7)
    )
    for attempt in [None, {"confirm": False}, {"confirm": "true"}, {}]:
        refused = admin_client.delete(
            "/api/v1/ingestions/sales/processed-files", attempt, format="json"
        )
        assert refused.status_code == 400
        assert refused.json()["error_code"] == "CONFIRMATION_REQUIRED"
    assert ProcessedFile.objects.count() == 7

    cleared = admin_client.delete("/api/v1/ingestions/sales/processed-files?confirm=true")
    assert cleared.status_code == 200
    body = cleared.json()
    assert (body["status"], body["ingestion_id"]) == ("success", "sales")
    assert body["operations"][0]["operation"] == "processed_files_cleared"
    assert body["operations"][0]["details"]["files_cleared"] == 7
    assert not ProcessedFile.objects.exists()


@pytest.mark.django_db
def test_clearing_history_is_refused_while_a_run_is_active(admin_client, csv_ingestion):
    run = Run.objects.create(ingestion=csv_ingestion, status=RunStatus.RUNNING)
    response = admin_client.delete(
        "/api/v1/ingestions/sales/processed-files", {"confirm": True}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["current_run_id"] == run.public_id


@pytest.mark.django_db
def test_a_user_in_two_tenants_chooses_with_the_x_tenant_header(member, tenant, other_tenant):
    IngestionFactory(tenant=tenant, public_id="mine")
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    client = member(Role.VIEWER)
    from ingestions.models import Membership

    Membership.objects.create(user=client.user, tenant=other_tenant, role=Role.VIEWER)

    first = client.get("/api/v1/ingestions").json()["results"]
    chosen = client.get("/api/v1/ingestions", HTTP_X_TENANT="globex").json()["results"]
    assert [item["id"] for item in first] == ["mine"]
    assert [item["id"] for item in chosen] == ["theirs"]
    assert client.get("/api/v1/ingestions", HTTP_X_TENANT="nope").status_code == 403


@pytest.mark.django_db
def test_healthz_reports_database_and_catalog(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.django_db
def test_healthz_is_unavailable_when_the_catalog_is(client, settings, tmp_path):
    settings.AUTOLOADER_CATALOG_URI = f"sqlite:///{tmp_path}/missing/dir/catalog.db"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["catalog"] == "error"


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served_locally(admin_client, client):
    schema = admin_client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/ingestions/{ingestion_id}/run" in schema.json()["paths"]
    docs = admin_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
    # Not logged in: to the login page and back, not a bare 401; the schema stays JSON.
    anonymous = client.get("/api/docs/")
    assert (anonymous.status_code, anonymous["Location"]) == (302, "/login/?next=/api/docs/")
    assert client.get("/api/schema/").status_code == 401
    # No internal docstring as the endpoints' description.
    assert "Resolves the caller" not in schema.content.decode()
