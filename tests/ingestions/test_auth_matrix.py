"""Who may call which endpoint of the granular API: one table, every caller, every endpoint."""

from typing import NamedTuple

import pytest
from django.conf import settings
from django.test import Client
from django.utils.crypto import get_random_string

from ingestions.models import Ingestion, ProcessedFile, Role, Run, RunStatus
from ingestions.runs import run_request

from ..factories import IngestionFactory, MembershipFactory, ProcessedFileFactory
from ..helpers import ANONYMOUS, BAD_TOKEN, OTHER_TENANTS_ADMIN, Expected

NEW_INGESTION = {
    "id": "new-feed",
    "name": "New feed",
    # Inside the caller's own landing folder (see `landing`), filled in by `call`.
    "source": {"uri": "{landing}/new-feed", "format": "csv"},
    "destination": {"table": "raw.new_feed"},
}


class Endpoint(NamedTuple):
    method: str
    path: str  # under /api/v1; {ingestion} and {run} are acme's
    viewer: int
    operator: int
    admin: int
    other_tenants_admin: int
    body: dict | None = None


# One line per endpoint: the status each member of acme (and globex's admin) gets.
# Anonymous callers and bad tokens get 401 everywhere; see `expectations()`.
ENDPOINTS = [
    Endpoint("GET", "ingestions", 200, 200, 200, 200),
    Endpoint("POST", "ingestions", 403, 403, 201, 201, body=NEW_INGESTION),
    Endpoint("GET", "ingestions/{ingestion}", 200, 200, 200, 404),
    Endpoint("PATCH", "ingestions/{ingestion}", 403, 403, 200, 404, body={"name": "Renamed"}),
    Endpoint("DELETE", "ingestions/{ingestion}?confirm=true", 403, 403, 200, 404),
    Endpoint("POST", "ingestions/{ingestion}/run", 403, 202, 202, 404),
    Endpoint("GET", "ingestions/{ingestion}/runs", 200, 200, 200, 404),
    Endpoint("GET", "runs/{run}", 200, 200, 200, 404),
    Endpoint("POST", "runs/{run}/cancel", 403, 202, 202, 404),
    Endpoint("GET", "ingestions/{ingestion}/processed-files", 200, 200, 200, 404),
    Endpoint("DELETE", "ingestions/{ingestion}/processed-files?confirm=true", 403, 403, 200, 404),
    Endpoint("GET", "ingestions/{ingestion}/maintenance", 200, 200, 200, 404),
    Endpoint("POST", "ingestions/{ingestion}/verify", 202, 202, 202, 404, body={"async": True}),
    Endpoint("GET", "ingestions/{ingestion}/verifies", 200, 200, 200, 404),
]


def expected_for(status: int, path: str) -> Expected:
    if status == 403:
        return Expected(403, "INSUFFICIENT_PERMISSIONS")
    if status == 404:
        # Another tenant's object must look absent, named after what was asked for.
        return Expected(404, "RUN_NOT_FOUND" if path.startswith("runs/") else "INGESTION_NOT_FOUND")
    return Expected(status)


def expectations():
    """Every (role, endpoint, expected answer) of the table."""
    for endpoint in ENDPOINTS:
        by_role = {
            ANONYMOUS: Expected(401, "NOT_AUTHENTICATED"),
            BAD_TOKEN: Expected(401, "AUTHENTICATION_FAILED"),
            OTHER_TENANTS_ADMIN: expected_for(endpoint.other_tenants_admin, endpoint.path),
            Role.VIEWER: expected_for(endpoint.viewer, endpoint.path),
            Role.OPERATOR: expected_for(endpoint.operator, endpoint.path),
            Role.ADMIN: expected_for(endpoint.admin, endpoint.path),
        }
        for role, expected in by_role.items():
            yield str(role), endpoint, expected


def case(role: str, endpoint: Endpoint, expected: Expected):
    return pytest.param(
        role,
        endpoint.method,
        endpoint.path,
        endpoint.body,
        expected,
        id=f"{role}-{endpoint.method}-{endpoint.path}",
    )


CASES = [case(*expectation) for expectation in expectations()]
REFUSED_WRITES = [
    case(role, endpoint, expected)
    for role, endpoint, expected in expectations()
    if endpoint.method != "GET" and expected.status >= 400
]


@pytest.fixture
def acme(tenant):
    """Acme's objects: `sales` (idle, with history) and a queued run of another ingestion.

    The queued run sits on a second ingestion so that `sales` can still be run, deleted
    and cleared (each refused with 409 while a run is active) and the run can be cancelled.
    """
    sales = IngestionFactory(tenant=tenant, public_id="sales")
    ProcessedFileFactory.create_batch(2, ingestion=sales)
    queued_run = run_request(ingestion=IngestionFactory(tenant=tenant, public_id="events"))
    return {"ingestion": sales.public_id, "run": queued_run.public_id}


def with_landing(body: dict | None, landing) -> dict | None:
    """`body` with its source inside `landing`."""
    if not body or "source" not in body:
        return body
    return {
        **body,
        "source": {**body["source"], "uri": body["source"]["uri"].format(landing=landing)},
    }


def call(client, method: str, path: str, body: dict | None, acme: dict):
    url = "/api/v1/" + path.format(**acme)
    return getattr(client, method.lower())(url, with_landing(body, client.landing), format="json")


def database_state() -> dict:
    return {
        "ingestions": sorted(
            Ingestion.objects.values_list("tenant__slug", "public_id", "name", "updated_at")
        ),
        "runs": sorted(Run.objects.values_list("public_id", "status", "cancel_requested")),
        "processed_files": sorted(ProcessedFile.objects.values_list("pk", flat=True)),
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "method", "path", "body", "expected"), CASES)
def test_each_caller_gets_what_its_role_allows(client_as, acme, role, method, path, body, expected):
    response = call(client_as(role), method, path, body, acme)

    assert response.status_code == expected.status, response.content
    payload = response.json() if response.content else {}
    assert payload.get("error_code") == expected.error_code, payload


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "method", "path", "body", "expected"), REFUSED_WRITES)
def test_a_refused_write_changes_nothing(client_as, acme, role, method, path, body, expected):
    client = client_as(role)
    before = database_state()

    response = call(client, method, path, body, acme)

    assert response.status_code == expected.status
    assert database_state() == before


@pytest.mark.django_db
def test_another_tenants_admin_lists_only_their_own_ingestions(client_as, acme, other_tenant):
    IngestionFactory(tenant=other_tenant, public_id="orders")

    response = client_as(OTHER_TENANTS_ADMIN).get("/api/v1/ingestions")

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == ["orders"]


@pytest.mark.django_db
def test_another_tenants_admin_creates_in_their_own_tenant(client_as, acme, other_tenant):
    client = client_as(OTHER_TENANTS_ADMIN)
    response = client.post(
        "/api/v1/ingestions", with_landing(NEW_INGESTION, client.landing), format="json"
    )

    assert response.status_code == 201, response.json()
    created = Ingestion.objects.get(public_id="new-feed")
    assert created.tenant == other_tenant
    assert created.table_identifier == "globex__raw.new_feed"


@pytest.fixture
def session_client(tenant):
    """A console session (the browser's login), with Django's CSRF checks switched on."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(MembershipFactory(tenant=tenant, role=Role.OPERATOR).user)
    return client


@pytest.mark.django_db
def test_a_console_session_can_read_the_api(session_client, acme):
    response = session_client.get("/api/v1/ingestions")

    assert response.status_code == 200
    assert {item["id"] for item in response.json()["results"]} == {"sales", "events"}


@pytest.mark.django_db
def test_a_session_write_without_a_csrf_token_is_refused(session_client, acme):
    runs_before = Run.objects.count()

    response = session_client.post(
        "/api/v1/ingestions/sales/run", {}, content_type="application/json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert Run.objects.count() == runs_before


@pytest.mark.django_db
def test_a_session_write_with_the_csrf_token_is_accepted(session_client, acme):
    csrf_secret = get_random_string(32)
    session_client.cookies[settings.CSRF_COOKIE_NAME] = csrf_secret

    response = session_client.post(
        "/api/v1/ingestions/sales/run",
        {},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf_secret,
    )

    assert response.status_code == 202, response.content
    assert Run.objects.get(public_id=response.json()["run_id"]).status == RunStatus.QUEUED
