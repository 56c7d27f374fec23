"""Fuzzing: schemathesis generates requests from our OpenAPI schema; none may answer 5xx or
break the schema; and the schema says what the server enforces: a request that fits it is
not refused as malformed, one that breaks it is (its conformance checks, bounded, run in
every pass of the suite).

The schema is fetched from `/api/schema/` with an admin's Bearer token, and every request
goes through the real WSGI application (`console.wsgi.application`) as that admin. Half of
the generated requests target real objects (ingestions with a table, a history, an active
run, a resumable operation; and another tenant's), so they reach the services rather than
stopping at a 404. Each request runs in a transaction rolled back afterwards: every request
sees the same starting state, and refreshes never wait on a worker.
"""

import math
import os
from collections import Counter

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData, FailureGroup
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from console.wsgi import application
from ingestions.models import Role
from ingestions.runs import run_request
from ingestions.tokens import token_create
from refresh.services import refresh_execute

from ..factories import IngestionFactory, MembershipFactory
from ..helpers import drain_queue, failing_sql, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

# At least this many requests in all; spread evenly over operations and generation modes.
FUZZ_REQUESTS = int(os.environ.get("RELIABILITY_FUZZ_REQUESTS", "1200"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The schema's promise both ways (`schemathesis run -c all`): schema-valid requests are not
# refused as malformed, schema-violating ones are.
CONFORMANCE_CHECKS = [*CHECKS, positive_data_acceptance, negative_data_rejection]
CONFORMANCE_EXAMPLES = int(os.environ.get("RELIABILITY_CONFORMANCE_EXAMPLES", "4"))
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
# 400s that a well-formed request gets from the state of the world, which no schema can know:
# a source outside the tenant's locations or absent, a webhook host that does not resolve
# to a public address, an execution above the cost threshold without its dry-run's plan.
STATE_DEPENDENT_REFUSALS = {
    "SOURCE_NOT_ALLOWED",
    "SOURCE_UNAVAILABLE",
    "SOURCE_LISTING_LIMIT",
    "WEBHOOK_URL_NOT_ALLOWED",
    "DRY_RUN_REQUIRED",
}


@pytest.fixture
def wsgi_in_this_connection():
    """Let WSGI calls share the test's database connection inside a transaction.

    Django's own test client does the same: without it, the end of each request closes the
    connection (CONN_MAX_AGE=0), which would end the transaction the request runs in.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def real_objects(tenant, other_tenant, tmp_path):
    """Acme's ingestions in every interesting state, and one of Globex's; returns their ids."""
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN).user

    def ingestion(public_id, tenant_obj=tenant, files=2):
        source = tmp_path / public_id
        write_csv_files(source, files=files, rows=5)
        return IngestionFactory(
            tenant=tenant_obj,
            public_id=public_id,
            source_uri=str(source),
            destination_table=f"raw.{public_id}",
        )

    sales = ingestion("sales", files=3)  # loaded: a table, a history, a finished run
    finished_run = run_request(ingestion=sales)
    drain_queue()
    events = ingestion("events")  # a queued run: runs, refreshes and deletes answer 409
    queued_run = run_request(ingestion=events)
    broken = ingestion("broken")  # a full refresh that stopped half-way: resumable
    with failing_sql('INSERT INTO "ingestions_run"'):
        partial = refresh_execute(
            ingestion=broken, kind="full_refresh", actor=admin, confirm=True, mode="drop_first"
        )
    archive = ingestion("archive")  # a finished drop-table operation
    done = refresh_execute(ingestion=archive, kind="drop_table", actor=admin, confirm=True)
    orders = ingestion("orders", tenant_obj=other_tenant)  # another tenant's: must look absent
    foreign_admin = MembershipFactory(tenant=other_tenant, role=Role.ADMIN).user
    foreign_op = refresh_execute(
        ingestion=orders, kind="clear_processed_files", actor=foreign_admin, confirm=True
    )
    foreign_run = run_request(ingestion=orders)
    assert partial.status == "partial_failure"
    return {
        "token": token_create(user=admin, name="fuzzing")[1],
        "ingestion_id": [sales.public_id, events.public_id, broken.public_id, "archive", "orders"],
        "run_id": [finished_run.public_id, queued_run.public_id, foreign_run.public_id],
        "operation_id": [partial.public_id, done.public_id, foreign_op.public_id],
        "action": ["quarantine", "release", "retry"],  # a failed file's
    }


def load_schema(token: str):
    return schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Bearer {token}"}
    )


def test_the_schema_endpoint_needs_a_token():
    with pytest.raises(Exception, match="401"):
        schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


class Fuzzer:
    """Sends the generated requests of one operation, counting them and their findings."""

    def __init__(self, *, token: str, real_objects: dict, examples: int, checks=CHECKS):
        self.headers = {"Authorization": f"Bearer {token}"}
        self.real_objects = real_objects
        self.examples = examples
        self.checks = checks
        self.requests: Counter = Counter()
        self.statuses: Counter = Counter()
        self.failures: dict[tuple, str] = {}

    def fuzz(self, operation, mode) -> None:
        @given(
            case=operation.as_strategy(generation_mode=mode),
            real_ids=st.booleans(),
            data=st.data(),
        )
        @settings(
            max_examples=self.examples,
            deadline=None,
            derandomize=True,  # the same requests on every run: CI stays reproducible
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def send(case, real_ids, data):
            if real_ids:
                for name in case.path_parameters or {}:
                    if name in self.real_objects:  # any other (a failure id) stays generated
                        case.path_parameters[name] = data.draw(
                            st.sampled_from(self.real_objects[name]), label=name
                        )
            self.send(operation.label, case)

        try:
            send()
        except HypothesisException as exc:  # a mode with nothing to generate
            print(f"{operation.label} ({mode}): {type(exc).__name__}")

    def send(self, label: str, case) -> None:
        # Findings are collected, not raised: hypothesis would stop at the first one.
        with transaction.atomic():
            try:
                response = case.call(app=application, headers=self.headers)
                self.requests[label] += 1
                self.statuses[response.status_code] += 1
                case.validate_response(response, checks=self.checks, headers=self.headers)
            except FailureGroup as failed:
                for failure in failed.exceptions:
                    if tolerated(failure, response):
                        continue
                    key = (label, type(failure).__name__, response.status_code)
                    self.failures.setdefault(
                        key,
                        f"{failure.title}: {failure.message[:300]}\n  sent query={case.query} "
                        f"body={str(case.body)[:300]}\n  got {response.text[:300]}",
                    )
            finally:
                transaction.set_rollback(True)


def tolerated(failure, response) -> bool:
    """A body refused for its size (413, before its content is read: refused all the same),
    or a well-formed request refused for what the world holds, not for its form."""
    if isinstance(failure, AcceptedNegativeData) and response.status_code == 413:
        return True
    if isinstance(failure, RejectedPositiveData) and response.status_code == 423:
        return True  # TABLE_PROTECTED: a protected ingestion, whatever the request's form
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return False
    return response.json().get("error_code") in STATE_DEPENDENT_REFUSALS


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_answers_that_fit_the_schema(
    settings_overrides, real_objects, wsgi_in_this_connection, report
):
    schema = load_schema(real_objects["token"])
    operations = [result.ok() for result in schema.get_all_operations()]
    examples = math.ceil(FUZZ_REQUESTS / (len(operations) * len(MODES)))
    fuzzer = Fuzzer(token=real_objects["token"], real_objects=real_objects, examples=examples)

    for operation in operations:
        for mode in MODES:
            fuzzer.fuzz(operation, mode)

    total = sum(fuzzer.requests.values())
    report(
        "fuzzing",
        {
            "requests": total,
            "operations": len(operations),
            "examples_per_operation_and_mode": examples,
            "findings": len(fuzzer.failures),
            "statuses": dict(sorted(fuzzer.statuses.items())),
            "requests_by_operation": dict(sorted(fuzzer.requests.items())),
        },
    )
    print(f"\nfuzzing: {total} requests, {len(operations)} operations: {fuzzer.statuses}")
    assert not fuzzer.failures, "\n".join(f"{k}: {text}" for k, text in fuzzer.failures.items())
    assert total >= 1000
    assert not [code for code in fuzzer.statuses if code >= 500]


def test_the_schema_says_what_the_server_enforces(
    settings_overrides, real_objects, wsgi_in_this_connection, report
):
    """`schemathesis run -c all` in small: a few deterministic requests per operation and
    mode, every conformance check, so that the schema and the server cannot drift apart."""
    schema = load_schema(real_objects["token"])
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzer = Fuzzer(
        token=real_objects["token"],
        real_objects=real_objects,
        examples=CONFORMANCE_EXAMPLES,
        checks=CONFORMANCE_CHECKS,
    )

    for operation in operations:
        for mode in MODES:
            fuzzer.fuzz(operation, mode)

    total = sum(fuzzer.requests.values())
    report(
        "schema_conformance",
        {
            "requests": total,
            "operations": len(operations),
            "findings": len(fuzzer.failures),
            "statuses": dict(sorted(fuzzer.statuses.items())),
        },
    )
    assert not fuzzer.failures, "\n".join(f"{k}: {text}" for k, text in fuzzer.failures.items())
    assert len(fuzzer.requests) == len(operations)  # every operation was reached
    assert not [code for code in fuzzer.statuses if code >= 500]


@pytest.fixture
def settings_overrides(settings):
    """No rate limit in the way: the fuzz must reach the services, not the limiter."""
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}
    return settings


NEW_INGESTION = {
    "name": "New feed",
    "source": {"uri": "/data/new", "format": "csv"},
    "destination": {"table": "raw.new_feed"},
}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "expected"),
    [
        pytest.param("get", "/api/v1/ingestions/sales%00x", None, {}, 404, id="nul-in-path-id"),
        pytest.param(
            "post",
            "/api/v1/ingestions",
            {**NEW_INGESTION, "source": {**NEW_INGESTION["source"], "options": {"k\x00": 1}}},
            {},
            400,
            id="nul-in-option-name",
        ),
        pytest.param(
            "patch",
            "/api/v1/ingestions/sales",
            {"source": {"options": {"delimiter": "\x00"}}},
            {},
            400,
            id="nul-in-option-value",
        ),
        pytest.param(
            "delete",
            "/api/v1/ingestions/sales/table",
            {"confirm": True},
            {"HTTP_IDEMPOTENCY_KEY": "k" * 256},
            400,
            id="idempotency-key-too-long",
        ),
    ],
)
def test_requests_that_answered_500_on_postgresql_are_refused_cleanly(
    admin_client, tenant, method, path, body, headers, expected
):
    """Found by fuzzing on PostgreSQL (NUL characters, an over-long key): now 4xx everywhere."""
    IngestionFactory(tenant=tenant, public_id="sales")

    response = getattr(admin_client, method)(path, body, format="json", **headers)

    assert response.status_code == expected, response.content
    assert response.json()["error_code"] in {"NOT_FOUND", "VALIDATION_ERROR"}
