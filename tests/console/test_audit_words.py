"""The audit reads like a log: the ingestion's name beside its id, the values that changed
(old -> new, secrets hidden), and what each refresh operation did, in words."""

import pytest
from auditlog.models import LogEntry

from ingestions.audit import HIDDEN, record_change
from ingestions.models import Role
from ingestions.services import ingestion_delete, ingestion_update

from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)


def _rows(page: str) -> list[str]:
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [row for row in body.split("<tr>")[1:]]


def test_an_entry_names_its_ingestion_beside_its_id(loaded, console):
    admin = console(Role.ADMIN)
    loaded.name = "Sales from the shops"
    loaded.save(update_fields=["name"])
    admin.post("/ingestions/sales/drop-table/", {"typed_name": "raw.sales"})

    page = admin.get("/audit/").content.decode()

    drop = next(row for row in _rows(page) if "Drop table" in row)
    assert '>Sales from the shops</a> <code class="wrap">sales</code>' in drop


def test_a_deleted_ingestion_keeps_the_name_it_had(loaded, console):
    admin = console(Role.ADMIN)
    ingestion_update(ingestion=loaded, data={"name": "Shop sales"}, actor=admin.user)
    ingestion_delete(ingestion=loaded, actor=admin.user, confirm=True)

    page = admin.get("/audit/?operation=ingestion_deleted").content.decode()

    (row,) = _rows(page)
    assert "Shop sales" in row and "deleted" in row and 'href="/ingestions/sales/' not in row


def test_an_update_is_logged_with_its_old_and_new_values(csv_ingestion, console):
    admin = console(Role.ADMIN)
    ingestion_update(
        ingestion=csv_ingestion,
        data={"name": "Sales v2", "protected": True, "source_options": {"delimiter": ";"}},
        actor=admin.user,
    )

    entry = LogEntry.objects.get(additional_data__operation="ingestion_updated")
    assert entry.changes["protected"] == ["False", "True"]
    assert entry.changes["source_options"] == ["{}", '{"delimiter": ";"}']
    assert entry.additional_data["ingestion_name"] == "Sales v2"
    fragment = admin.get("/audit/?operation=ingestion_updated", **hx("audit-table"))
    (row,) = _rows(fragment.content.decode())
    assert 'protected:</span> <span class="wrap muted">no</span> → ' in row
    assert '<span class="wrap">yes</span>' in row
    assert 'name:</span> <span class="wrap muted">' in row and "Sales v2" in row
    assert "reader options:" in row and "{&quot;delimiter&quot;: &quot;;&quot;}" in row


def test_a_creation_is_logged_with_the_values_it_set(tenant, source_dir, console):
    admin = console(Role.ADMIN)
    response = admin.post(
        "/api/v1/ingestions",
        {
            "name": "Orders",
            "source": {"uri": str(source_dir), "format": "csv"},
            "destination": {"table": "raw.orders"},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content

    fragment = admin.get("/audit/?operation=ingestion_created", **hx("audit-table"))

    (row,) = _rows(fragment.content.decode())
    assert "values set</summary>" in row
    assert 'name:</span> <span class="wrap">Orders</span>' in row
    assert 'table:</span> <span class="wrap">raw.orders</span>' in row
    assert "source:</span>" in row and str(source_dir) in row
    assert "pattern:" not in row  # left empty: the default, not a value


def test_a_secret_never_reaches_the_log(csv_ingestion, admin_user):
    entry = record_change(
        actor=admin_user,
        obj=csv_ingestion,
        tenant=csv_ingestion.tenant,
        action="location_granted",
        changes={"s3_secret_access_key": [None, "abc"], "uri": [None, "s3://b/"]},
    )

    entry.refresh_from_db()
    assert entry.changes == {"s3_secret_access_key": [None, HIDDEN], "uri": [None, "s3://b/"]}


def test_a_clear_history_says_how_many_files_it_forgot(loaded, console):
    admin = console(Role.ADMIN)

    response = admin.post("/ingestions/sales/clear-history/", {"typed_name": "raw.sales"})
    assert response.status_code in (200, 302), response.content

    page = admin.get("/audit/?operation=clear_processed_files").content.decode()
    (row,) = _rows(page)
    assert "4 files forgotten" in row
    assert "0 files ·" not in row


def test_a_drop_says_what_it_dropped_and_a_refusal_why(loaded, console):
    admin, operator = console(Role.ADMIN), console(Role.OPERATOR)
    admin.post("/ingestions/sales/drop-table/", {"typed_name": "raw.sales"})
    operator.post("/ingestions/sales/full-refresh/", {"typed_name": "raw.sales"})

    page = admin.get("/audit/").content.decode()

    drop = next(row for row in _rows(page) if "Drop table" in row)
    assert "Dropped raw.sales: 100 rows" in drop
    refused = next(row for row in _rows(page) if "Refused" in row)
    assert "Your role does not allow this" in refused and "INSUFFICIENT_PERMISSIONS" in refused


def test_a_full_refresh_says_what_it_did_and_what_its_run_loads(loaded, console):
    admin = console(Role.ADMIN)

    admin.post("/ingestions/sales/full-refresh/", {"typed_name": "raw.sales"})

    page = admin.get("/audit/?operation=full_refresh").content.decode()
    (row,) = _rows(page)
    assert "4 files" in row and "queued" in row and "to load" in row


@pytest.mark.parametrize(
    ("name", "details", "said"),
    [
        ("processed_files_cleared", {"files_cleared": 1}, "1 file forgotten"),
        ("processed_files_cleared", {"files_cleared": 1200}, "1,200 files forgotten"),
        (
            "processed_files_cleared",
            {"files_cleared": 1, "cleared_at_publish": True},
            "1 file replaced in the history at publish",
        ),
        (
            "table_dropped",
            {"table_existed": True, "table_name": "raw.users", "row_count": 1},
            "Dropped raw.users: 1 row, under 0.001 GB",
        ),
        (
            "table_dropped",
            {
                "table_existed": True,
                "table_name": "raw.users",
                "row_count": 1,
                "replaced_at_publish": True,
            },
            "raw.users keeps its 1 row until the new version is published",
        ),
    ],
)
def test_a_step_s_words_agree_with_its_counts(name, details, said):
    """A history clear of one file is "1 file forgotten", a drop of one row "1 row"."""
    from types import SimpleNamespace

    from console.templatetags.console import step_outcome
    from refresh.models import StepStatus

    step = SimpleNamespace(name=name, status=StepStatus.SUCCESS, details=details)
    assert step_outcome(step) == said
