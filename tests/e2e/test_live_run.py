"""Live pages agree: after Run now, the banner, the run row and the table and history cards
all show the finished run without a reload."""

import pytest
from playwright.sync_api import expect

from ingestions.models import Role

from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_run_now_settles_banner_run_row_and_cards_together(
    page, csv_ingestion, source_dir, user_of, worker
):
    from ..helpers import write_csv_files

    write_csv_files(source_dir, files=3, rows=7)
    log_in(page, user_of(Role.OPERATOR))
    page.goto(f"/ingestions/{csv_ingestion.public_id}/")
    expect(page.locator("[data-stat=table-missing]")).to_be_visible()

    page.get_by_role("button", name="Run now").click()
    banner = page.locator("#run-banner")
    expect(banner).to_be_visible()

    # No reload from here on: the worker loads the files, the page follows.
    expect(banner).to_have_attribute("data-run-status", "SUCCESS", timeout=60_000)
    expect(banner.get_by_role("heading")).to_contain_text("success")
    expect(banner).to_contain_text("3 of 3 files loaded, 21 rows")
    expect(page.locator("#run-table tbody tr").first).to_contain_text("Success")
    expect(page.locator("[data-stat=table-rows]")).to_have_text("21", timeout=10_000)
    expect(page.locator("[data-stat=history-count]")).to_have_text("3", timeout=10_000)
