"""API tokens in a real browser: make one, call the API with its key, revoke it in place.

With AUTOLOADER_SCREENSHOTS=1 the page (a new key shown once) is also saved, at desktop and
phone width, to docs/screenshots/tokens.png and tokens-phone.png.
"""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from ingestions.tokens import token_create

from ..factories import MembershipFactory
from .conftest import DESKTOP, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


def call_api(live_server, key: str) -> tuple[int, dict]:
    url = f"{live_server.url}/api/v1/ingestions"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310 - the live server
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def create_token(page, name: str) -> str:
    """Make a token on the tokens page; returns the key the page shows once."""
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_text("you will not see it again")).to_be_visible()
    return page.locator("[data-token-key]").inner_text().strip()


def test_make_a_token_use_it_and_revoke_it_in_the_page(page, live_server, user_of):
    log_in(page, user_of(Role.OPERATOR))
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", name="API tokens", level=1)).to_be_visible()

    key = create_token(page, "e2e")

    row = page.get_by_role("row").filter(has_text="e2e")
    expect(row).to_contain_text("never")
    status, _body = call_api(live_server, key)
    assert status == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke e2e").click()
    expect(page.get_by_text("Token “e2e” revoked")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="e2e")).to_have_count(0)
    # The key box made before stays until the page is left; a reload drops it.
    page.reload()
    expect(page.locator("[data-token-key]")).to_have_count(0)

    status, body = call_api(live_server, key)
    assert status == 401
    assert body["error_code"] == "AUTHENTICATION_FAILED"


def test_a_dismissed_confirmation_revokes_nothing(page, live_server, user_of):
    user = user_of(Role.VIEWER)
    _token, key = token_create(user=user, name="keep-me")
    log_in(page, user)
    page.goto("/tokens/")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Revoke keep-me").click()

    expect(page.get_by_role("row").filter(has_text="keep-me")).to_be_visible()
    assert call_api(live_server, key)[0] == 200


@pytest.mark.skipif(
    not os.environ.get("AUTOLOADER_SCREENSHOTS"),
    reason="writes docs/screenshots; set AUTOLOADER_SCREENSHOTS=1 to refresh them",
)
@pytest.mark.parametrize(("viewport", "name"), [(DESKTOP, "tokens"), (PHONE, "tokens-phone")])
def test_capture_the_tokens_page(new_page, live_server, tenant, viewport, name):
    user = MembershipFactory(user__username="alice", tenant=tenant, role=Role.ADMIN).user
    _token, key = token_create(user=user, name="airflow-prod")
    call_api(live_server, key)  # used: "just now"
    token_create(user=user, name="nightly-backfill")
    page = new_page(viewport=viewport)
    log_in(page, user)
    page.goto("/tokens/")

    create_token(page, "ci-deploy")

    OUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True, animations="disabled")
