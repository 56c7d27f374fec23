"""Creating an ingestion in a real browser: choose a location, check the source, fix an
invalid table name, create, run it. With AUTOLOADER_SCREENSHOTS=1 it also pictures the form
(docs/screenshots/ingestion-new*.png), as tests/e2e/test_screenshots.py does for the rest."""

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.locations import location_grant
from ingestions.models import Ingestion, Role, RunStatus

from ..factories import MembershipFactory, TenantFactory, UserFactory
from ..helpers import write_csv_files
from .conftest import DESKTOP, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


def check_source(page) -> None:
    page.get_by_role("button", name="Check source").click()
    expect(page.locator("#source-check [data-stat=file-count]")).to_have_text("3")


def test_create_check_the_source_fix_the_table_and_run(page, source_dir, user_of, worker):
    write_csv_files(source_dir / "sales", files=3, rows=40)
    log_in(page, user_of(Role.ADMIN))
    page.get_by_role("link", name="New ingestion").first.click()
    expect(page.get_by_role("heading", name="New ingestion")).to_be_visible()

    page.get_by_label("Storage location").select_option(index=0)
    page.get_by_label("Folder inside the location").fill("sales")
    page.get_by_label("File name pattern").fill("*.csv")
    page.evaluate("window.notReloaded = true")
    check_source(page)
    assert page.evaluate("window.notReloaded")  # an HTMX swap, not a new page
    result = page.locator("#source-check")
    expect(result.locator("[data-check=names]")).to_contain_text("part-0002.csv")
    schema = result.locator("[data-table=check-schema]")
    expect(schema.get_by_role("row").filter(has_text="amount")).to_contain_text("double")
    expect(result.locator("[data-table=check-sample] tbody tr")).to_have_count(20)
    assert not Ingestion.objects.exists()  # checking saves nothing

    page.get_by_label("Name", exact=True).fill("Daily sales")
    page.get_by_label("Destination table").fill("Sales Data")
    page.get_by_role("button", name="Create ingestion").click()
    error = page.locator("#id_destination_table_error")
    expect(error).to_contain_text("must be 'namespace.table'")
    expect(page.get_by_label("Destination table")).to_have_attribute("aria-invalid", "true")
    assert not Ingestion.objects.exists()

    page.get_by_label("Destination table").fill("raw.sales_data")
    page.get_by_role("button", name="Create ingestion").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Daily sales")
    ingestion = Ingestion.objects.get()
    expect(page).to_have_url(re.compile(f"/ingestions/{ingestion.public_id}/$"))

    page.get_by_role("button", name="Run now").click()
    queued = page.get_by_role("heading", name=re.compile(r"^Run run-\S+ queued"))
    expect(queued).to_be_visible()
    run_id = queued.locator("code").inner_text()
    expect(page.locator(f"#run-{run_id}")).to_contain_text(
        "Success", timeout=120_000
    )  # a loaded machine
    assert ingestion.runs.get().status == RunStatus.SUCCESS


def test_only_the_chosen_formats_reader_options_show(page, source_dir, user_of):
    log_in(page, user_of(Role.ADMIN))
    page.goto("/ingestions/new/")
    expect(page.get_by_label("Delimiter")).to_be_visible()
    page.get_by_label("Format").select_option("parquet")
    expect(page.get_by_label("Delimiter")).to_be_hidden()
    expect(page.get_by_text("Parquet files need no reader options.")).to_be_visible()


@pytest.fixture
def landing():
    """A source folder with a readable path for the pictures, removed afterwards."""
    root = Path("/tmp/autoloader-landing")
    shutil.rmtree(root, ignore_errors=True)
    write_csv_files(root / "acme" / "sales", files=3, rows=1200)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(
    not os.environ.get("AUTOLOADER_SCREENSHOTS"),
    reason="writes docs/screenshots; set AUTOLOADER_SCREENSHOTS=1 to refresh them",
)
def test_capture_the_new_ingestion_form(new_page, landing):
    acme = TenantFactory(slug="acme", name="Acme Corp")
    alice = UserFactory(username="alice")
    MembershipFactory(user=alice, tenant=acme, role=Role.ADMIN)
    location_grant(tenant=acme, uri=str(landing / "acme"), name="Landing zone")
    OUT.mkdir(parents=True, exist_ok=True)
    for viewport, name in ((DESKTOP, "ingestion-new"), (PHONE, "ingestion-new-phone")):
        page = new_page(viewport)
        log_in(page, alice)
        page.goto("/ingestions/new/")
        page.get_by_label("Name", exact=True).fill("Daily sales")
        page.locator("#id_public_id").fill("sales-daily")
        page.get_by_label("Folder inside the location").fill("sales")
        page.get_by_label("File name pattern").fill("*.csv")
        page.get_by_label("Destination table").fill("raw.sales_data")
        check_source(page)
        page.screenshot(path=str(OUT / f"{name}.png"), full_page=True, animations="disabled")
