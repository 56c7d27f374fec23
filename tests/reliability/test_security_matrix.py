"""Security matrix of the refresh endpoints and /metrics, and CSRF on console POSTs.

tests/ingestions/test_auth_matrix.py holds the granular endpoints; this file adds every
refresh endpoint (executing and dry-run), the operation records, resume and /metrics, for
every caller: anonymous, bad token, another tenant's admin, viewer, operator, admin.
`manage.py check --deploy` under production settings is tested in
tests/ingestions/test_production_settings.py.
"""

from typing import NamedTuple

import pyarrow as pa
import pytest
from django.conf import settings
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from ingestions.engines import load_engine
from ingestions.models import Ingestion, ProcessedFile, Role, Run
from ingestions.runs import run_request
from refresh.models import RefreshOperation
from refresh.services import refresh_execute

from ..factories import IngestionFactory, MembershipFactory, UserFactory
from ..helpers import (
    ANONYMOUS,
    BAD_TOKEN,
    OTHER_TENANTS_ADMIN,
    Expected,
    failing_sql,
    write_csv_files,
)

CONFIRM = {"confirm": True}
DRY_RUN = {"dry_run": True}


class Endpoint(NamedTuple):
    method: str
    path: str  # under /api/v1; {ingestion}, {operation} and {fresh_operation} are acme's
    viewer: int
    operator: int
    admin: int
    body: dict | None = None
    not_found: str = "INGESTION_NOT_FOUND"  # what another tenant's admin is told


# Dry-runs need view; fresh start needs operator; full refresh, drop table and clearing the
# history need admin; resuming and undoing need the permission of the operation's kind. Another
# tenant's admin gets 404 everywhere: the object must look absent.
ENDPOINTS = [
    Endpoint("POST", "ingestions/{ingestion}/full-refresh", 200, 200, 200, DRY_RUN),
    Endpoint("POST", "ingestions/{ingestion}/full-refresh", 403, 403, 202, CONFIRM),
    Endpoint("POST", "ingestions/{ingestion}/fresh-start", 200, 200, 200, DRY_RUN),
    Endpoint("POST", "ingestions/{ingestion}/fresh-start", 403, 202, 202, CONFIRM),
    Endpoint("DELETE", "ingestions/{ingestion}/table?dry_run=true", 200, 200, 200),
    Endpoint("DELETE", "ingestions/{ingestion}/table", 403, 403, 200, CONFIRM),
    Endpoint("DELETE", "ingestions/{ingestion}/table?confirm=true", 403, 403, 200),
    Endpoint("DELETE", "ingestions/{ingestion}/processed-files?dry_run=true", 200, 200, 200),
    Endpoint("DELETE", "ingestions/{ingestion}/processed-files", 403, 403, 200, CONFIRM),
    Endpoint("GET", "ingestions/{ingestion}/refresh-operations", 200, 200, 200),
    Endpoint(
        "GET", "refresh-operations/{operation}", 200, 200, 200, not_found="OPERATION_NOT_FOUND"
    ),
    Endpoint(
        "POST",
        "refresh-operations/{operation}/resume",
        403,
        403,
        202,
        not_found="OPERATION_NOT_FOUND",
    ),
    Endpoint(
        "POST",
        "refresh-operations/{fresh_operation}/resume",
        403,
        202,
        202,
        not_found="OPERATION_NOT_FOUND",
    ),
    # Undo: previewed by any member, executed with the permission of the operation's kind.
    Endpoint(
        "POST",
        "refresh-operations/{operation}/undo",
        200,
        200,
        200,
        DRY_RUN,
        not_found="OPERATION_NOT_FOUND",
    ),
    Endpoint(
        "POST",
        "refresh-operations/{operation}/undo",
        403,
        403,
        200,
        CONFIRM,
        not_found="OPERATION_NOT_FOUND",
    ),
    Endpoint(
        "POST",
        "refresh-operations/{fresh_operation}/undo",
        403,
        200,
        200,
        CONFIRM,
        not_found="OPERATION_NOT_FOUND",
    ),
]


def expected_for(status: int) -> Expected:
    if status == 403:
        return Expected(403, "INSUFFICIENT_PERMISSIONS")
    return Expected(status)


def expectations():
    for endpoint in ENDPOINTS:
        by_role = {
            ANONYMOUS: Expected(401, "NOT_AUTHENTICATED"),
            BAD_TOKEN: Expected(401, "AUTHENTICATION_FAILED"),
            OTHER_TENANTS_ADMIN: Expected(404, endpoint.not_found),
            Role.VIEWER: expected_for(endpoint.viewer),
            Role.OPERATOR: expected_for(endpoint.operator),
            Role.ADMIN: expected_for(endpoint.admin),
        }
        for role, expected in by_role.items():
            yield str(role), endpoint, expected


def case_id(role: str, endpoint: Endpoint) -> str:
    body = "-".join(f"{key}" for key in endpoint.body or {})
    return f"{role}-{endpoint.method}-{endpoint.path}" + (f"-{body}" if body else "")


CASES = [
    pytest.param(role, endpoint, expected, id=case_id(role, endpoint))
    for role, endpoint, expected in expectations()
]
REFUSED_WRITES = [
    pytest.param(role, endpoint, expected, id=case_id(role, endpoint))
    for role, endpoint, expected in expectations()
    if expected.status >= 400
    and endpoint.method != "GET"
    and endpoint.body != DRY_RUN
    and "dry_run" not in endpoint.path
]


@pytest.fixture
def acme(tenant, tmp_path):
    """Acme's `sales` (a source, a table, a history) and two resumable operations.

    `broken` holds a full refresh and `fresh` a fresh start, each stopped on its run step:
    resuming the first needs admin, the second operator.
    """
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN).user

    def ingestion(public_id: str):
        folder = tmp_path / public_id
        write_csv_files(folder, files=2, rows=5)
        return IngestionFactory(
            tenant=tenant,
            public_id=public_id,
            source_uri=str(folder),
            destination_table=f"raw.{public_id}",
        )

    sales = ingestion("sales")
    # A table to drop.
    load_engine().append(sales.table_identifier, pa.table({"id": [1]}), properties={})
    ProcessedFile.objects.create(ingestion=sales, path="part-0000.csv", loaded_at=timezone.now())
    with failing_sql('INSERT INTO "ingestions_run"'):
        # Dropping first, so that a failed run request leaves a resumable partial failure.
        broken = refresh_execute(
            ingestion=ingestion("broken"),
            kind="full_refresh",
            actor=admin,
            confirm=True,
            mode="drop_first",
        )
        fresh = refresh_execute(
            ingestion=ingestion("fresh"),
            kind="fresh_start",
            actor=admin,
            confirm=True,
            mode="drop_first",
        )
    assert broken.status == fresh.status == "partial_failure"
    return {
        "ingestion": sales.public_id,
        "operation": broken.public_id,
        "fresh_operation": fresh.public_id,
    }


def call(client, endpoint: Endpoint, acme: dict):
    url = "/api/v1/" + endpoint.path.format(**acme)
    return getattr(client, endpoint.method.lower())(url, endpoint.body, format="json")


def database_state() -> dict:
    sales = Ingestion.objects.get(tenant__slug="acme", public_id="sales")
    return {
        "operations": sorted(RefreshOperation.objects.values_list("public_id", "status")),
        "runs": sorted(Run.objects.values_list("public_id", "status")),
        "history": ProcessedFile.objects.count(),
        "table": load_engine().table_exists(sales.table_identifier),
    }


@pytest.fixture(autouse=True)
def no_rate_limits(settings):
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "endpoint", "expected"), CASES)
def test_each_caller_gets_what_its_role_allows(client_as, acme, role, endpoint, expected):
    response = call(client_as(role), endpoint, acme)

    assert response.status_code == expected.status, response.content
    if expected.error_code:
        assert response.json()["error_code"] == expected.error_code, response.json()


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "endpoint", "expected"), REFUSED_WRITES)
def test_a_refused_refresh_changes_nothing(client_as, acme, role, endpoint, expected):
    before = database_state()

    response = call(client_as(role), endpoint, acme)

    assert response.status_code == expected.status
    assert database_state() == before


# --- /metrics: every tenant's totals, so only a scraper or staff --------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (ANONYMOUS, 401),
        (BAD_TOKEN, 401),
        ("wrong-scrape-token", 401),
        (OTHER_TENANTS_ADMIN, 401),
        (Role.VIEWER, 401),
        (Role.OPERATOR, 401),
        (Role.ADMIN, 401),  # a tenant's admin is not staff: metrics span every tenant
        ("staff-session", 200),
        ("scrape-token", 200),
    ],
)
def test_metrics_answer_only_the_scraper_and_staff(settings, client_as, caller, expected):
    settings.AUTOLOADER_METRICS_TOKEN = "scrape-secret"
    if caller == "scrape-token":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer scrape-secret")
    elif caller == "wrong-scrape-token":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Bearer scrape-secreT")
    elif caller == "staff-session":
        client = Client()
        client.force_login(UserFactory(is_staff=True))
    else:
        client = client_as(caller)

    response = client.get("/metrics")

    assert response.status_code == expected
    if expected == 200:
        assert b"autoloader_refresh_operations_total" in response.content


@pytest.mark.django_db
def test_metrics_are_closed_when_no_scrape_token_is_configured(settings):
    settings.AUTOLOADER_METRICS_TOKEN = ""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer ")
    assert client.get("/metrics").status_code == 401


# --- CSRF: a console POST without the token is refused -----------------------------------

CONSOLE_POSTS = [
    ("login", {}),
    ("logout", {}),
    ("admin:login", {}),
    ("tenant-switch", {}),
    ("ingestion-run", {"ingestion_id": "sales"}),
    ("ingestion-operation", {"ingestion_id": "sales", "action": "full-refresh"}),
    ("ingestion-operation", {"ingestion_id": "sales", "action": "fresh-start"}),
    ("ingestion-operation", {"ingestion_id": "sales", "action": "drop-table"}),
    ("ingestion-operation", {"ingestion_id": "sales", "action": "clear-history"}),
    ("run-cancel", {"run_id": "{run}"}),
    ("operation-resume", {"operation_id": "{operation}"}),
]


def console_url(name: str, kwargs: dict, ids: dict) -> str | None:
    """The route's URL, or None while the console does not have it (it grows in parallel)."""
    try:
        return reverse(name, kwargs={key: value.format(**ids) for key, value in kwargs.items()})
    except NoReverseMatch:
        return None


@pytest.fixture
def console_ids(tenant, acme):
    run = run_request(ingestion=IngestionFactory(tenant=tenant, public_id="events"))
    return {**acme, "run": run.public_id}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kwargs"), CONSOLE_POSTS, ids=[f"{n}-{'-'.join(k.values())}" for n, k in CONSOLE_POSTS]
)
def test_a_console_post_without_the_csrf_token_is_refused(tenant, console_ids, name, kwargs):
    url = console_url(name, kwargs, console_ids)
    if url is None:
        pytest.skip(f"the console has no {name!r} route yet")
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    admin.set_password("correct-horse-battery")
    admin.save()
    browser = Client(enforce_csrf_checks=True)
    if name not in ("login", "admin:login"):
        browser.force_login(admin)
    before = database_state()

    response = browser.post(
        url,
        {
            "username": admin.username,
            "password": "correct-horse-battery",
            "typed_name": "raw.sales",
            "tenant": "acme",
        },
    )

    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert database_state() == before
    if name == "logout":
        assert browser.session.get("_auth_user_id") == str(admin.pk)  # still logged in


@pytest.mark.django_db
def test_the_login_form_with_its_csrf_token_logs_in(tenant):
    user = MembershipFactory(tenant=tenant, role=Role.VIEWER).user
    browser = Client(enforce_csrf_checks=True)
    browser.get("/login/")
    token = browser.cookies[settings.CSRF_COOKIE_NAME].value

    response = browser.post(
        "/login/",
        {"username": user.username, "password": "correct-horse-battery"},
        HTTP_X_CSRFTOKEN=token,
    )

    assert response.status_code == 302
    assert browser.session.get("_auth_user_id") == str(user.pk)
