"""Rate limits hold under a storm: parallel executions of one user never exceed the user's
ceiling, parallel executions on one table never exceed the table's rate, and a call refused
for another reason gives its slots back.

Every request goes through the real API (or console) and the real services; the storm runs
on whatever database the suite runs on (SQLite, or PostgreSQL with scripts/with_postgres.sh).
"""

import threading
from collections import Counter

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from ingestions.errors import RunInProgressError
from ingestions.models import Role, Run, RunStatus
from ingestions.runs import run_request
from refresh.models import OperationKind, RefreshOperation
from refresh.services import refresh_execute

from ..factories import IngestionFactory

pytestmark = pytest.mark.django_db(transaction=True)

CALLERS = 12
PANEL = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "operation-panel"}


@pytest.fixture
def full_refresh_5_per_hour(settings):
    """Five destructive operations per user and hour over every table (the ceiling), each
    table's own rate out of the way: the storms below spread over many tables."""
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "5/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "5/h", "tenant": ""}


@pytest.fixture
def ingestions(csv_ingestion, tenant, source_dir):
    """CALLERS ingestions of one tenant reading the same (empty) source, each its own table:
    one refresh per ingestion, so that only the rate limit can refuse a caller."""
    others = [
        IngestionFactory(
            tenant=tenant,
            public_id=f"sales-{number}",
            source_uri=str(source_dir),
            destination_table=f"raw.sales_{number}",
        )
        for number in range(1, CALLERS)
    ]
    return [csv_ingestion, *others]


def in_another_thread(work) -> list[BaseException]:
    """Run `work` in a new thread (its own connection); the errors it raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    return errors


def full_refresh(client, ingestion_id: str):
    return client.post(
        f"/api/v1/ingestions/{ingestion_id}/full-refresh",
        {"confirm": True, "auto_run": False},
        format="json",
    )


def test_a_storm_of_full_refreshes_by_one_user_executes_exactly_the_rate(
    full_refresh_5_per_hour, ingestions, member
):
    token = member(Role.ADMIN).token_key
    barrier = threading.Barrier(CALLERS)
    answers: list[tuple[int, dict, str | None]] = []

    def call(ingestion_id: str) -> None:
        client = APIClient()  # one client per thread, all of them the same user
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            response = full_refresh(client, ingestion_id)
            answers.append((response.status_code, response.json(), response.get("Retry-After")))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=call, args=(ingestion.public_id,)) for ingestion in ingestions
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(answers) == CALLERS
    assert Counter(status for status, _, _ in answers) == {200: 5, 429: 7}, answers
    for status, body, retry_after in answers:
        if status == 429:
            assert body["error_code"] == "RATE_LIMITED"
            assert 0 < int(retry_after) <= 3600
    assert RefreshOperation.objects.filter(kind=OperationKind.FULL_REFRESH).count() == 5


def test_calls_refused_while_a_run_is_active_or_without_a_plan_use_up_no_slot(
    settings, full_refresh_5_per_hour, ingestions, admin_client
):
    sales = ingestions[0]
    run = run_request(ingestion=sales)
    for _ in range(3):
        busy = full_refresh(admin_client, sales.public_id)
        assert (busy.status_code, busy.json()["error_code"]) == (409, "RUN_IN_PROGRESS")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = -1  # every execution needs a dry-run's plan
    for _ in range(3):
        unplanned = full_refresh(admin_client, sales.public_id)
        assert (unplanned.status_code, unplanned.json()["error_code"]) == (400, "DRY_RUN_REQUIRED")
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 500

    executed = [full_refresh(admin_client, ingestion.public_id) for ingestion in ingestions[:5]]

    assert [response.status_code for response in executed] == [200] * 5
    limited = full_refresh(admin_client, ingestions[5].public_id)
    assert (limited.status_code, limited.json()["error_code"]) == (429, "RATE_LIMITED")


def test_a_refusal_in_the_console_gives_the_slot_back_when_the_request_ends(
    full_refresh_5_per_hour, ingestions, member
):
    user = member(Role.ADMIN).user
    console = Client()
    console.force_login(user)
    sales = ingestions[0]
    run_request(ingestion=sales)
    for _ in range(6):
        refused = console.post(
            f"/ingestions/{sales.public_id}/full-refresh/",
            {"typed_name": sales.destination_table},
            **PANEL,
        )
        assert refused.status_code == 409

    # From another thread: nothing this one still holds can be given back on its behalf.
    errors = in_another_thread(
        lambda: [
            refresh_execute(
                ingestion=ingestion,
                kind=OperationKind.FULL_REFRESH,
                actor=user,
                confirm=True,
                auto_run=False,
            )
            for ingestion in ingestions[1:6]
        ]
    )

    assert errors == []
    assert RefreshOperation.objects.count() == 5


def test_a_refusal_by_a_direct_service_call_gives_the_slot_back_at_the_next_call(
    full_refresh_5_per_hour, ingestions, member
):
    user = member(Role.ADMIN).user
    sales = ingestions[0]
    run_request(ingestion=sales)
    for _ in range(6):
        with pytest.raises(RunInProgressError):
            refresh_execute(
                ingestion=sales, kind=OperationKind.FULL_REFRESH, actor=user, confirm=True
            )
    for ingestion in ingestions[1:6]:
        refresh_execute(
            ingestion=ingestion,
            kind=OperationKind.FULL_REFRESH,
            actor=user,
            confirm=True,
            auto_run=False,
        )
    assert RefreshOperation.objects.count() == 5


def test_a_storm_on_one_table_never_exceeds_the_tables_rate(settings, ingestions, member):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "2/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "100/h", "tenant": "100/h"}
    sales = ingestions[0]
    tokens = [member(Role.ADMIN).token_key for _ in range(10)]  # ten users, one table
    barrier = threading.Barrier(len(tokens))
    answers: list[tuple[int, dict]] = []

    def call(token: str) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            barrier.wait()
            for _ in range(3):
                response = full_refresh(client, sales.public_id)
                answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(answers) == 30
    assert {status for status, _ in answers} <= {200, 409, 429}, answers
    executed = RefreshOperation.objects.filter(ingestion=sales).count()
    assert 1 <= executed <= 2
    assert sum(status == 200 for status, _ in answers) == executed
    # Calm again: the table takes what its rate has left, and not one more.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[0]}")
    after = [full_refresh(client, sales.public_id) for _ in range(3 - executed)]
    assert [response.status_code for response in after] == [200] * (2 - executed) + [429]
    answers.append((after[-1].status_code, after[-1].json()))
    limited = [body for status, body in answers if status == 429]
    assert limited and all("REFRESH_RATE_FULL_REFRESH" in body["detail"] for body in limited)
