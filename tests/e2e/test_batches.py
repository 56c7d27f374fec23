"""Batch refresh in the browser: tick tables on the list, review the combined preview, type
the number of tables, and watch the batch's page reach published with a real worker."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.models import Role

from ..helpers import rows
from .conftest import log_in

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


def test_refresh_two_tables_together_from_the_list(page, new_page, three, user_of, worker):
    log_in(page, user_of(Role.ADMIN))
    page.get_by_label("(orders)").check()
    page.get_by_label("(users)").check()
    page.get_by_role("button", name="Refresh selected…").click()

    expect(page.get_by_role("heading", name="Full refresh of 2 tables together")).to_be_visible()
    expect(page.locator('[data-total="files_to_process"]')).to_have_text("9")
    expect(page.locator('tr[data-ingestion="orders"]')).to_contain_text("raw.orders")
    if os.environ.get("AUTOLOADER_SCREENSHOTS"):
        page.screenshot(path=str(SCREENSHOTS / "batch-preview.png"), full_page=True)
        phone = new_page(viewport=PHONE)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(page.url)
        phone.screenshot(path=str(SCREENSHOTS / "batch-preview-phone.png"), full_page=True)
    box = page.get_by_label("the number of tables")
    button = page.get_by_role("button", name="Refresh 2 tables")
    expect(button).to_be_disabled()  # before anything is typed, not only after a wrong count
    box.fill("3")
    expect(button).to_be_disabled()
    box.fill("2")
    expect(button).to_be_enabled()
    button.click()

    expect(page.get_by_role("heading", name="Full refresh of 2 tables")).to_be_visible()
    expect(page.locator("#batch-status")).not_to_contain_text("Loading", timeout=120_000)
    from refresh.models import RefreshBatch

    batch = RefreshBatch.objects.exclude(status="planned").get()
    assert batch.status == "published", batch.error
    expect(page.locator("#batch-status")).to_contain_text("Published", timeout=120_000)
    expect(page.locator('tr[data-ingestion="users"]')).to_contain_text("Published")
    assert [rows(ingestion) for ingestion in three] == [45, 35, 20]
