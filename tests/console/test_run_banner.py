"""Live pages agree: the "Run … queued" banner follows its run, and the answer that finds
it ended tells the run table and the table and history cards to reload."""

import pytest

from ingestions.models import Role, Run

from ..helpers import drain_queue, write_csv_files
from .conftest import HX, hx

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_banner_follows_its_run_and_the_end_refreshes_the_cards(
    csv_ingestion, source_dir, console
):
    write_csv_files(source_dir, files=2, rows=5)
    operator = console(Role.OPERATOR)

    queued = operator.post(f"/ingestions/{csv_ingestion.public_id}/run/", **HX)
    assert queued.status_code == 200
    banner = queued.content.decode()
    run = Run.objects.get()
    assert 'id="run-banner"' in banner and 'data-run-status="QUEUED"' in banner
    assert 'hx-trigger="every 2s"' in banner  # it polls while the run is active

    polled = operator.get(f"/runs/{run.public_id}/", **hx("run-banner"))
    assert 'data-run-status="QUEUED"' in polled.content.decode()
    assert "HX-Trigger-After-Settle" not in polled  # nothing changed yet

    drain_queue()
    ended = operator.get(f"/runs/{run.public_id}/", **hx("run-banner"))

    page = ended.content.decode()
    assert 'data-run-status="SUCCESS"' in page and "every 2s" not in page
    assert "2 of 2 files loaded, 10 rows" in page
    assert "ingestion-changed" in ended["HX-Trigger-After-Settle"]
    # What the cards reload on that event shows the run's result.
    table = operator.get(f"/ingestions/{csv_ingestion.public_id}/", **hx("table-card"))
    assert 'data-stat="table-rows">10<' in table.content.decode()
    history = operator.get(f"/ingestions/{csv_ingestion.public_id}/", **hx("history-card"))
    assert 'data-stat="history-count">2<' in history.content.decode()


def test_the_cards_listen_for_the_change(csv_ingestion, console):
    page = console(Role.VIEWER).get(f"/ingestions/{csv_ingestion.public_id}/").content.decode()
    for card in ('id="table-card"', 'id="history-card"', 'id="run-table"'):
        element = page.split(card, 1)[1].split(">", 1)[0]
        assert "ingestion-changed from:body" in element
