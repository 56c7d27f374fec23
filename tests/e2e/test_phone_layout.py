"""The phone at 390 px (issue 25): no page is wider than the screen once it has content
(runs, a chart, failed and changed files, an operation, the audit). A wide table scrolls
inside its card; the page itself never scrolls sideways."""

import pytest

from ingestions.maintenance import maintenance_run
from ingestions.models import Role
from ingestions.runs import run_request
from refresh.models import RefreshOperation
from refresh.services import refresh_execute

from ..factories import IngestionFactory
from ..helpers import drain_queue, write_csv_files
from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PHONE = {"width": 390, "height": 844}
# The elements that stick out: those past the right edge none of whose children does.
OFFENDERS = """() => {
  const past = [...document.querySelectorAll('body *')].filter(
    (el) => el.getBoundingClientRect().right > window.innerWidth + 0.5
      || el.scrollWidth > document.documentElement.clientWidth + 0.5);
  return past.filter((el) => !past.some((other) => other !== el && el.contains(other)))
    .slice(0, 5).map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`
      + ` ${Math.round(el.getBoundingClientRect().right)}px`);
}"""


@pytest.fixture
def lived_in(tenant, source_dir, user_of):
    """An ingestion with a history: eight runs (one with a failed file), a corrected file,
    a zero-downtime full refresh, a maintenance pass."""
    admin = user_of(Role.ADMIN)
    ingestion = IngestionFactory(
        tenant=tenant,
        public_id="sales-with-a-rather-long-identifier",
        name="Daily sales from the point-of-sale exports of every store",
        source_uri=str(source_dir),
        destination_table="raw.sales_data_with_a_long_table_name",
    )
    for day in range(8):
        write_csv_files(source_dir / f"2026-12-0{day + 1}", files=2, rows=50 + day, start=day * 2)
        if day == 5:
            (
                source_dir / "2026-12-06" / "export-with-a-very-long-file-name-broken.csv"
            ).write_bytes(b"id,name\n\xff\xfe broken\n")
        run_request(ingestion=ingestion, actor=admin)
        drain_queue()
    refresh_execute(ingestion=ingestion, kind="full_refresh", actor=admin, confirm=True)
    drain_queue()
    assert maintenance_run(ingestion=ingestion)  # its table of actions is on the page
    return ingestion, admin


def test_no_page_is_wider_than_a_phone(new_page, lived_in):
    ingestion, admin = lived_in
    base = f"/ingestions/{ingestion.public_id}"
    run = ingestion.runs.order_by("created_at").last()
    operation = RefreshOperation.objects.get(ingestion=ingestion)
    pages = [
        "/ingestions/",
        "/ingestions/new/",
        f"{base}/",
        f"{base}/table/",
        f"{base}/history/",
        f"{base}/edit/",
        f"{base}/schedules/",
        f"{base}/full-refresh/",
        f"{base}/selective-refresh/",
        f"{base}/selective-refresh/?kind=prefix&prefix=2026-12-0&preview=1",
        f"/runs/{run.public_id}/",
        f"/runs/{ingestion.runs.order_by('created_at')[5].public_id}/",
        f"/operations/{operation.public_id}/",
        "/audit/",
        "/tokens/",
        "/webhooks/",
    ]
    page = new_page(viewport=PHONE)
    log_in(page, admin)
    too_wide = {}
    for url in pages:
        response = page.goto(url)
        assert response.ok, f"{url}: {response.status}"
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[url] = (width, page.evaluate(OFFENDERS))
    assert not too_wide, f"wider than {PHONE['width']} px: {too_wide}"
