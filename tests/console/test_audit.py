"""The tenant's audit page: who did what when, with outcome and impact, filterable."""

import pytest

from ingestions.models import Role

from ..factories import IngestionFactory, MembershipFactory
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def history(loaded, console, other_tenant):
    """A drop by an admin, a refused full refresh by an operator, another tenant's drop;
    before them, each tenant's grant of its storage location (by the system)."""
    admin, operator = console(Role.ADMIN), console(Role.OPERATOR)
    admin.post("/ingestions/sales/drop-table/", {"typed_name": "raw.sales"})
    operator.post("/ingestions/sales/full-refresh/", {"typed_name": "raw.sales"})
    IngestionFactory(tenant=other_tenant, public_id="theirs", destination_table="raw.theirs")
    theirs = console(Role.ADMIN, tenant_obj=other_tenant)
    theirs.post("/ingestions/theirs/drop-table/", {"typed_name": "raw.theirs"})
    return {"admin": admin, "operator": operator}


def test_the_audit_page_lists_the_tenants_entries_only(history):
    page = history["admin"].get("/audit/").content.decode()
    assert "<h1>Audit</h1>" in page
    assert history["admin"].user.username in page and history["operator"].user.username in page
    assert "Drop table" in page and "Full refresh" in page
    assert "Refused" in page and "INSUFFICIENT_PERMISSIONS" in page
    assert "Dropped raw.sales: 100 rows" in page  # what the drop did, in words
    assert "theirs" not in page
    assert "Location granted" in page  # acme's source folder; globex's grant is not shown
    assert "3 entries" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("operation=drop_table", {"Drop table"}),
        ("outcome=refused", {"Full refresh"}),
        ("outcome=success", {"Drop table"}),
        ("ingestion=sales", {"Drop table", "Full refresh"}),
        ("ingestion=nope", set()),
    ],
)
def test_the_audit_page_filters(history, query, expected):
    fragment = history["admin"].get(f"/audit/?{query}", **hx("audit-table")).content.decode()
    assert fragment.lstrip().startswith('<section id="audit-table"')
    shown = {kind for kind in ("Drop table", "Full refresh") if kind in fragment}
    assert shown == expected


def test_the_audit_page_filters_by_user(history):
    operator = history["operator"].user.username
    fragment = history["admin"].get(f"/audit/?actor={operator}", **hx("audit-table"))
    assert "Full refresh" in fragment.content.decode()
    assert "Drop table" not in fragment.content.decode()


def test_every_member_may_read_the_audit(history, tenant):
    from django.test import Client

    viewer = Client()
    viewer.force_login(MembershipFactory(tenant=tenant, role=Role.VIEWER).user)
    assert "3 entries" in viewer.get("/audit/").content.decode()


def test_running_and_cancelling_a_run_are_audited_with_who_and_which(loaded, console, member):
    operator = member(Role.OPERATOR)

    started = operator.post("/api/v1/ingestions/sales/run", format="json")
    run_id = started.json()["run_id"]
    cancelled = operator.post(f"/api/v1/runs/{run_id}/cancel", format="json")

    assert (started.status_code, cancelled.status_code) == (202, 202), cancelled.content
    from auditlog.models import LogEntry

    entries = {
        entry.additional_data["operation"]: entry
        for entry in LogEntry.objects.filter(object_repr=run_id)
    }
    assert set(entries) == {"run_requested", "run_cancelled"}
    for entry in entries.values():
        assert entry.actor == operator.user
        assert entry.additional_data["tenant"] == "acme"
        assert entry.additional_data["ingestion_id"] == "sales"
    viewer = console(Role.VIEWER)
    page = viewer.get("/audit/").content.decode()
    assert "Run requested" in page and "Run cancelled" in page and run_id in page
    only_cancels = viewer.get("/audit/?operation=run_cancelled").content.decode()
    assert "1 entries" in only_cancels and ">Run cancelled<" in only_cancels
