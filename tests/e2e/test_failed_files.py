"""A bad file, as a user meets it: the run fails it, the history page shows its error, the
user quarantines it and the next run is a SUCCESS, then releases it; the console's audit and
the Django admin (as the staff auditor) show each step."""

import os
import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from ingestions import quarantine
from ingestions.models import FileFailure, Role, Run, RunStatus
from ingestions.runs import run_request

from ..factories import UserFactory
from ..helpers import drain_queue, write_csv_files
from .conftest import DESKTOP, PASSWORD, log_in

pytestmark = pytest.mark.django_db(transaction=True)

BROKEN = b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}


def test_quarantine_a_bad_file_then_the_next_run_succeeds_and_it_is_all_audited(
    page, new_page, csv_ingestion, source_dir, user_of
):
    write_csv_files(source_dir, files=2, rows=10)
    (source_dir / "broken.csv").write_bytes(BROKEN)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    operator = user_of(Role.OPERATOR)

    log_in(page, operator)
    page.goto("/ingestions/sales/")
    page.get_by_role("link", name="1 failing and 0 quarantined files").click()
    card = page.locator("#failed-files")
    row = card.locator('tr[data-path="broken.csv"]')
    expect(row).to_contain_text("broken.csv")
    expect(row).to_contain_text("Failing")
    expect(row.locator('[data-label="Failed runs"]')).to_have_text("1")

    row.get_by_role("button", name="Quarantine").click()
    expect(card.get_by_role("status")).to_contain_text("broken.csv is quarantined")
    expect(row).to_contain_text(f"Quarantined by {operator.username}")

    # The next run leaves it out: SUCCESS, nothing failed.
    page.goto("/ingestions/sales/")
    page.get_by_role("button", name="Run now").click()
    expect(page.locator("#run-table tbody tr")).to_have_count(2)
    drain_queue()
    run = Run.objects.latest("created_at")
    assert (run.status, run.files_failed) == (RunStatus.SUCCESS, 0)
    expect(page.locator(f"#run-{run.public_id}")).to_contain_text("Success", timeout=15_000)

    page.goto("/ingestions/sales/history/")
    row.get_by_role("button", name="Release").click()
    expect(card.get_by_role("status")).to_contain_text("broken.csv is released")
    expect(card).to_contain_text("No failed file")
    assert not FileFailure.objects.exists()

    page.goto("/audit/")
    for text in ["File quarantined", "File released from quarantine", "Run requested"]:
        expect(page.locator("main")).to_contain_text(text)

    # The platform's auditor reviews the same entries in the Django admin.
    auditor = UserFactory(username="auditor-e2e", is_staff=True)
    auditor.user_permissions.add(
        Permission.objects.get(codename="view_logentry", content_type__app_label="auditlog")
    )
    admin_page = new_page()
    admin_page.goto("/admin/login/")
    admin_page.get_by_label("Username").fill(auditor.username)
    admin_page.get_by_label("Password").fill(PASSWORD)
    admin_page.get_by_role("button", name="Log in").click()
    admin_page.goto("/admin/auditlog/logentry/?q=broken.csv")
    results = admin_page.locator("#result_list")
    expect(results).to_contain_text("broken.csv")
    expect(admin_page.locator("#result_list tbody tr")).to_have_count(2)
    expect(admin_page.get_by_role("link", name=re.compile("Add log entry"))).to_have_count(0)


@pytest.mark.skipif(
    not os.environ.get("AUTOLOADER_SCREENSHOTS"),
    reason="writes docs/screenshots; set AUTOLOADER_SCREENSHOTS=1 to refresh them",
)
def test_screenshots_of_the_history_and_table_pages(new_page, csv_ingestion, source_dir, user_of):
    for month in ("2026-01", "2026-02"):
        write_csv_files(source_dir / month, files=3, rows=40)
    (source_dir / "2026-02" / "export-broken.csv").write_bytes(BROKEN)
    (source_dir / "2026-02" / "export-latin1.csv").write_bytes(
        "id,name,amount\n1,Müller,2.5\n".encode("latin-1")
    )
    run_request(ingestion=csv_ingestion)
    drain_queue()
    failure = FileFailure.objects.get(path="2026-02/export-broken.csv")
    quarantine.failure_quarantine(failure=failure, actor=user_of(Role.ADMIN))
    user = user_of(Role.OPERATOR)
    for viewport, suffix in ((DESKTOP, ""), (PHONE, "-phone")):
        page = new_page(viewport=viewport)
        log_in(page, user)
        for name, url, shows in (
            ("history", "/ingestions/sales/history/", "2026-02/export-latin1.csv"),
            ("table", "/ingestions/sales/table/", "_source_file"),
        ):
            page.goto(url)
            expect(page.locator("main")).to_contain_text(shows)
            page.screenshot(
                path=str(SCREENSHOTS / f"{name}{suffix}.png"), full_page=True, animations="disabled"
            )
