"""The console's schedule card: lazy load, the run schedule form (CSRF, inline errors),
scheduled refreshes with pause/resume/delete and the admin's approval."""

import pytest
from django.test import Client

from ingestions.models import Role
from refresh.models import Schedule
from refresh.schedules import schedule_set

from ..factories import IngestionFactory, MembershipFactory
from .conftest import HX

pytestmark = pytest.mark.django_db

CARD = "/ingestions/sales/schedules/"


@pytest.fixture
def ingestion(tenant):
    return IngestionFactory(tenant=tenant, public_id="sales", name="Sales")


def csrf_client(tenant, role=Role.ADMIN) -> Client:
    """A logged-in client that enforces CSRF, as a browser's requests are checked."""
    membership = MembershipFactory(tenant=tenant, role=role)
    client = Client(enforce_csrf_checks=True)
    client.force_login(membership.user)
    client.user = membership.user
    client.get("/ingestions/sales/")  # the page sets the CSRF cookie
    return client


def post(client: Client, url: str, data: dict):
    return client.post(url, data, HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value, **HX)


def test_the_ingestion_page_loads_the_schedule_card_lazily(admin_console, ingestion):
    page = admin_console.get("/ingestions/sales/").content.decode()

    assert f'hx-get="{CARD}"' in page
    assert 'hx-trigger="load"' in page


def test_the_card_shows_the_run_schedule_and_its_next_three_firings(admin_console, ingestion):
    schedule_set(
        ingestion=ingestion, actor=admin_console.user, cron="0 2 * * *", timezone="Europe/Berlin"
    )

    response = admin_console.get(CARD, **HX)

    assert response.status_code == 200
    card = response.content.decode()
    assert card.lstrip().startswith('<section id="schedule-card"')  # the fragment, not the page
    assert "<code data-schedule-cron>0 2 * * *</code>" in card
    assert "Europe/Berlin" in card
    next_times = card.split("data-next-fire-times>")[1].split("</ol>")[0]
    assert next_times.count("<li>") == 3
    assert next_times.count(", 02:00 CE") == 3  # CET or CEST: the schedule's own time
    assert "never" in card.split("data-last-firing>")[1]
    # Without HTMX the same URL is a page.
    assert "<html" in admin_console.get(CARD).content.decode()


def test_setting_the_run_schedule_needs_the_csrf_token(tenant, ingestion):
    client = csrf_client(tenant)
    data = {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}

    forged = client.post("/ingestions/sales/schedules/run/", data, **HX)
    assert forged.status_code == 403
    assert not Schedule.objects.exists()

    response = post(client, "/ingestions/sales/schedules/run/", data)

    assert response.status_code == 200
    assert "Run schedule saved." in response.content.decode()
    assert "ingestion-changed" in response["HX-Trigger-After-Settle"]
    schedule = Schedule.objects.get()
    assert (schedule.action, schedule.cron, schedule.timezone) == (
        "run",
        "30 2 * * *",
        "Europe/Berlin",
    )


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"cron": "61 * * * *", "timezone": "UTC"}, "cron", "not a valid cron expression"),
        ({"cron": "* * * * *", "timezone": "UTC"}, "cron", "at most every 5 minutes"),
        ({"cron": "0 2 * * *", "timezone": "Atlantis/Capital"}, "timezone", "not an IANA"),
        ({"cron": "", "timezone": "UTC"}, "cron", "required"),
    ],
)
def test_an_invalid_schedule_shows_inline_field_errors(
    admin_console, ingestion, data, field, message
):
    response = admin_console.post("/ingestions/sales/schedules/run/", data, **HX)

    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"  # swapped in place
    card = response.content.decode()
    error = card.split(f'id="id_{field}_error"')[1].split("</p>")[0]
    assert message in error
    assert 'aria-invalid="true"' in card
    assert not Schedule.objects.exists()


def test_a_viewer_sees_the_schedules_but_no_form(console, ingestion, admin_console):
    schedule_set(ingestion=ingestion, actor=admin_console.user, cron="0 2 * * *")
    viewer = console(Role.VIEWER)

    card = viewer.get(CARD, **HX).content.decode()
    assert "data-schedule-cron" in card
    assert "data-run-schedule-form" not in card
    assert "data-refresh-schedule-form" not in card
    assert "Approve" not in card

    refused = viewer.post(
        "/ingestions/sales/schedules/run/", {"cron": "0 3 * * *", "timezone": "UTC"}, **HX
    )
    assert refused.status_code == 403
    assert "does not allow" in refused.content.decode()
    assert Schedule.objects.get().cron == "0 2 * * *"


def test_an_operator_schedules_a_fresh_start_but_cannot_approve(console, ingestion):
    operator = console(Role.OPERATOR)
    card = operator.get(CARD, **HX).content.decode()
    assert "data-refresh-schedule-form" in card
    assert "data-run-schedule-form" not in card  # the run schedule needs change_ingestion
    assert '<option value="full_refresh"' not in card  # a full refresh is an admin's

    response = operator.post(
        "/ingestions/sales/schedules/add/",
        {"action": "fresh_start", "cron": "0 2 * * *", "timezone": "UTC"},
        **HX,
    )

    assert response.status_code == 200, response.content.decode()
    schedule = Schedule.objects.get()
    assert schedule.action == "fresh_start" and schedule.created_by == operator.user
    assert "schedule-approve" not in response.content.decode()
    refused = operator.post(
        f"/schedules/{schedule.public_id}/approve/", {"max_cost_usd": "10"}, **HX
    )
    assert refused.status_code == 403
    schedule.refresh_from_db()
    assert schedule.approved_max_cost_usd is None


def test_an_admin_pauses_resumes_approves_and_deletes_a_scheduled_refresh(tenant, ingestion):
    admin = csrf_client(tenant)
    added = post(
        admin,
        "/ingestions/sales/schedules/add/",
        {"action": "full_refresh", "cron": "0 2 * * 1", "timezone": "Europe/Berlin"},
    )
    assert added.status_code == 200
    schedule = Schedule.objects.get()
    actions = f"/schedules/{schedule.public_id}"

    paused = post(admin, f"{actions}/pause/", {})
    assert "none while paused" in paused.content.decode()
    resumed = post(admin, f"{actions}/resume/", {})
    assert (
        "Resume" not in resumed.content.decode().split(f'data-schedule="{schedule.public_id}"')[1]
    )
    approved = post(admin, f"{actions}/approve/", {"max_cost_usd": "750"})
    assert "up to $750.00" in approved.content.decode()
    schedule.refresh_from_db()
    assert (schedule.paused, schedule.approved_by) == (False, admin.user)

    deleted = post(admin, f"{actions}/delete/", {})
    assert deleted.status_code == 200
    assert "No scheduled refresh." in deleted.content.decode()
    assert not Schedule.objects.exists()


def test_another_tenants_schedules_are_not_found(console, ingestion, other_tenant, admin_console):
    schedule = schedule_set(
        ingestion=ingestion, actor=admin_console.user, action="full_refresh", cron="0 2 * * *"
    )
    stranger = console(Role.ADMIN, tenant_obj=other_tenant)

    assert stranger.get(CARD, **HX).status_code == 404
    assert stranger.post(f"/schedules/{schedule.public_id}/delete/", **HX).status_code == 404
    assert Schedule.objects.filter(pk=schedule.pk).exists()
