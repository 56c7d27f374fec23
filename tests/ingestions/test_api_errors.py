"""Every answer under /api/ is the JSON error shape, unknown paths and methods included."""

import importlib

import pytest
from django.test import Client, override_settings

from ingestions.errors import AutoloaderError, TableProtectedError

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
@pytest.mark.parametrize(
    "path",
    ["/api/v1/refresh-operations", "/api/v1/nope/deeper", "/api/", "/api/v2/ingestions"],
)
def test_an_unknown_api_path_is_a_json_404(admin_client, path, method, debug):
    with override_settings(DEBUG=debug):
        response = getattr(admin_client, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error_code"] == "NOT_FOUND"
    assert path in response.json()["detail"]


def test_an_unknown_api_path_is_a_json_404_without_credentials_too():
    response = Client().get("/api/v1/refresh-operations")
    assert (response.status_code, response.json()["error_code"]) == (404, "NOT_FOUND")


def test_a_trailing_slash_is_pointed_out(admin_client):
    response = admin_client.get("/api/v1/ingestions/")
    assert response.status_code == 404
    assert "Did you mean /api/v1/ingestions (no trailing slash)?" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/v1/ingestions"),
        ("put", "/api/v1/ingestions/sales/run"),
        ("get", "/api/v1/ingestions/sales/full-refresh"),
        ("post", "/api/v1/locations"),
    ],
)
def test_a_wrong_method_is_a_json_405(admin_client, csv_ingestion, method, path):
    response = getattr(admin_client, method)(path)
    assert response.status_code == 405
    assert response.json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert response["Allow"]


def test_console_paths_keep_the_html_404(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def _domain_errors():
    """Every domain error class of every app (imported, so its subclasses are known)."""
    for module in (
        "ingestions.staging",
        "ingestions.tenancy",
        "ingestions.tokens",
        "refresh.errors",
        "refresh.schedules",
        "webhooks.errors",
    ):
        importlib.import_module(module)
    found, todo = [], [AutoloaderError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_each_error_code_has_one_http_status_and_client_errors_are_not_500():
    by_code: dict[str, set[int]] = {}
    for cls in _domain_errors():
        by_code.setdefault(cls.error_code, set()).add(cls.status_code)
    assert all(len(statuses) == 1 for statuses in by_code.values()), by_code
    # What a client can cause is a 4xx; only the server's own failures are a 5xx.
    server_side = {
        "INTERNAL_ERROR",
        "ENGINE_ERROR",
        "CLUSTER_UNAVAILABLE",
        "SPARK_ERROR",
        "REFRESH_API_DISABLED",
        # Raised and handled inside the worker and the scheduler, never answered.
        "RUN_CANCELLED",
        "RUN_OWNERSHIP_LOST",
        "RUN_FAILED",
        "APPROVAL_REQUIRED",
    }
    for code, (status,) in by_code.items():
        assert (status >= 500) == (code in server_side), (code, status)


def test_the_api_answers_a_refusal_with_the_errors_own_status(admin_client, csv_ingestion):
    csv_ingestion.protected = True
    csv_ingestion.save(update_fields=["protected"])
    path = f"/api/v1/ingestions/{csv_ingestion.public_id}"
    api = admin_client.delete(f"{path}?confirm=true")
    assert (api.status_code, api.json()["error_code"]) == (
        TableProtectedError.status_code,
        "TABLE_PROTECTED",
    )
