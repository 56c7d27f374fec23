"""The console's Verify (issue 24): the button starts a job in the worker; its page shows the
stage and a progress bar that polls itself (the `verify-job` fragment) and, once the job
ended, the report or the error with a way to verify again."""

import pytest

from ingestions.errors import EngineError
from ingestions.models import Role, VerifyJob, VerifyStage, VerifyStatus
from ingestions.verify_jobs import verify_job_execute

from ..helpers import FaultingEngine, drain_queue
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)


def start(client, ingestion) -> str:
    response = client.post(f"/ingestions/{ingestion.public_id}/verify/")
    assert response.status_code == 302, response.content
    return response["Location"]


def test_a_running_job_shows_its_stage_and_a_bar_that_polls_every_second(admin_console, loaded):
    page_url = start(admin_console, loaded)
    VerifyJob.objects.update(
        status=VerifyStatus.RUNNING, stage=VerifyStage.SCANNING, done=3, total=8
    )

    fragment = admin_console.get(page_url, **hx("verify-job"))

    html = fragment.content.decode()
    assert html.lstrip().startswith('<div id="verify-job"') and "<html" not in html
    assert 'hx-trigger="every 1s"' in html
    assert "Scanning the table: 3 of 8 data files" in html
    assert 'max="8" value="3"' in html
    assert 'aria-current="step"' in html


def test_a_second_click_joins_the_job_under_way(admin_console, console, loaded):
    first = start(admin_console, loaded)

    assert start(console(Role.VIEWER), loaded) == first
    assert VerifyJob.objects.count() == 1


def test_the_finished_job_stops_polling_and_shows_the_report(admin_console, loaded):
    page_url = start(admin_console, loaded)
    drain_queue()

    fragment = admin_console.get(page_url, **hx("verify-job")).content.decode()

    assert "hx-trigger" not in fragment
    assert 'data-verdict="consistent"' in fragment
    assert 'data-category="never_loaded"' in fragment
    assert "Verify again" in fragment


def test_a_failed_job_shows_its_error_and_a_verify_again_button(admin_console, loaded):
    page_url = start(admin_console, loaded)
    failing = FaultingEngine({"source_file_rows": EngineError("the cluster went away")})
    verify_job_execute(job_id=VerifyJob.objects.get().public_id, engine=failing)

    page = admin_console.get(page_url).content.decode()

    assert 'data-verify-error="ENGINE_ERROR"' in page and "the cluster went away" in page
    assert "Verify again" in page
    assert start(admin_console, loaded) != page_url  # a new job


def test_another_tenants_job_page_is_a_404(admin_console, console, loaded, other_tenant):
    page_url = start(admin_console, loaded)

    assert console(Role.ADMIN, tenant_obj=other_tenant).get(page_url).status_code == 404
    assert admin_console.get(f"/ingestions/{loaded.public_id}/verifies/vfy-0/").status_code == 404


def test_a_job_no_worker_took_says_to_check_the_worker(admin_console, loaded):
    from datetime import timedelta

    from django.utils import timezone

    page_url = start(admin_console, loaded)
    VerifyJob.objects.update(created_at=timezone.now() + timedelta(minutes=1))  # just queued
    assert "data-no-worker" not in admin_console.get(page_url).content.decode()

    VerifyJob.objects.update(created_at=timezone.now() - timedelta(minutes=1))

    fragment = admin_console.get(page_url, **hx("verify-job")).content.decode()
    assert "data-no-worker" in fragment and "autoloader_worker" in fragment
