"""The refresh REST contract: PRD shapes, status and error codes, headers, replays."""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from ingestions.engines import load_engine
from ingestions.models import ProcessedFile, Role, Run
from ingestions.runs import run_request
from refresh.models import RefreshOperation

from ..factories import IngestionFactory
from ..helpers import drain_queue, failing_sql, open_table

pytestmark = pytest.mark.django_db(transaction=True)

FULL = "/api/v1/ingestions/sales/full-refresh"
FRESH = "/api/v1/ingestions/sales/fresh-start"
TABLE = "/api/v1/ingestions/sales/table"


def test_full_refresh_answers_202_with_the_prd_shape(loaded, admin_client):
    response = admin_client.post(FULL, {"confirm": True}, format="json")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "accepted"
    # Not "completed": the run has only been queued; it publishes the new table when it ends.
    assert body["message"].startswith(f"Full refresh accepted: run {body['run_id']} builds")
    assert body["mode"] == "atomic" and body["publish"]["state"] == "staging"
    assert body["ingestion_id"] == "sales"
    assert body["run_id"].startswith("run-")
    assert body["operation_id"].startswith("op-")
    assert response["X-Operation-ID"] == body["operation_id"]
    assert [step["operation"] for step in body["operations"]] == [
        "table_dropped",
        "processed_files_cleared",
        "run_triggered",
    ]
    step = body["operations"][0]
    assert set(step) == {"operation", "status", "timestamp", "details", "error", "error_code"}
    assert step["details"]["table_name"] == "raw.sales"
    assert step["details"]["row_count"] == 100
    assert body["operations"][2]["details"]["run_url"] == f"/api/v1/runs/{body['run_id']}"
    assert set(body["impact"]) == {
        "files_to_process",
        "files_skipped",
        "estimated_data_size_gb",
        "estimated_cost_usd",
        "estimated_duration_minutes",
    }
    assert body["impact"]["files_to_process"] == 4
    assert isinstance(body["warnings"], list)


def test_dry_run_needs_no_confirmation_and_shows_the_plan(loaded, admin_client):
    for body in ({"dry_run": True}, {"confirm": True, "dry_run": True}):
        response = admin_client.post(FULL, body, format="json")
        assert response.status_code == 200
        payload = response.json()
        assert payload["status"] == "dry_run"
        assert payload["plan_id"].startswith("plan-")
        assert [item["operation"] for item in payload["would_perform"]] == [
            "table_dropped",
            "processed_files_cleared",
            "run_triggered",
        ]
        assert payload["would_perform"][0]["details"]["current_row_count"] == 100
        assert payload["would_perform"][1]["details"]["files_to_clear"] == 4
        assert payload["next_steps"]["to_proceed"].startswith(
            "POST /api/v1/ingestions/sales/full-refresh with confirm=true"
        )
    assert load_engine().table_exists(loaded.table_identifier)
    assert not RefreshOperation.objects.exists()


def test_fresh_start_dry_run_reports_skipped_history(loaded, admin_client):
    payload = admin_client.post(FRESH, {"dry_run": True}, format="json").json()
    assert payload["impact"]["files_to_process"] == 0
    assert payload["impact"]["files_skipped"] == 4
    assert payload["would_perform"][1]["details"]["new_files_only"] is True
    assert any("4 files remain marked as processed" in note for note in payload["notes"])


@pytest.mark.parametrize(
    "body", [None, {}, {"confirm": False}, {"confirm": "true"}, {"confirm": 1}, {"confirm": None}]
)
def test_no_confirmation_no_change(loaded, admin_client, body):
    response = admin_client.post(FULL, body, format="json")
    assert response.status_code == 400
    assert response.json()["error_code"] == "CONFIRMATION_REQUIRED"
    assert response.json()["help"]
    assert load_engine().table_exists(loaded.table_identifier)


def test_a_typo_in_the_body_is_a_validation_error(loaded, admin_client):
    response = admin_client.post(FULL, {"confrim": True}, format="json")
    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert "confrim" in response.json()["errors"]


def test_auto_run_false_reports_the_run_step_skipped_with_200(loaded, admin_client):
    response = admin_client.post(FULL, {"confirm": True, "auto_run": False}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "success"
    assert response.json()["operations"][-1]["status"] == "skipped"
    assert response.json()["run_id"] is None


def test_drop_table_with_body_or_query_and_idempotent(loaded, admin_client):
    first = admin_client.delete(TABLE, {"confirm": True}, format="json")
    assert first.status_code == 200
    assert first.json()["details"]["table_existed"] is True
    assert first.json()["details"]["row_count"] == 100
    assert first.json()["message"] == "Table dropped successfully"

    second = admin_client.delete(f"{TABLE}?confirm=true")
    assert second.status_code == 200
    assert second.json()["details"] == {"table_name": "raw.sales", "table_existed": False}
    assert second.json()["message"] == "Table did not exist"
    assert ProcessedFile.objects.count() == 4

    refused = admin_client.delete(TABLE)
    assert refused.status_code == 400
    assert refused.json()["error_code"] == "CONFIRMATION_REQUIRED"


def test_protected_is_423(loaded, admin_client):
    loaded.protected = True
    loaded.save()
    response = admin_client.post(FULL, {"confirm": True}, format="json")
    assert response.status_code == 423
    assert response.json()["error_code"] == "TABLE_PROTECTED"


def test_active_run_is_409_with_current_run_id_and_header(loaded, admin_client):
    run = run_request(ingestion=loaded)
    response = admin_client.post(FRESH, {"confirm": True}, format="json")
    assert response.status_code == 409
    assert response.json()["error_code"] == "RUN_IN_PROGRESS"
    assert response.json()["current_run_id"] == run.public_id
    assert response["X-Current-Run-ID"] == run.public_id


def test_a_run_request_during_a_refresh_is_409_refresh_in_progress(loaded, admin_client):
    op = RefreshOperation.objects.create(
        tenant=loaded.tenant,
        ingestion=loaded,
        ingestion_public_id="sales",
        table_name="raw.sales",
        kind="drop_table",
    )
    response = admin_client.post("/api/v1/ingestions/sales/run")
    assert response.status_code == 409
    assert response.json()["error_code"] == "REFRESH_IN_PROGRESS"
    assert response.json()["current_operation_id"] == op.public_id


def test_permission_and_tenancy(loaded, member, other_tenant):
    viewer, operator = member(Role.VIEWER), member(Role.OPERATOR)
    stranger = member(Role.ADMIN, tenant_obj=other_tenant)
    assert viewer.post(FULL, {"dry_run": True}, format="json").status_code == 200
    denied = viewer.post(FRESH, {"confirm": True}, format="json")
    assert (denied.status_code, denied.json()["error_code"]) == (403, "INSUFFICIENT_PERMISSIONS")
    assert operator.post(FULL, {"confirm": True}, format="json").status_code == 403
    assert operator.post(FRESH, {"confirm": True}, format="json").status_code == 202
    hidden = stranger.post(FULL, {"dry_run": True}, format="json")
    assert (hidden.status_code, hidden.json()["error_code"]) == (404, "INGESTION_NOT_FOUND")
    op_id = RefreshOperation.objects.get().public_id
    assert stranger.get(f"/api/v1/refresh-operations/{op_id}").status_code == 404
    assert viewer.get(f"/api/v1/refresh-operations/{op_id}").status_code == 200
    assert APIClient().post(FULL, {"dry_run": True}, format="json").status_code == 401


def test_rate_limit_is_429_with_retry_after_and_dry_runs_do_not_count(
    settings, loaded, admin_client
):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "drop_table": "2/h"}
    for _ in range(3):
        assert admin_client.delete(f"{TABLE}?dry_run=true").status_code == 200
    assert admin_client.delete(f"{TABLE}?confirm=true").status_code == 200
    assert admin_client.delete(f"{TABLE}?confirm=true").status_code == 200
    limited = admin_client.delete(f"{TABLE}?confirm=true")
    assert limited.status_code == 429
    assert limited.json()["error_code"] == "RATE_LIMITED"
    assert int(limited["Retry-After"]) > 0


def test_refused_calls_do_not_use_up_the_rate(settings, loaded, admin_client):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "fresh_start": "1/h"}
    run = run_request(ingestion=loaded)
    for _ in range(3):
        assert admin_client.post(FRESH, {"confirm": True}, format="json").status_code == 409
    Run.objects.filter(pk=run.pk).update(status="CANCELLED")
    assert admin_client.post(FRESH, {"confirm": True}, format="json").status_code == 202
    Run.objects.update(status="CANCELLED")
    limited = admin_client.post(FRESH, {"confirm": True}, format="json")
    assert limited.status_code == 429


def test_feature_flag_off_is_503_but_the_granular_endpoints_stay(settings, loaded, admin_client):
    settings.ENABLE_REFRESH_OPERATIONS_API = False
    for response in (
        admin_client.post(FULL, {"confirm": True}, format="json"),
        admin_client.post(FRESH, {"dry_run": True}, format="json"),
        admin_client.delete(f"{TABLE}?confirm=true"),
    ):
        assert response.status_code == 503
        assert response.json()["error_code"] == "REFRESH_API_DISABLED"
    assert load_engine().table_exists(loaded.table_identifier)
    cleared = admin_client.delete("/api/v1/ingestions/sales/processed-files?confirm=true")
    assert cleared.status_code == 200
    assert admin_client.post("/api/v1/ingestions/sales/run").status_code == 202


def test_idempotency_key_replays_and_refuses_another_body(loaded, admin_client):
    headers = {"HTTP_IDEMPOTENCY_KEY": "nightly-2026-11-26"}
    first = admin_client.post(FULL, {"confirm": True, "auto_run": False}, format="json", **headers)
    again = admin_client.post(FULL, {"confirm": True, "auto_run": False}, format="json", **headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert RefreshOperation.objects.count() == 1

    other = admin_client.post(FULL, {"confirm": True}, format="json", **headers)
    assert other.status_code == 422
    assert other.json()["error_code"] == "IDEMPOTENCY_KEY_REUSED"
    # It names what the key made, for a client to follow instead of refreshing twice.
    assert other.json()["operation_id"] == first.json()["operation_id"]


def test_partial_failure_is_500_with_recovery_and_resume_finishes(loaded, admin_client, settings):
    settings.REFRESH_DEFAULT_MODE = "drop_first"  # only dropping first can fail half-way
    with failing_sql('INSERT INTO "ingestions_run"'):
        response = admin_client.post(FULL, {"confirm": True}, format="json")
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == "partial_failure"
    assert body["error_code"] == "PARTIAL_FAILURE"
    assert [(s["operation"], s["status"]) for s in body["operations"]] == [
        ("table_dropped", "success"),
        ("processed_files_cleared", "success"),
        ("run_triggered", "failed"),
    ]
    recovery = body["recovery"]
    assert recovery["state"] == "Table dropped, file history cleared, no run triggered"
    resume = f"POST /api/v1/refresh-operations/{body['operation_id']}/resume"
    assert resume in recovery["action"]

    record = admin_client.get(f"/api/v1/refresh-operations/{body['operation_id']}").json()
    assert record["status"] == "partial_failure"

    resumed = admin_client.post(resume.split(" ", 1)[1])
    assert resumed.status_code == 202
    assert resumed.json()["status"] == "accepted"
    assert resumed.json()["run_id"]
    assert admin_client.post(resume.split(" ", 1)[1]).status_code == 409


def test_a_failed_drop_answers_the_prd_error_shape(loaded, admin_client, settings, tmp_path):
    settings.AUTOLOADER_CATALOG_URI = f"sqlite:///{tmp_path}/nowhere/catalog.db"
    response = admin_client.delete(f"{TABLE}?confirm=true")
    assert response.status_code == 500
    assert response.json()["error_code"] == "CLUSTER_UNAVAILABLE"


def test_operations_of_an_ingestion_are_listed(loaded, admin_client):
    admin_client.delete(f"{TABLE}?confirm=true")
    listing = admin_client.get("/api/v1/ingestions/sales/refresh-operations").json()
    assert [item["operation_type"] for item in listing["results"]] == ["drop_table"]


def test_metrics_count_operations_for_a_scraper_with_the_token(settings, loaded, admin_client):
    settings.AUTOLOADER_METRICS_TOKEN = "scrape-me"
    admin_client.delete(f"{TABLE}?confirm=true")
    assert APIClient().get("/metrics").status_code == 401
    text = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").content.decode()
    assert (
        'autoloader_refresh_operations_total{operation_type="drop_table",status="success"} 1.0'
        in text
    )
    assert 'autoloader_refresh_duration_seconds_count{operation_type="drop_table"} 1.0' in text
    assert "autoloader_refresh_cost_usd_bucket" in text
    assert 'autoloader_runs_total{status="SUCCESS"} 1.0' in text


def test_a_storm_of_concurrent_refreshes_executes_exactly_once(loaded, member):
    tokens = [member(Role.ADMIN) for _ in range(12)]
    barrier = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def call(client):
        barrier.wait()
        try:
            statuses.append(client.post(FULL, {"confirm": True}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(client,)) for client in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses).count(202) == 1, statuses
    assert all(code == 409 for code in statuses if code != 202), statuses
    assert RefreshOperation.objects.count() == 1
    assert Run.objects.filter(status__in=["QUEUED", "RUNNING"]).count() == 1


def test_processed_files_delete_goes_through_the_refresh_service(loaded, admin_client):
    IngestionFactory(tenant=loaded.tenant, public_id="other")
    response = admin_client.delete(
        "/api/v1/ingestions/sales/processed-files", {"confirm": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["operation_id"].startswith("op-")
    assert RefreshOperation.objects.get().kind == "clear_processed_files"


def test_a_history_clear_says_what_the_next_run_does_and_it_reloads_without_duplicates(
    loaded, admin_client
):
    """Tell before they type (issue 24): clearing the history keeps the table's rows; the
    next run loads every file again, each replacing its own rows. The dry-run says so, and
    it is what happens: the same 100 rows, not 200."""
    url = "/api/v1/ingestions/sales/processed-files"
    preview = admin_client.delete(url, {"dry_run": True}, format="json").json()
    reload = [warning for warning in preview["warnings"] if warning.startswith("RELOAD")]
    assert len(reload) == 1 and "keeps its 100 rows" in reload[0], preview["warnings"]
    assert "no row is there twice" in reload[0]

    assert admin_client.delete(f"{url}?confirm=true").status_code == 200
    assert admin_client.post("/api/v1/ingestions/sales/run").status_code == 202
    drain_queue()
    rows = open_table(loaded.table_identifier).scan(selected_fields=("_source_file",)).to_arrow()
    assert rows.num_rows == 100  # each of the 4 files' 25 rows, once
    counts = rows.group_by("_source_file").aggregate([("_source_file", "count")]).to_pydict()
    assert dict(zip(*counts.values(), strict=True)) == {f"part-{i:04d}.csv": 25 for i in range(4)}
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4


def test_a_history_clear_of_a_missing_table_says_nothing_of_its_rows(loaded, admin_client):
    load_engine().drop_table(loaded.table_identifier)
    preview = admin_client.delete(
        "/api/v1/ingestions/sales/processed-files", {"dry_run": True}, format="json"
    ).json()
    assert not [warning for warning in preview["warnings"] if warning.startswith("RELOAD")]


def test_every_dry_run_says_what_is_left_of_the_rate_and_warns_when_nothing_is(
    loaded, admin_client, settings
):
    """Tell before they type (issue 25): the quota in the dry-run, and a warning once it is
    used up, before anyone confirms and meets a 429."""
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    url = "/api/v1/ingestions/sales/full-refresh"
    first = admin_client.post(url, {"dry_run": True}, format="json").json()
    assert (first["quota"]["limit"], first["quota"]["remaining"]) == (1, 1)
    assert not [w for w in first["warnings"] if w.startswith("RATE_LIMITED")]

    assert admin_client.post(url, {"confirm": True}, format="json").status_code in (200, 202)
    drain_queue()
    second = admin_client.post(url, {"dry_run": True}, format="json").json()

    assert second["quota"]["remaining"] == 0
    limited = [w for w in second["warnings"] if w.startswith("RATE_LIMITED")]
    assert len(limited) == 1 and "next is possible at" in limited[0]
    refused = admin_client.post(url, {"confirm": True}, format="json")
    assert refused.status_code == 429  # what the warning said
