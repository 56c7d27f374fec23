"""The ingestions list: what each row says, search and filter, empty states, bounded queries."""

import pytest
from django.utils import timezone

from ingestions.models import ProcessedFile, Role, Run, RunStatus

from ..factories import IngestionFactory, MembershipFactory, RunFactory
from .conftest import HX, hx

pytestmark = pytest.mark.django_db(transaction=True)


def test_pages_need_a_login_and_fragments_ask_htmx_to_reload(client):
    response = client.get("/ingestions/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/ingestions/"
    fragment = client.get("/ingestions/sales/", **hx("run-table"))
    assert fragment.status_code == 200
    assert fragment["HX-Redirect"] == "/login/?next=%2Fingestions%2Fsales%2F"


def test_home_is_the_ingestions_list(admin_console):
    response = admin_console.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/ingestions/"


def test_a_row_shows_last_run_history_and_table_state(loaded, admin_console):
    response = admin_console.get("/ingestions/")
    assert response.status_code == 200
    row = response.content.decode().split('href="/ingestions/sales/"', 1)[1].split("</tr>", 1)[0]
    assert "raw.sales" in row
    assert str(loaded.source_uri) in row
    assert "Success" in row  # the last run's badge
    assert ">4</td>" in row  # files in history
    assert ">100</td>" in row  # table rows, from the engine's metadata
    assert "KB</td>" in row  # table size


def test_search_by_name_id_or_table_and_filter_by_last_run(tenant, admin_console):
    sales = IngestionFactory(tenant=tenant, name="Daily sales", destination_table="raw.sales_x")
    events = IngestionFactory(tenant=tenant, name="Web events", destination_table="raw.events")
    idle = IngestionFactory(tenant=tenant, name="Orders", destination_table="raw.orders")
    RunFactory(ingestion=sales, status=RunStatus.SUCCESS)
    RunFactory(ingestion=events, status=RunStatus.SUCCESS)
    RunFactory(ingestion=events, status=RunStatus.FAILED)  # the latest one counts

    def names(query: str) -> set[str]:
        page = admin_console.get(f"/ingestions/?{query}").content.decode()
        return {ingestion.name for ingestion in (sales, events, idle) if ingestion.name in page}

    assert names("q=sales") == {"Daily sales"}
    assert names("q=raw.events") == {"Web events"}
    assert names(f"q={idle.public_id}") == {"Orders"}
    assert names("status=FAILED") == {"Web events"}
    assert names("status=SUCCESS") == {"Daily sales"}
    assert names("status=never") == {"Orders"}
    assert names("status=bogus") == {"Daily sales", "Web events", "Orders"}
    RunFactory(ingestion=idle, status=RunStatus.QUEUED)
    assert names("status=active") == {"Orders"}


def test_htmx_search_returns_only_the_table_fragment(tenant, admin_console):
    IngestionFactory(tenant=tenant, name="Daily sales")
    response = admin_console.get("/ingestions/?q=daily", **hx("ingestion-table"))
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="ingestion-table"')
    assert "<html" not in body
    assert "Daily sales" in body
    assert "HX-Request" in response["Vary"]


def test_no_ingestion_tells_an_admin_how_to_create_one_and_a_viewer_whom_to_ask(console):
    admin_page = console(Role.ADMIN).get("/ingestions/").content.decode()
    assert "No ingestions yet" in admin_page
    assert 'href="/ingestions/new/"' in admin_page
    viewer_page = console(Role.VIEWER).get("/ingestions/").content.decode()
    assert "Ask an admin" in viewer_page


def test_a_search_without_match_offers_to_show_everything(tenant, admin_console):
    IngestionFactory(tenant=tenant)
    page = admin_console.get("/ingestions/?q=nothing-like-this").content.decode()
    assert "No ingestion matches" in page
    assert "Show all ingestions" in page


def test_pagination_keeps_the_filters(tenant, admin_console, monkeypatch):
    monkeypatch.setattr("console.views.LIST_PAGE_SIZE", 2)
    for index in range(5):
        IngestionFactory(tenant=tenant, name=f"Sales {index}")
    page = admin_console.get("/ingestions/?q=sales").content.decode()
    assert "Page 1 of 3" in page
    assert 'href="?q=sales&amp;page=2"' in page


def test_another_tenants_ingestions_are_not_listed(tenant, other_tenant, admin_console):
    IngestionFactory(tenant=other_tenant, name="Their secret table")
    assert "Their secret table" not in admin_console.get("/ingestions/").content.decode()


def test_a_user_in_no_tenant_is_told_what_to_do(client, django_user_model):
    user = django_user_model.objects.create_user("loner", password="x-long-password")
    client.force_login(user)
    response = client.get("/ingestions/")
    assert response.status_code == 403
    assert "not a member of any tenant" in response.content.decode()


@pytest.mark.parametrize("count", [5, 200])
def test_the_list_issues_a_bounded_number_of_queries(
    count, tenant, console, monkeypatch, django_assert_max_num_queries
):
    """Runs and history counts come in one query each, whatever the number of rows (9 today:
    session, user, tenant, roles, count, page, latest runs, history counts, tenant menu)."""
    monkeypatch.setattr("console.views.LIST_PAGE_SIZE", 500)  # every row on one page
    ingestions = [IngestionFactory(tenant=tenant) for _ in range(count)]
    now = timezone.now()
    Run.objects.bulk_create(
        Run(ingestion=ingestion, status=status, public_id=f"run-{ingestion.pk}-{status}")
        for ingestion in ingestions
        for status in (RunStatus.FAILED, RunStatus.SUCCESS)
    )
    ProcessedFile.objects.bulk_create(
        ProcessedFile(ingestion=ingestion, path=f"file-{index}.csv", loaded_at=now)
        for ingestion in ingestions
        for index in range(3)
    )
    viewer = console(Role.VIEWER)
    MembershipFactory(user=viewer.user, tenant__slug="second")  # the tenant switcher shows
    with django_assert_max_num_queries(10):
        response = viewer.get("/ingestions/")
    assert response.status_code == 200
    assert response.content.decode().count('class="badge badge-ok">Success') == count
    with django_assert_max_num_queries(10):
        assert viewer.get("/ingestions/", **HX, HTTP_HX_TARGET="ingestion-table").status_code == 200
