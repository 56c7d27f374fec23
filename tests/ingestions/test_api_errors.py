"""Every answer under /api/ is the JSON error shape, unknown paths and methods included."""

import pytest
from django.test import Client, override_settings

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
