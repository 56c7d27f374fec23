"""Schedules in a real browser: set an ingestion's run schedule on its page, see the inline
error of an invalid expression, then the next three firing times."""

import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from refresh.models import Schedule

from ..factories import IngestionFactory
from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_set_a_run_schedule_and_see_its_next_firing_times(page, tenant, user_of):
    IngestionFactory(tenant=tenant, public_id="sales", name="Sales")
    log_in(page, user_of(Role.ADMIN))
    page.goto("/ingestions/sales/")

    form = page.locator("[data-run-schedule-form]")  # loaded with the card, after the page
    form.get_by_label("Cron expression").fill("61 2 * * *")
    form.get_by_label("Time zone").fill("Europe/Berlin")
    form.get_by_role("button", name="Set run schedule").click()
    expect(page.locator("#id_cron_error")).to_contain_text("not a valid cron expression")

    form = page.locator("[data-run-schedule-form]")
    form.get_by_label("Cron expression").fill("30 2 * * *")
    form.get_by_role("button", name="Set run schedule").click()

    expect(page.get_by_text("Run schedule saved.")).to_be_visible()
    next_times = page.locator("[data-run-schedule] [data-next-fire-times] li")
    expect(next_times).to_have_count(3)
    # In the schedule's time zone (one of three may be 03:00 on a spring-forward day).
    expect(page.locator("[data-run-schedule] [data-next-fire-times]")).to_contain_text("02:30")
    expect(page.locator("[data-run-schedule]")).to_contain_text("Europe/Berlin")
    schedule = Schedule.objects.get()
    assert (schedule.cron, schedule.timezone, schedule.paused) == (
        "30 2 * * *",
        "Europe/Berlin",
        False,
    )

    page.locator("[data-run-schedule]").get_by_role("button", name="Pause").click()
    expect(page.locator("[data-run-schedule]")).to_contain_text("none while paused")
