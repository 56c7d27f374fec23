"""Failed files: counted per run in a row, quarantined (by hand or after N failures), left
out of runs and previews until released, retried on demand; every change audited."""

import pytest
from auditlog.models import LogEntry

from ingestions.models import FileFailure, ProcessedFile, Role, Run, RunStatus
from ingestions.quarantine import failures_record
from ingestions.runs import run_request

from ..helpers import drain_queue, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

BAD = b"id,name,amount\n1,\xff\xfe,\x00\x00\n2\n"
FAILED = "/api/v1/ingestions/sales/failed-files"


def run_once(ingestion) -> Run:
    run = run_request(ingestion=ingestion)
    drain_queue()
    run.refresh_from_db()
    return run


def audit_entries(action: str) -> list[LogEntry]:
    return list(LogEntry.objects.filter(additional_data__operation=action).order_by("id"))


@pytest.fixture
def one_bad_file(csv_ingestion, source_dir):
    write_csv_files(source_dir, files=2, rows=10)
    (source_dir / "broken.csv").write_bytes(BAD)
    return csv_ingestion


def test_a_file_failing_n_runs_in_a_row_is_quarantined_and_the_next_run_succeeds(
    one_bad_file, settings
):
    settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES = 3
    first = run_once(one_bad_file)
    assert first.status == RunStatus.PARTIAL_SUCCESS
    failure = FileFailure.objects.get(ingestion=one_bad_file)
    assert (failure.path, failure.attempts, failure.quarantined) == ("broken.csv", 1, False)
    assert "broken.csv" in failure.error or "UTF-8" in failure.error
    assert failure.last_run == first

    for attempts in (2, 3):
        run = run_once(one_bad_file)
        assert run.status == RunStatus.FAILED  # the only new file failed again
        failure.refresh_from_db()
        assert failure.attempts == attempts
    assert failure.quarantined and failure.quarantined_by is None
    (entry,) = audit_entries("file_quarantined")
    assert entry.actor is None
    assert entry.additional_data["automatic"] is True
    assert entry.additional_data["path"] == "broken.csv"
    assert entry.additional_data["tenant"] == "acme"

    after = run_once(one_bad_file)
    assert after.status == RunStatus.SUCCESS
    assert (after.files_found, after.files_failed) == (0, 0)
    failure.refresh_from_db()
    assert failure.attempts == 3  # not tried, so not counted


def test_zero_never_quarantines(one_bad_file, settings):
    settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES = 0
    for _ in range(3):
        run_once(one_bad_file)
    failure = FileFailure.objects.get(ingestion=one_bad_file)
    assert (failure.attempts, failure.quarantined) == (3, False)


def test_a_failed_file_that_loads_later_is_forgotten(one_bad_file, source_dir):
    run_once(one_bad_file)
    assert FileFailure.objects.filter(ingestion=one_bad_file).exists()
    (source_dir / "broken.csv").write_text("id,name,amount\n7,fixed,1.5\n")

    run = run_once(one_bad_file)

    assert run.status == RunStatus.SUCCESS
    assert not FileFailure.objects.filter(ingestion=one_bad_file).exists()
    assert ProcessedFile.objects.filter(ingestion=one_bad_file, path="broken.csv").exists()


def test_a_run_counts_a_file_once_even_when_resumed(one_bad_file):
    run = run_once(one_bad_file)
    failures = run.failed_files
    failures_record(run=run, failures=failures)  # the same run reports it again
    assert FileFailure.objects.get(ingestion=one_bad_file).attempts == 1


def test_quarantine_by_hand_leaves_the_file_out_of_runs_and_previews_until_released(
    one_bad_file, member
):
    run_once(one_bad_file)
    operator = member(Role.OPERATOR)
    (listed,) = operator.get(FAILED).json()["results"]
    assert listed["path"] == "broken.csv" and listed["attempts"] == 1
    assert listed["quarantined"] is False and listed["error"]

    response = operator.post(f"{FAILED}/{listed['id']}/quarantine")
    assert response.status_code == 200, response.content
    assert response.json()["quarantined"] is True
    assert response.json()["quarantined_by"] == operator.user.username
    (entry,) = audit_entries("file_quarantined")
    assert entry.actor == operator.user and entry.additional_data["automatic"] is False

    # Previews leave it out too: a fresh start's "new files" are only the real new ones.
    preview = operator.post(
        "/api/v1/ingestions/sales/fresh-start", {"dry_run": True}, format="json"
    ).json()
    assert preview["impact"]["files_to_process"] == 0
    assert any("1 quarantined files are left out" in note for note in preview["notes"])
    assert run_once(one_bad_file).status == RunStatus.SUCCESS

    assert operator.get(f"{FAILED}?quarantined=true").json()["count"] == 1
    assert operator.get(f"{FAILED}?quarantined=false").json()["count"] == 0
    response = operator.post(f"{FAILED}/{listed['id']}/release")
    assert response.status_code == 200 and response.json()["quarantined"] is False
    assert len(audit_entries("file_released")) == 1

    run = run_once(one_bad_file)
    assert run.status == RunStatus.FAILED and run.failed_files[0]["path"] == "broken.csv"
    assert FileFailure.objects.get(ingestion=one_bad_file).attempts == 1  # from zero again


def test_retry_releases_and_queues_a_run(one_bad_file, member, settings):
    settings.AUTOLOADER_QUARANTINE_AFTER_FAILURES = 1
    run_once(one_bad_file)
    failure = FileFailure.objects.get(ingestion=one_bad_file)
    assert failure.quarantined
    operator = member(Role.OPERATOR)

    response = operator.post(f"{FAILED}/{failure.pk}/retry")

    assert response.status_code == 202, response.content
    run = Run.objects.get(public_id=response.json()["run_id"])
    assert run.status == RunStatus.QUEUED
    assert audit_entries("file_released")
    drain_queue()
    run.refresh_from_db()
    assert run.files_failed == 1  # tried again (and quarantined again after 1 failure)


def test_actions_are_refused_to_viewers_other_tenants_and_in_the_wrong_state(
    one_bad_file, member, other_tenant
):
    run_once(one_bad_file)
    failure = FileFailure.objects.get(ingestion=one_bad_file)
    viewer = member(Role.VIEWER)
    assert viewer.get(FAILED).status_code == 200  # viewers may look
    for action in ("quarantine", "release", "retry"):
        response = viewer.post(f"{FAILED}/{failure.pk}/{action}")
        assert response.status_code == 403
        assert response.json()["error_code"] == "INSUFFICIENT_PERMISSIONS"
    outsider = member(Role.ADMIN, tenant_obj=other_tenant)
    assert outsider.get(FAILED).status_code == 404
    assert outsider.post(f"{FAILED}/{failure.pk}/quarantine").status_code == 404
    assert outsider.post(f"{FAILED}/{failure.pk}/retry").status_code == 404
    failure.refresh_from_db()  # the victim's file is untouched, and no run was queued for it
    assert (failure.quarantined, failure.attempts) == (False, 1)
    assert Run.objects.filter(ingestion=one_bad_file).count() == 1

    admin = member(Role.ADMIN)
    assert admin.post(f"{FAILED}/{failure.pk}/explode").status_code == 404
    assert admin.post(f"{FAILED}/999999/quarantine").json()["error_code"] == (
        "FAILED_FILE_NOT_FOUND"
    )
    assert admin.get(f"{FAILED}?quarantined=maybe").json()["error_code"] == "VALIDATION_ERROR"
    response = admin.post(f"{FAILED}/{failure.pk}/release")
    assert (response.status_code, response.json()["error_code"]) == (409, "FAILED_FILE_STATE")
    assert admin.post(f"{FAILED}/{failure.pk}/quarantine").status_code == 200
    response = admin.post(f"{FAILED}/{failure.pk}/quarantine")
    assert (response.status_code, response.json()["error_code"]) == (409, "FAILED_FILE_STATE")
    failure.refresh_from_db()
    assert failure.quarantined
