"""Verify in the browser (issue 24): the table card's button opens the job's page, which shows
the stage and a progress bar while the job waits and runs, then the report, with no reload."""

import signal

import pytest
from django.db import connection
from playwright.sync_api import expect

from ingestions.models import Role

from .conftest import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_verify_shows_a_progress_bar_then_the_report(
    page, csv_ingestion, source_dir, user_of, tmp_path
):
    from ingestions.runs import run_request

    from ..helpers import drain_queue, start_worker, write_csv_files

    write_csv_files(source_dir, files=3, rows=4)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    write_csv_files(source_dir, files=1, rows=2, start=5)  # in the source, never loaded
    log_in(page, user_of(Role.VIEWER))
    page.goto(f"/ingestions/{csv_ingestion.public_id}/")

    page.get_by_role("button", name="Verify against the source").click()

    # No worker yet: the job waits, and its page says so with a live bar.
    job = page.locator("#verify-job")
    expect(job).to_have_attribute("data-verify-status", "QUEUED")
    expect(page.locator("#verify-progress")).to_be_visible()
    expect(page.locator("[data-verify-stage]")).to_have_text("Waiting for the worker")
    expect(job).to_have_attribute("hx-trigger", "every 1s")
    job_url = page.url

    worker = start_worker(tmp_path / "worker.log")
    try:
        # No reload from here on: the bar follows the job, then the report replaces it.
        expect(job).to_have_attribute("data-verify-status", "SUCCESS", timeout=60_000)
        assert page.url == job_url
        expect(page.locator("#verify-progress")).to_have_count(0)
        expect(page.get_by_role("heading", level=2).first).to_have_text(
            "The table holds exactly what the history says"
        )
        expect(page.locator("[data-stat=table-rows]")).to_have_text("12")
        never_loaded = page.locator("[data-category=never_loaded]")
        expect(never_loaded.locator(".badge")).to_have_text("1")
        expect(never_loaded).to_contain_text("part-0005.csv")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        connection.close()
