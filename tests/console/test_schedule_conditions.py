"""The console's schedule form for conditional refreshes: the condition field (checked by the
same parser as the API), the facts now (a gated preview, POST with CSRF), the minimum
interval beside the cron field."""

import pytest

from ingestions.models import Role
from refresh.models import RefreshPlan, Schedule

from ..factories import IngestionFactory
from ..helpers import write_csv_files
from .conftest import HX
from .test_schedules import CARD, csrf_client, post

pytestmark = pytest.mark.django_db

FACTS_URL = "/ingestions/sales/schedules/facts/"
ADD_URL = "/ingestions/sales/schedules/add/"
NEW = {"action": "full_refresh", "cron": "0 2 * * *", "timezone": "UTC"}


@pytest.fixture
def ingestion(tenant, source_dir):
    write_csv_files(source_dir, files=3, rows=5)
    return IngestionFactory(
        tenant=tenant, public_id="sales", name="Sales", source_uri=str(source_dir)
    )


def test_the_form_has_the_condition_field_and_states_the_minimum_interval(
    admin_console, ingestion, settings
):
    settings.AUTOLOADER_SCHEDULE_MIN_INTERVAL_SECONDS = 600
    card = admin_console.get(CARD, **HX).content.decode()

    assert 'name="condition"' in card and "Only when" in card and "optional" in card
    assert "at most once every 10 minutes" in card
    assert "data-show-facts" in card and 'id="schedule-facts"' in card


def test_a_condition_is_saved_and_shown_on_the_schedule(tenant, ingestion):
    client = csrf_client(tenant)

    response = post(client, ADD_URL, {**NEW, "condition": "changed_files > 0 or new_files > 0"})

    assert response.status_code == 200, response.content
    assert Schedule.objects.get().condition == "changed_files > 0 or new_files > 0"
    assert "Only when <code>changed_files &gt; 0 or new_files &gt; 0</code>" in (
        response.content.decode()
    )


@pytest.mark.parametrize("condition", ["files > 0", "__import__('os')", "new_files > 0 and"])
def test_a_bad_condition_is_a_message_under_its_field_and_saves_nothing(
    tenant, ingestion, condition
):
    client = csrf_client(tenant)

    response = post(client, ADD_URL, {**NEW, "condition": condition})

    assert response.status_code == 400
    card = response.content.decode()
    assert "Invalid condition" in card and "Known facts: file_count, new_files" in card
    assert not Schedule.objects.exists()


def test_the_facts_now_are_a_gated_preview(tenant, ingestion):
    client = csrf_client(tenant, role=Role.VIEWER)

    response = post(client, FACTS_URL, {"action": "fresh_start"})

    assert response.status_code == 200, response.content
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<div id="schedule-facts"')
    assert '<strong data-fact="new_files">3</strong>' in fragment
    assert '<strong data-fact="file_count">3</strong>' in fragment
    assert RefreshPlan.objects.count() == 1  # recorded as a dry-run is


def test_the_facts_need_csrf_a_refresh_and_the_tenants_ingestion(tenant, other_tenant, ingestion):
    client = csrf_client(tenant)

    assert client.post(FACTS_URL, {"action": "full_refresh"}).status_code == 403  # no token
    assert client.get(FACTS_URL).status_code == 405  # a GET never previews
    refused = post(client, FACTS_URL, {"action": "drop_table"})
    assert refused.status_code == 400 and "Choose a refresh" in refused.content.decode()
    IngestionFactory(tenant=other_tenant, public_id="theirs")
    assert post(client, "/ingestions/theirs/schedules/facts/", NEW).status_code == 404
    assert not RefreshPlan.objects.exists()
