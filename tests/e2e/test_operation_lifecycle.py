"""A zero-downtime full refresh in a real browser: its page follows the run to "published"
without a reload, shows how long what it replaced is kept, and undoes it by the table's name."""

import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.engines import load_engine
from ingestions.models import Role
from refresh.models import OperationStatus, RefreshOperation

from ..helpers import write_csv_files
from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Where tests/e2e/test_screenshots.py writes the README's pictures: these join them when
# AUTOLOADER_SCREENSHOTS=1; otherwise they go to the test's own folder.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def shoot(tmp_path):
    folder = SCREENSHOTS if os.environ.get("AUTOLOADER_SCREENSHOTS") else tmp_path

    def take(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def test_a_full_refresh_goes_live_to_published_then_is_undone_by_name(
    page, loaded, source_dir, user_of, request, shoot
):
    write_csv_files(source_dir, files=1, rows=25, start=4)  # the refresh brings 125 rows
    log_in(page, user_of(Role.ADMIN))
    page.goto(f"/ingestions/{loaded.public_id}/")
    page.get_by_role("link", name="Full refresh", exact=True).click()
    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog", name="Confirm full refresh")
    dialog.get_by_label("Type the table name").fill("raw.sales")
    dialog.get_by_role("button", name="Full refresh raw.sales").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Full refresh accepted"))).to_be_visible()

    # No worker yet: the operation's page opens while its run waits, and follows it.
    page.get_by_role("link", name="Operation record").click()
    status = page.locator("[data-operation-status]")
    expect(status).to_have_attribute("data-operation-status", "accepted")
    expect(page.locator("#operation-result[data-polling]")).to_have_count(1)
    shoot(page, "operation-accepted")
    page.evaluate("window.notReloaded = true")
    request.getfixturevalue("worker")  # starts the real worker process now

    expect(status).to_have_attribute("data-operation-status", "published", timeout=60_000)
    expect(
        page.get_by_role("heading", name="Published: the new version of the table is live")
    ).to_be_visible()
    expect(page.locator("#operation-result[data-polling]")).to_have_count(0)  # polling stopped
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator(".timeline")).to_contain_text("Published")
    expect(page.locator("#operation-result [data-retention]")).to_contain_text("kept until")
    assert load_engine().describe_table(loaded.table_identifier).row_count == 125
    shoot(page, "operation-published")

    page.get_by_role("link", name="Undo full refresh…").click()
    expect(page.get_by_text("Undo preview · nothing has been executed")).to_be_visible()
    expect(page.get_by_role("group", name="What comes back")).to_contain_text(
        "Table raw.sales as it was before: 100 rows"
    )
    expect(page.get_by_role("group", name="What is lost")).to_contain_text(
        "Table raw.sales as it is now: 125 rows"
    )
    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog", name="Confirm undo")
    name_box = dialog.get_by_label("Type the table name")
    submit = dialog.locator("[data-confirm-button]")
    expect(name_box).to_be_focused()
    name_box.fill("raw.sale")
    expect(submit).to_be_disabled()
    name_box.fill("raw.sales")
    expect(submit).to_be_enabled()
    shoot(page, "undo-dialog")
    submit.click()

    expect(
        page.get_by_role("heading", name=re.compile(r"^Undone: the table and its file history"))
    ).to_be_visible()
    expect(status).to_have_attribute("data-operation-status", "undone")
    expect(page.locator("#operation-result [data-retention]")).to_contain_text(
        "the table is back to 100 rows"
    )
    expect(page.get_by_role("link", name="Undo full refresh…")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    assert load_engine().describe_table(loaded.table_identifier).row_count == 100
    assert RefreshOperation.objects.get().status == OperationStatus.UNDONE
    shoot(page, "operation-undone")


def test_failed_files_ask_for_a_decision_and_discard_keeps_the_table(
    page, loaded, source_dir, user_of, shoot
):
    from refresh.services import refresh_execute

    from ..helpers import drain_queue

    admin = user_of(Role.ADMIN)
    write_csv_files(source_dir, files=1, rows=25, start=4)
    (source_dir / "part-9999.csv").write_bytes(b"id,name,amount\n1,a\n2,b,3,4\n")
    operation = refresh_execute(ingestion=loaded, kind="full_refresh", actor=admin, confirm=True)
    drain_queue()

    log_in(page, admin)
    page.goto(f"/operations/{operation.public_id}/")
    decision = page.get_by_role("group", name=re.compile("files failed to load"))
    expect(decision).to_contain_text("part-9999.csv")
    shoot(page, "operation-awaiting-decision")

    decision.get_by_role("button", name="Discard…").click()
    dialog = page.get_by_role("dialog", name="Confirm discard")
    dialog.get_by_label("Type the table name").fill("raw.sales")
    dialog.get_by_role("button", name="Discard what loaded").click()
    expect(
        page.get_by_role("heading", name="Discarded: the table and its history are as they were")
    ).to_be_visible()
    assert load_engine().describe_table(loaded.table_identifier).row_count == 100
    assert RefreshOperation.objects.get().status == OperationStatus.DISCARDED
