"""Screenshots of the console's main screens for the README (docs/screenshots/*.png).

Not part of the suite: it runs only when asked for, and rewrites the PNGs.

    AUTOLOADER_SCREENSHOTS=1 .venv/bin/pytest tests/e2e/test_screenshots.py
"""

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ingestions.models import Role
from ingestions.runs import run_request

from ..factories import IngestionFactory, MembershipFactory, TenantFactory, UserFactory
from ..helpers import drain_queue, write_csv_files
from .conftest import DESKTOP, failing_sql_in_server, log_in

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.environ.get("AUTOLOADER_SCREENSHOTS"),
        reason="writes docs/screenshots; set AUTOLOADER_SCREENSHOTS=1 to refresh them",
    ),
]

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def landing():
    """Source folders with a readable path for the pictures, removed afterwards."""
    root = Path("/tmp/landing")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def demo(landing):
    """A tenant with a few ingestions in different states, as a team would have them."""
    acme = TenantFactory(slug="acme", name="Acme Corp")
    alice = UserFactory(username="alice")
    MembershipFactory(user=alice, tenant=acme, role=Role.ADMIN)
    MembershipFactory(user=alice, tenant=TenantFactory(slug="globex", name="Globex"))

    def folder(name: str) -> Path:
        path = landing / "acme" / name
        path.mkdir(parents=True)
        return path

    sales_dir = folder("sales")
    sales = IngestionFactory(
        tenant=acme,
        public_id="sales-daily",
        name="Daily sales",
        source_uri=str(sales_dir),
        source_pattern="*.csv",
        destination_table="raw.sales_data",
        cost_per_gb_usd=5,
    )
    for day in range(8):  # eight daily runs of three files each
        write_csv_files(sales_dir, files=3, rows=1500 + day * 250, start=day * 3)
        if day == 5:
            (sales_dir / "part-bad.csv").write_bytes(b"id,name\n\xff\xfe broken\n")
        run_request(ingestion=sales, actor=alice, trigger="schedule")
        drain_queue()
        (sales_dir / "part-bad.csv").unlink(missing_ok=True)
    write_csv_files(sales_dir, files=6, rows=2000, start=24)  # new since the last run

    events_dir = folder("events")
    events = IngestionFactory(
        tenant=acme,
        public_id="web-events",
        name="Web events",
        source_uri=str(events_dir),
        destination_table="raw.web_events",
    )
    for day in range(3):
        write_csv_files(events_dir, files=2, rows=800, start=day * 2)
        run_request(ingestion=events, actor=alice)
        drain_queue()
    orders_dir = folder("orders")
    write_csv_files(orders_dir, files=4, rows=1000)
    orders = IngestionFactory(
        tenant=acme,
        public_id="orders",
        name="Orders",
        source_uri=str(orders_dir),
        destination_table="finance.orders",
        protected=True,
    )
    run_request(ingestion=orders, actor=alice)
    drain_queue()
    inventory = IngestionFactory(
        tenant=acme,
        public_id="inventory",
        name="Inventory snapshots",
        source_uri=str(landing / "acme" / "inventory"),
        destination_table="raw.inventory",
    )
    run_request(ingestion=inventory, actor=alice)
    drain_queue()
    IngestionFactory(
        tenant=acme,
        public_id="clickstream",
        name="Clickstream archive",
        source_uri="s3://acme-archive/clickstream/",
        source_format="json",
        destination_table="archive.clickstream",
    )
    return alice


def shoot(target, name: str) -> None:
    target.screenshot(path=str(OUT / f"{name}.png"), animations="disabled")


def test_capture_the_main_screens(new_page, demo, worker):
    OUT.mkdir(parents=True, exist_ok=True)  # other tests write their own pictures there
    page = new_page(DESKTOP)
    log_in(page, demo)
    shoot(page, "ingestions")

    page.get_by_role("link", name="Daily sales").click()
    expect(page.get_by_role("img", name="Rows and duration of the last runs")).to_be_visible()
    page.screenshot(path=str(OUT / "ingestion.png"), full_page=True, animations="disabled")

    page.get_by_role("link", name="Full refresh", exact=True).click()
    preview = page.locator(".panel-preview")
    expect(preview).to_be_visible()
    shoot(preview, "preview")

    page.get_by_role("button", name="Continue…").click()
    page.get_by_role("dialog").get_by_label("Type the table name").fill("raw.sales_dat")
    shoot(page, "confirm-dialog")
    page.get_by_role("dialog").get_by_label("Type the table name").fill("raw.sales_data")
    page.get_by_role("button", name="Full refresh raw.sales_data").click()
    expect(page.get_by_role("heading", name="Full refresh completed successfully")).to_be_visible()
    expect(page.locator("#run-table .progress-block")).to_contain_text("files loaded")
    page.locator("#operation-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(OUT / "result.png"), full_page=True, animations="disabled")
    expect(page.locator("#run-table[data-polling]")).to_have_count(0, timeout=60_000)

    page.goto("/ingestions/web-events/")
    page.get_by_role("link", name="Full refresh", exact=True).click()
    with failing_sql_in_server('INSERT INTO "ingestions_run"'):
        page.get_by_role("button", name="Continue…").click()
        page.get_by_role("dialog").get_by_label("Type the table name").fill("raw.web_events")
        page.get_by_role("button", name="Full refresh raw.web_events").click()
        expect(page.get_by_role("heading", name="Some operations failed")).to_be_visible()
    shoot(page.locator(".panel-result"), "partial-failure")

    page.goto("/audit/")
    shoot(page, "audit")

    phone = new_page(PHONE)
    log_in(phone, demo)
    shoot(phone, "phone-ingestions")
    phone.goto("/ingestions/sales-daily/")
    shoot(phone, "phone-ingestion")
    phone.get_by_role("link", name="Drop table", exact=True).click()
    expect(phone.locator(".panel-preview")).to_be_visible()
    phone.locator(".panel-preview").scroll_into_view_if_needed()
    shoot(phone, "phone-preview")
    phone.get_by_role("button", name="Continue…").click()
    phone.get_by_role("dialog").get_by_label("Type the table name").fill("raw.sales_data")
    shoot(phone, "phone-confirm-dialog")
