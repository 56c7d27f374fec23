"""Refresh rate limits keyed the way the risk is (issue 25): each kind's rate counts per
table, under a per-user and a per-tenant ceiling over every table; every preview says
which limit binds, what is left and when it refills, before anyone confirms.

Executions go through the REST API with `auto_run: false` (drop and clear, no run), so
each one settles at once and only a limit can refuse the next.
"""

import pytest

from ingestions.models import RateCounter, Role
from refresh.models import RefreshOperation

pytestmark = pytest.mark.django_db(transaction=True)

EXECUTE = {"confirm": True, "auto_run": False}
BATCHES = "/api/v1/refresh-batches"


def full_refresh(client, ingestion_id: str, body: dict | None = None):
    return client.post(
        f"/api/v1/ingestions/{ingestion_id}/full-refresh", body or EXECUTE, format="json"
    )


def dry_run(client, ingestion_id: str) -> dict:
    return full_refresh(client, ingestion_id, {"dry_run": True}).json()


@pytest.fixture
def limits(settings):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "2/h", "tenant": "3/h"}


def test_the_kinds_rate_counts_per_table(limits, three, member):
    admin = member(Role.ADMIN)
    assert full_refresh(admin, "orders").status_code == 200

    again = full_refresh(admin, "orders")
    other_table = full_refresh(admin, "users")

    assert again.status_code == 429 and again.json()["error_code"] == "RATE_LIMITED"
    assert "raw.orders" in again.json()["detail"]
    assert "REFRESH_RATE_FULL_REFRESH" in again.json()["detail"]
    assert int(again["Retry-After"]) > 0
    assert other_table.status_code == 200  # another table has its own rate
    assert RefreshOperation.objects.count() == 2


def test_the_user_ceiling_counts_every_table_and_every_destructive_kind(limits, three, member):
    admin, colleague = member(Role.ADMIN), member(Role.ADMIN)
    assert full_refresh(admin, "orders").status_code == 200
    cleared = admin.delete("/api/v1/ingestions/users/processed-files?confirm=true")
    assert cleared.status_code == 200, cleared.json()

    third = full_refresh(admin, "items")

    assert third.status_code == 429
    assert "REFRESH_RATE_PER_USER" in third.json()["detail"]
    assert full_refresh(colleague, "items").status_code == 200  # a ceiling per user
    assert RefreshOperation.objects.count() == 3


def test_the_tenant_ceiling_counts_every_user(limits, three, member, other_tenant):
    first, second, third = (member(Role.ADMIN) for _ in range(3))
    assert full_refresh(first, "orders").status_code == 200
    assert full_refresh(second, "users").status_code == 200
    assert full_refresh(third, "items").status_code == 200

    refused = first.delete("/api/v1/ingestions/orders/processed-files?confirm=true")

    assert refused.status_code == 429
    assert "REFRESH_RATE_PER_TENANT" in refused.json()["detail"]
    # Another tenant's counters are its own.
    assert not RateCounter.objects.filter(key__startswith=f"refresh:tenant:{other_tenant.pk}:")


def test_a_refused_call_gives_back_every_slot_it_took(limits, three, member):
    admin = member(Role.ADMIN)
    assert full_refresh(admin, "orders").status_code == 200
    assert full_refresh(admin, "orders").status_code == 429  # the table refused it

    counts = {
        key.split(":")[1]: count
        for key, count in RateCounter.objects.filter(key__startswith="refresh:").values_list(
            "key", "count"
        )
    }

    # The user and tenant slots the refused call took before the table refused were given
    # back: one execution, one slot on each counter.
    assert counts == {"full_refresh": 1, "user": 1, "tenant": 1}


def test_the_dry_run_names_the_binding_limit_and_every_limit(limits, three, member):
    admin = member(Role.ADMIN)
    fresh = dry_run(admin, "orders")["quota"]
    assert (fresh["applies_to"], fresh["limit"], fresh["remaining"]) == ("table", 1, 1)
    assert [item["applies_to"] for item in fresh["limits"]] == ["table", "user", "tenant"]
    assert [item["setting"] for item in fresh["limits"]] == [
        "REFRESH_RATE_FULL_REFRESH",
        "REFRESH_RATE_PER_USER",
        "REFRESH_RATE_PER_TENANT",
    ]
    assert full_refresh(admin, "orders").status_code == 200

    used_table = dry_run(admin, "orders")
    other_table = dry_run(admin, "users")

    assert used_table["quota"]["applies_to"] == "table"
    assert used_table["quota"]["remaining"] == 0
    warnings = [w for w in used_table["warnings"] if w.startswith("RATE_LIMITED")]
    assert len(warnings) == 1 and "raw.orders" in warnings[0]
    # On another table: 1 left of its own rate, 1 of the user's ceiling (a tie: the table's
    # is shown), 2 of the tenant's.
    assert (other_table["quota"]["applies_to"], other_table["quota"]["remaining"]) == ("table", 1)
    assert [item["remaining"] for item in other_table["quota"]["limits"]] == [1, 1, 2]
    assert not [w for w in other_table["warnings"] if w.startswith("RATE_LIMITED")]


def test_a_batch_takes_one_slot_of_each_table_and_refuses_a_used_up_one(settings, three, member):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    settings.REFRESH_RATE_CEILINGS = {"user": "10/h", "tenant": "10/h"}
    admin = member(Role.ADMIN)
    assert full_refresh(admin, "users").status_code == 200
    body = {"ingestion_ids": ["orders", "users", "items"], "operation": "full_refresh"}

    preview = admin.post(BATCHES, {**body, "dry_run": True}, format="json").json()
    refused = admin.post(BATCHES, {**body, "confirm": True}, format="json")

    quota = preview["quota"]["full_refresh"]
    assert quota["tables_exhausted"] == ["users"] and quota["members_startable"] == 2
    assert [w for w in preview["warnings"] if "users" in w and "RATE_LIMITED" in w]
    # One warning for the batch, none repeated on its member.
    member_warnings = {item["ingestion_id"]: item["warnings"] for item in preview["members"]}
    assert not [w for w in member_warnings["users"] if w.startswith("RATE_LIMITED")]
    assert refused.status_code == 429 and "raw.users" in refused.json()["detail"]
    assert RefreshOperation.objects.count() == 1  # nothing of the batch started
    slots = dict(
        RateCounter.objects.filter(key__startswith="refresh:full_refresh:").values_list(
            "key", "count"
        )
    )
    # Only the single refresh's slot is taken: the slot orders' table gave the batch before
    # users refused it was given back.
    assert sum(slots.values()) == 1
