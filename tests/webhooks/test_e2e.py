"""Webhooks in a real browser: add one (secret shown once), send a test event to a receiver
on 127.0.0.1, and see the delivery and its attempt in the log.

The e2e fixtures start no worker: the delivery pass runs in the test process.
"""

import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from webhooks.delivery import deliver_due

from ..e2e.conftest import browser, log_in, new_page, page, user_of  # noqa: F401  (fixtures)
from .conftest import verify

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_add_a_webhook_send_a_test_event_and_see_it_delivered(page, user_of, receiver):  # noqa: F811
    log_in(page, user_of(Role.ADMIN))
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()

    page.get_by_label("URL").fill(receiver.url)
    page.get_by_role("button", name="Add webhook").click()
    expect(page.get_by_text("you will not see it again")).to_be_visible()
    secret = page.locator("[data-webhook-secret]").inner_text().strip()
    assert secret.startswith("whsec_")

    page.get_by_role("table").get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Deliveries")).to_be_visible()
    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_text("Test event queued")).to_be_visible()
    assert deliver_due() == 1
    page.get_by_role("link", name="Refresh").click()

    delivery = page.locator('[data-delivery-status="succeeded"]')
    expect(delivery).to_contain_text("webhook.test")
    expect(delivery).to_contain_text("HTTP 200")
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["headers"]["X-Autoloader-Event"] == "webhook.test"
    assert verify(receiver.requests[0], secret)
