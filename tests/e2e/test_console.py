"""The console in a real browser: log in, preview, confirm by typing the name, watch the run."""

import re

import pytest
from playwright.sync_api import expect

from ingestions.engines import load_engine
from ingestions.models import Role
from ingestions.runs import run_request
from refresh.models import RefreshOperation

from ..factories import IngestionFactory
from .conftest import failing_sql_in_server, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def open_ingestion(page, name: str = "Ingestion") -> None:
    page.goto("/ingestions/sales/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def open_preview(page, action: str) -> None:
    page.get_by_role("link", name=action, exact=True).click()
    expect(page.get_by_text("Preview · nothing has been executed")).to_be_visible()


def confirm(page, typed: str):
    """Open the confirmation dialog, type `typed`, press the confirm button."""
    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Type the table name").fill(typed)
    dialog.locator("[data-confirm-button]").click()


def impact_numbers(page) -> dict:
    def number(key: str) -> float:
        text = page.locator(f"[data-impact={key}]").inner_text()
        return float(re.sub(r"[^0-9.]", "", text))

    return {
        key: number(key)
        for key in (
            "files_to_process",
            "files_skipped",
            "estimated_data_size_gb",
            "estimated_cost_usd",
            "estimated_duration_minutes",
        )
    }


def test_log_in_open_an_ingestion_and_log_out(page, loaded, user_of):
    log_in(page, user_of(Role.ADMIN))
    row = page.get_by_role("row").filter(has_text="raw.sales")
    expect(row).to_contain_text("Success")
    expect(row).to_contain_text("100")  # table rows, from the engine's metadata

    row.get_by_role("link", name=loaded.name).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(loaded.name)
    expect(page.locator("[data-stat=table-rows]")).to_have_text("100")
    expect(page.locator("[data-stat=history-count]")).to_have_text("4")
    expect(page.get_by_role("img", name="Rows and duration of the last runs")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto("/ingestions/sales/")
    expect(page).to_have_url(re.compile(r"/login/\?next="))


def test_full_refresh_shows_the_api_numbers_asks_for_the_name_and_runs_live(
    page, loaded, user_of, member, worker
):
    api_preview = (
        member(Role.ADMIN)
        .post("/api/v1/ingestions/sales/full-refresh", {"dry_run": True}, format="json")
        .json()
    )
    log_in(page, user_of(Role.ADMIN))
    open_ingestion(page)
    page.evaluate("window.notReloaded = true")
    open_preview(page, "Full refresh")
    assert impact_numbers(page) == pytest.approx(api_preview["impact"])
    lost = page.get_by_role("group", name="What is lost")
    expect(lost).to_contain_text("Table raw.sales, 100 rows")
    expect(lost).to_contain_text("History of 4 processed files")
    expect(page.get_by_role("listitem").filter(has_text="Replace table raw.sales")).to_be_visible()

    # The dialog: a wrong name keeps the button disabled; Esc cancels; focus stays inside.
    page.get_by_role("button", name="Continue…").click()
    dialog = page.get_by_role("dialog", name="Confirm full refresh")
    name_box = dialog.get_by_label("Type the table name")
    submit = dialog.get_by_role("button", name="Full refresh raw.sales")
    expect(name_box).to_be_focused()
    name_box.fill("raw.sale")
    expect(submit).to_be_disabled()
    name_box.fill("RAW.SALES")
    expect(submit).to_be_disabled()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert load_engine().table_exists(loaded.table_identifier)

    page.get_by_role("button", name="Continue…").click()
    expect(name_box).to_have_value("")
    name_box.fill("raw.sales")
    expect(submit).to_be_enabled()
    submit.focus()
    page.keyboard.press("Tab")
    expect(name_box).to_be_focused()  # Tab from the last control wraps to the first
    page.keyboard.press("Shift+Tab")
    expect(submit).to_be_focused()
    submit.click()

    result = page.get_by_role("heading", name=re.compile(r"^Full refresh accepted: run run-"))
    expect(result).to_be_visible()
    steps = page.locator(".steps-table tbody tr")
    expect(steps).to_have_count(3)
    for position, step in enumerate(
        [  # zero-downtime: each step takes effect when the new version is published
            "Replace the table when the new version is published",
            "Replace the processed-file history at publish",
            "Trigger the run that builds the new version",
        ]
    ):
        expect(steps.nth(position)).to_contain_text(step)
        expect(steps.nth(position)).to_contain_text("Success")
    operation = RefreshOperation.objects.get()
    run_id = operation.run.public_id
    expect(page.get_by_role("link", name=run_id).first).to_be_visible()

    # The worker loads the files; the page follows the run without being reloaded.
    expect(page.locator(f"#run-{run_id}")).to_contain_text("Success", timeout=60_000)
    expect(page.locator("[data-stat=table-rows]")).to_have_text("100", timeout=15_000)
    expect(page.locator("#run-table[data-polling]")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#operation-list")).to_contain_text("Full refresh")
    expect(page.locator("#audit-trail")).to_contain_text("Accepted")


def test_fresh_start_keeps_the_history(page, loaded, user_of):
    log_in(page, user_of(Role.OPERATOR))
    open_ingestion(page)
    # An operator has fresh start; the admin-only actions are not offered.
    expect(page.get_by_role("link", name="Full refresh", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="Drop table", exact=True)).to_have_count(0)
    open_preview(page, "Fresh start")
    expect(page.get_by_role("group", name="What is kept")).to_contain_text(
        "History of 4 files is kept"
    )
    confirm(page, "raw.sales")
    expect(
        page.get_by_role("heading", name=re.compile(r"^Fresh start accepted: run run-"))
    ).to_be_visible()
    expect(page.locator(".steps-table tbody tr")).to_have_count(2)
    expect(page.locator("[data-stat=history-count]")).to_have_text("4")
    # No downtime: the table keeps its rows until the run publishes the new version.
    expect(page.locator("[data-stat=table-rows]")).to_have_text("100")


def test_dropping_the_table_twice_says_the_second_time_it_did_not_exist(page, loaded, user_of):
    log_in(page, user_of(Role.ADMIN))
    open_ingestion(page)
    open_preview(page, "Drop table")
    confirm(page, "raw.sales")
    expect(page.get_by_role("heading", name="Table dropped successfully")).to_be_visible()
    expect(page.locator("[data-stat=table-missing]")).to_be_visible()

    open_preview(page, "Drop table")
    expect(
        page.get_by_text("Drop table raw.sales: it does not exist, nothing to drop")
    ).to_be_visible()
    confirm(page, "raw.sales")
    expect(page.get_by_role("heading", name="Table did not exist")).to_be_visible()
    expect(page.locator(".steps-table")).to_contain_text("did not exist: nothing to drop")
    assert RefreshOperation.objects.count() == 2


def test_a_viewer_sees_no_actions_and_a_forged_post_is_refused(page, loaded, user_of):
    log_in(page, user_of(Role.VIEWER))
    open_ingestion(page)
    expect(page.get_by_text("lets you look at this ingestion, not change it")).to_be_visible()
    for name in ["Run now", "Full refresh", "Fresh start", "Drop table", "Clear history"]:
        expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        "/ingestions/sales/drop-table/",
        form={"typed_name": "raw.sales"},
        headers={"X-CSRFToken": csrf, "HX-Request": "true", "Referer": page.url},
    )
    assert forged.status == 403
    assert "Your role does not allow" in forged.text()
    assert load_engine().table_exists(loaded.table_identifier)
    assert not RefreshOperation.objects.exists()


def test_another_tenants_ingestion_is_a_404_page(page, loaded, user_of, other_tenant):
    IngestionFactory(tenant=other_tenant, public_id="secret", destination_table="raw.secret")
    log_in(page, user_of(Role.ADMIN))
    response = page.goto("/ingestions/secret/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert page.goto("/ingestions/secret/drop-table/").status == 404


def test_a_partial_failure_shows_recovery_and_resume_finishes_it(page, loaded, user_of, settings):
    settings.REFRESH_DEFAULT_MODE = "drop_first"  # only dropping first can fail half-way
    log_in(page, user_of(Role.ADMIN))
    open_ingestion(page)
    open_preview(page, "Full refresh")
    with failing_sql_in_server('INSERT INTO "ingestions_run"'):
        confirm(page, "raw.sales")
        expect(page.get_by_role("heading", name="Some operations failed")).to_be_visible()
    recovery = page.locator(".recovery")
    expect(recovery).to_contain_text("Table dropped, file history cleared, no run triggered")
    expect(recovery).to_contain_text("Trigger a run")  # what is still to do
    expect(page.locator(".steps-table tbody tr").nth(2)).to_contain_text("Failed")

    page.get_by_role("button", name="Resume full refresh").first.click()
    expect(page.get_by_role("heading", name="Full refresh completed successfully")).to_be_visible()
    operation = RefreshOperation.objects.get()
    assert operation.status == "accepted"
    assert operation.attempts == 2
    assert operation.run is not None


def test_a_refusal_is_a_message_in_the_page_with_what_to_do_next(page, loaded, user_of):
    run = run_request(ingestion=loaded)  # queued: no worker takes it in this test
    log_in(page, user_of(Role.ADMIN))
    open_ingestion(page)
    open_preview(page, "Drop table")
    confirm(page, "raw.sales")
    expect(page.get_by_role("heading", name="A run is in progress")).to_be_visible()
    expect(page.get_by_role("alert").filter(has_text="Cannot refresh")).to_be_visible()
    expect(page.get_by_text("What to do next:")).to_be_visible()
    expect(page.locator("#operation-panel").get_by_role("link", name=run.public_id)).to_be_visible()
    expect(page.locator("#server-error")).to_be_hidden()
    assert load_engine().table_exists(loaded.table_identifier)


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_403_after_a_role_change_is_shown_in_place_even_with_debug_on(
    page, loaded, user_of, settings, debug
):
    """With DEBUG on (make run's default) django-htmx's debug script is in the page: it must
    not replace the whole page with the console's own answer to a refused action."""
    from ingestions.models import Membership

    settings.DEBUG = debug
    operator = user_of(Role.OPERATOR)
    log_in(page, operator)
    open_ingestion(page)
    open_preview(page, "Fresh start")
    Membership.objects.filter(user=operator).update(role=Role.VIEWER)  # demoted meanwhile

    confirm(page, "raw.sales")

    expect(page.get_by_role("alert").first).to_be_visible()
    expect(page.get_by_role("link", name="Autoloader Console")).to_be_visible()  # still the page
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert ("django-htmx.js" in page.content()) is debug
    assert RefreshOperation.objects.filter(ingestion=loaded).count() == 0
