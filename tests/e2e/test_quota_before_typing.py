"""The rate limit is told before anything is typed: in a real browser, the preview of a full
refresh says how many of the table's full refreshes are left; once they are used up the
preview says so, names the setting, and offers no confirmation at all — while another kind
of operation on the same table, which has its own quota, still can be confirmed."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from refresh.models import OperationStatus, RefreshOperation

from ..helpers import drain_queue
from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# With AUTOLOADER_SCREENSHOTS=1 the used-up preview joins the README's pictures.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_a_used_up_quota_is_on_the_preview_and_no_confirmation_is_offered(
    page, loaded, user_of, settings, tmp_path
):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    log_in(page, user_of(Role.ADMIN))
    page.goto(f"/ingestions/{loaded.public_id}/")
    page.get_by_role("link", name="Full refresh", exact=True).click()
    expect(page.locator('[data-quota="left"]')).to_contain_text(
        "Rate limit: 1 of 1 full refresh operation of raw.sales per hour left"
    )
    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog", name="Confirm full refresh")
    dialog.get_by_label("Type the table name").fill("raw.sales")
    dialog.get_by_role("button", name="Full refresh raw.sales").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Full refresh accepted"))).to_be_visible()
    drain_queue()  # the real queue runs its run and publishes it
    operation = RefreshOperation.objects.get(ingestion=loaded)
    assert operation.status == OperationStatus.PUBLISHED

    # The second full refresh of this table within the hour: told on the preview, no typing.
    page.goto(f"/ingestions/{loaded.public_id}/")
    page.locator('a[hx-get$="/full-refresh/"]').click()  # the action, not the record
    exhausted = page.locator('[data-quota="exhausted"]')
    expect(exhausted).to_be_visible()
    expect(exhausted).to_contain_text("is used up: executing now would be refused")
    expect(exhausted).to_contain_text("REFRESH_RATE_FULL_REFRESH")
    expect(page.get_by_role("button", name="Continue…")).to_have_count(0)
    expect(page.get_by_label("Type the table name")).to_have_count(0)
    expect(page.locator('[data-quota="left"]')).to_have_count(0)
    folder = SCREENSHOTS if os.environ.get("AUTOLOADER_SCREENSHOTS") else tmp_path
    page.locator("#operation-panel").screenshot(path=str(folder / "quota-used-up.png"))

    # A fresh start is another operation with its own quota on this table: still offered.
    page.goto(f"/ingestions/{loaded.public_id}/")
    page.get_by_role("link", name="Fresh start", exact=True).click()
    expect(page.locator('[data-quota="left"]')).to_contain_text("fresh start")
    expect(page.get_by_role("button", name="Continue…")).to_be_visible()
    assert RefreshOperation.objects.filter(ingestion=loaded).count() == 1  # nothing else ran
