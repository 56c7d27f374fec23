"""Verification as a job of the worker (issue 24): `POST .../verify {"async": true}` answers
202 with a job, the worker lists, reads the history and scans the table writing its progress,
and the job's report is the synchronous verify's; one job at a time per ingestion; a failure
is recorded with how to retry; a job whose worker died is taken up again."""

import shutil
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ingestions import verify_jobs
from ingestions.engines import load_engine
from ingestions.errors import EngineError
from ingestions.models import Role, VerifyJob, VerifyStatus
from ingestions.runs import run_request
from ingestions.verify_jobs import verify_job_execute, verify_jobs_recover_stale

from ..factories import IngestionFactory
from ..helpers import FaultingEngine, drain_queue, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)

DATA_FILES = 4


@pytest.fixture
def loaded(settings, csv_ingestion, source_dir):
    """`sales`: four files loaded one per commit (four data files), then the source moves on:
    one file gone, one never loaded."""
    settings.AUTOLOADER_BATCH_MAX_FILES = 1
    write_csv_files(source_dir, files=DATA_FILES, rows=5)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    (source_dir / "part-0003.csv").unlink()
    write_csv_files(source_dir, files=1, rows=2, start=7)
    return csv_ingestion


def url(ingestion, tail: str = "verify") -> str:
    return f"/api/v1/ingestions/{ingestion.public_id}/{tail}"


def without_time(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "checked_at"}


def test_the_synchronous_verify_is_unchanged_and_queues_nothing(loaded, admin_client):
    response = admin_client.post(url(loaded))

    assert response.status_code == 200
    assert response.json()["counts"]["gone"] == 1
    assert not VerifyJob.objects.exists()


def test_an_async_verify_runs_in_the_worker_and_reports_what_the_sync_verify_reports(
    loaded, admin_client
):
    started = admin_client.post(url(loaded), {"async": True}, format="json")

    assert started.status_code == 202, started.json()
    job = started.json()
    assert job["status"] == "QUEUED" and job["stage"] == "queued" and job["report"] is None
    assert job["already_running"] is False
    location = started.headers["Location"]
    assert location.endswith(url(loaded, f"verifies/{job['job_id']}"))
    assert admin_client.get(location).json()["status"] == "QUEUED"

    drain_queue()  # the real django-tasks worker runs the job

    done = admin_client.get(location).json()
    assert done["status"] == "SUCCESS" and done["stage"] == "done", done
    assert done["fraction"] == 1.0 and done["error"] is None
    sync = admin_client.post(url(loaded)).json()
    assert without_time(done["report"]) == without_time(sync)
    assert done["report"]["counts"]["gone"] == 1 and done["report"]["counts"]["never_loaded"] == 1


def test_prefer_respond_async_starts_a_job_too(loaded, admin_client):
    started = admin_client.post(url(loaded), HTTP_PREFER="respond-async")

    assert started.status_code == 202
    assert started.headers["Preference-Applied"] == "respond-async"
    assert VerifyJob.objects.get().public_id == started.json()["job_id"]


def test_a_start_with_a_malformed_body_is_a_400(loaded, admin_client):
    response = admin_client.post(url(loaded), {"async": "perhaps"}, format="json")

    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"
    assert not VerifyJob.objects.exists()


class ProgressWatchingEngine:
    """The real engine; each time its scan reports progress, the job's row as any other
    process would read it is recorded (what a progress bar would show then)."""

    def __init__(self, job_id: str):
        self._engine = load_engine()
        self.job_id = job_id
        self.seen: list[tuple] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def source_file_rows(self, table_name, *, progress=None):
        def watched(done, total):
            progress(done, total)
            job = VerifyJob.objects.get(public_id=self.job_id)
            self.seen.append((job.stage, job.done, job.total))

        return self._engine.source_file_rows(table_name, progress=watched)


def test_the_progress_is_written_per_data_file_as_the_scan_reads_them(
    loaded, admin_client, monkeypatch
):
    monkeypatch.setattr(verify_jobs, "PROGRESS_INTERVAL_SECONDS", 0)  # every unit written
    job_id = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    engine = ProgressWatchingEngine(job_id)

    job = verify_job_execute(job_id=job_id, engine=engine)

    assert job.status == VerifyStatus.SUCCESS
    assert engine.seen == [("scanning", done, DATA_FILES) for done in range(DATA_FILES + 1)]


def test_a_job_of_another_tenant_or_another_ingestion_is_not_found(
    loaded, admin_client, member, other_tenant, tenant
):
    job_id = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    other_ingestion = IngestionFactory(tenant=tenant, public_id="other")
    outsider = member(Role.ADMIN, other_tenant)
    IngestionFactory(tenant=other_tenant, public_id=loaded.public_id, destination_table="x.y")

    assert outsider.get(url(loaded, f"verifies/{job_id}")).status_code == 404
    assert admin_client.get(url(other_ingestion, f"verifies/{job_id}")).status_code == 404
    missing = admin_client.get(url(loaded, "verifies/vfy-000000000000"))
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "VERIFY_JOB_NOT_FOUND"


def test_a_viewer_may_verify_in_the_worker_and_an_anonymous_caller_may_not(loaded, member):
    from rest_framework.test import APIClient

    viewer = member(Role.VIEWER)
    started = viewer.post(url(loaded), {"async": True}, format="json")
    assert started.status_code == 202
    assert viewer.get(started.headers["Location"]).status_code == 200
    anonymous = APIClient()
    assert anonymous.post(url(loaded), {"async": True}, format="json").status_code == 401
    assert anonymous.get(started.headers["Location"]).status_code == 401


def test_reading_a_job_writes_nothing(loaded, admin_client):
    location = admin_client.post(url(loaded), {"async": True}, format="json").headers["Location"]
    drain_queue()
    before = list(VerifyJob.objects.values())

    with CaptureQueriesContext(connection) as queries:
        assert admin_client.get(location).status_code == 200

    writes = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
        and "verifyjob" in query["sql"].lower()
    ]
    assert writes == []
    assert list(VerifyJob.objects.values()) == before


def test_ten_concurrent_starts_make_one_job_and_all_get_it(loaded, member):
    clients = [member(Role.OPERATOR) for _ in range(10)]
    barrier = threading.Barrier(len(clients))
    answers: list[tuple[int, dict]] = []

    def start(client):
        barrier.wait()
        try:
            response = client.post(url(loaded), {"async": True}, format="json")
            answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert VerifyJob.objects.count() == 1
    job = VerifyJob.objects.get()
    assert sorted(status for status, _ in answers) == [202] * 10, answers
    assert {body["job_id"] for _, body in answers} == {job.public_id}
    assert [body["already_running"] for _, body in answers].count(False) == 1


def test_a_start_while_a_job_runs_joins_it_and_after_it_ends_makes_a_new_one(loaded, admin_client):
    first = admin_client.post(url(loaded), {"async": True}, format="json").json()
    joined = admin_client.post(url(loaded), {"async": True}, format="json").json()
    assert joined["job_id"] == first["job_id"] and joined["already_running"] is True

    drain_queue()
    again = admin_client.post(url(loaded), {"async": True}, format="json").json()

    assert again["job_id"] != first["job_id"] and again["already_running"] is False


def test_an_engine_failure_is_recorded_with_how_to_retry_and_a_retry_succeeds(loaded, admin_client):
    started = admin_client.post(url(loaded), {"async": True}, format="json")
    failing = FaultingEngine({"source_file_rows": EngineError("the cluster went away")})

    job = verify_job_execute(job_id=started.json()["job_id"], engine=failing)

    assert job.status == VerifyStatus.FAILED and job.error_code == "ENGINE_ERROR"
    shown = admin_client.get(started.headers["Location"]).json()
    assert shown["status"] == "FAILED" and shown["report"] is None
    assert shown["error"]["detail"] == "the cluster went away"
    assert shown["error"]["error_code"] == "ENGINE_ERROR"
    assert '{"async": true}' in shown["error"]["help"]

    retry = admin_client.post(url(loaded), {"async": True}, format="json").json()
    assert retry["already_running"] is False
    drain_queue()
    assert VerifyJob.objects.get(public_id=retry["job_id"]).status == VerifyStatus.SUCCESS
    assert VerifyJob.objects.get(public_id=job.public_id).status == VerifyStatus.FAILED


def test_a_source_that_cannot_be_listed_fails_the_job_with_its_code(
    loaded, admin_client, source_dir
):
    location = admin_client.post(url(loaded), {"async": True}, format="json").headers["Location"]
    shutil.rmtree(source_dir)

    drain_queue()

    shown = admin_client.get(location).json()
    assert shown["status"] == "FAILED"
    assert shown["error"]["error_code"] == "SOURCE_UNAVAILABLE"


def test_a_job_whose_worker_died_is_queued_again_then_given_up_after_its_attempts(
    loaded, admin_client, settings
):
    job_id = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    long_ago = timezone.now() - timedelta(seconds=settings.AUTOLOADER_RUN_STALE_SECONDS + 5)
    # A worker claimed it, then died: running, with a heartbeat that stopped long ago.
    VerifyJob.objects.filter(public_id=job_id).update(
        status=VerifyStatus.RUNNING, worker_id="dead", heartbeat_at=long_ago, attempts=1
    )

    assert verify_jobs_recover_stale() == [job_id]
    assert VerifyJob.objects.get(public_id=job_id).status == VerifyStatus.QUEUED
    drain_queue()
    assert VerifyJob.objects.get(public_id=job_id).status == VerifyStatus.SUCCESS

    VerifyJob.objects.filter(public_id=job_id).update(
        status=VerifyStatus.RUNNING,
        worker_id="dead",
        heartbeat_at=long_ago,
        attempts=verify_jobs.VERIFY_ATTEMPTS,
    )
    verify_jobs_recover_stale()
    gave_up = VerifyJob.objects.get(public_id=job_id)
    assert gave_up.status == VerifyStatus.FAILED and gave_up.error_code == "WORKER_LOST"


def test_the_jobs_of_an_ingestion_are_listed_newest_first_without_their_reports(
    loaded, admin_client, member, other_tenant
):
    failing = FaultingEngine({"source_file_rows": EngineError("the cluster went away")})
    first = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    verify_job_execute(job_id=first, engine=failing)
    second = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    drain_queue()

    listed = admin_client.get(url(loaded, "verifies")).json()

    assert listed["count"] == 2
    assert [job["job_id"] for job in listed["results"]] == [second, first]
    assert [job["consistent"] for job in listed["results"]] == [True, None]
    assert all("report" not in job for job in listed["results"])
    assert member(Role.ADMIN, other_tenant).get(url(loaded, "verifies")).status_code == 404


def test_the_admin_shows_jobs_read_only(loaded, admin_client):
    from django.contrib.auth import get_user_model
    from django.test import Client

    job_id = admin_client.post(url(loaded), {"async": True}, format="json").json()["job_id"]
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "x"))
    pk = VerifyJob.objects.get(public_id=job_id).pk

    assert job_id in staff.get("/admin/ingestions/verifyjob/").content.decode()
    assert staff.get("/admin/ingestions/verifyjob/add/").status_code == 403
    staff.post(f"/admin/ingestions/verifyjob/{pk}/change/", {"status": "SUCCESS"})
    staff.post(f"/admin/ingestions/verifyjob/{pk}/delete/", {"post": "yes"})
    assert VerifyJob.objects.get(pk=pk).status == VerifyStatus.QUEUED


def test_the_history_is_read_in_chunks_each_reported_then_the_scan(loaded, monkeypatch):
    from ingestions import verify

    monkeypatch.setattr(verify, "HISTORY_CHUNK", 3)
    heard: list[tuple] = []

    verify.verification_compute(
        ingestion=loaded,
        engine=load_engine(),
        listing=verify.source_listing(ingestion=loaded),
        report=lambda stage, done, total: heard.append((stage, done, total)),
    )

    assert heard == [
        ("history", 0, 4),
        ("history", 3, 4),
        ("history", 4, 4),
        ("history", 4, 4),
        *[("scanning", done, DATA_FILES) for done in range(DATA_FILES + 1)],
    ]
