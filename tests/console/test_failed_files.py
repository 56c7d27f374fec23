"""The history page's failed files: errors, attempts, and quarantine / release / retry in place."""

import pytest
from auditlog.models import LogEntry
from django.test import Client

from ingestions.models import FileFailure, Role, Run
from ingestions.runs import run_request

from ..helpers import drain_queue, write_csv_files
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)

HISTORY = "/ingestions/sales/history/"


@pytest.fixture
def failed(csv_ingestion, source_dir) -> FileFailure:
    write_csv_files(source_dir, files=1, rows=5)
    (source_dir / "broken.csv").write_bytes(b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n")
    run_request(ingestion=csv_ingestion)
    drain_queue()
    return FileFailure.objects.get(ingestion=csv_ingestion)


def action_url(failure: FileFailure, action: str) -> str:
    return f"/ingestions/sales/failed-files/{failure.pk}/{action}/"


def test_history_page_lists_the_failed_file_with_its_error_and_actions(console, failed):
    page = console(Role.OPERATOR).get(HISTORY).content.decode()
    assert 'data-path="broken.csv"' in page
    assert failed.error.split(":")[0] in page
    assert 'data-action="quarantine"' in page and 'data-action="retry"' in page


def test_quarantine_then_release_in_place(console, failed):
    client = console(Role.OPERATOR)
    response = client.post(action_url(failed, "quarantine"), **hx("failed-files"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Quarantined" in body and f"by {client.user.username}" in body
    assert 'data-action="release"' in body
    assert response.headers["HX-Trigger-After-Settle"]  # the page's other parts refresh
    failed.refresh_from_db()
    assert failed.quarantined

    response = client.post(action_url(failed, "release"), **hx("failed-files"))
    assert "is released" in response.content.decode()
    assert not FileFailure.objects.filter(pk=failed.pk).exists()
    actions = set(
        LogEntry.objects.filter(additional_data__tenant="acme").values_list(
            "additional_data__operation", flat=True
        )
    )
    assert {"file_quarantined", "file_released"} <= actions


def test_retry_queues_a_run_and_says_so(console, failed):
    response = console(Role.OPERATOR).post(action_url(failed, "retry"), **hx("failed-files"))
    run = Run.objects.filter(status="QUEUED").get()
    assert f"retried in run {run.public_id}" in response.content.decode()


def test_without_htmx_the_action_redirects_with_a_message(console, failed):
    response = console(Role.OPERATOR).post(action_url(failed, "quarantine"), follow=True)
    assert response.redirect_chain[-1][0] == HISTORY
    assert "is quarantined" in response.content.decode()


def test_viewer_sees_no_action_and_is_refused_in_place(console, failed):
    viewer = console(Role.VIEWER)
    assert 'data-action="quarantine"' not in viewer.get(HISTORY).content.decode()
    response = viewer.post(action_url(failed, "quarantine"), **hx("failed-files"))
    assert response.status_code == 403
    assert response.headers["X-Console-Fragment"] == "error"
    assert "does not allow quarantining" in response.content.decode()
    failed.refresh_from_db()
    assert not failed.quarantined


def test_another_tenant_and_unknown_actions_are_not_found(console, failed, other_tenant):
    outsider = console(Role.ADMIN, tenant_obj=other_tenant)
    assert outsider.post(action_url(failed, "quarantine")).status_code == 404
    admin = console(Role.ADMIN)
    assert admin.post(action_url(failed, "delete")).status_code == 404
    assert admin.get(action_url(failed, "quarantine")).status_code == 405


def test_actions_need_the_csrf_token(failed, console):
    user = console(Role.ADMIN).user
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(action_url(failed, "quarantine")).status_code == 403
    failed.refresh_from_db()
    assert not failed.quarantined


def test_the_ingestion_page_points_to_the_failed_files(console, failed):
    page = console(Role.VIEWER).get("/ingestions/sales/").content.decode()
    assert "1 failing and 0 quarantined files" in page
