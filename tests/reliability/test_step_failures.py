"""Step failures: every step of every refresh operation made to fail in turn, every way.

Faults: the engine refuses (`EngineError`), the engine is unreachable
(`EngineUnavailableError`), the state database fails the step's own statement
(`failing_sql`), the state database is lost just as the step's outcome is recorded (the
request dies with a 500 and the operation stays in progress until it goes stale), and the
worker executing the triggered run dies mid-batch.

For each: the response (through the API), the durable record (GET of the operation), the
recovery text, the state of the table, history and runs against that record, the resume,
and after the worker has run, every row in the table exactly once (or, for drop table and
clear history alone, exactly the state they promise).
"""

import contextlib
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import EngineError, EngineUnavailableError
from ingestions.models import ACTIVE_RUN_STATUSES, ProcessedFile, Run, RunStatus
from ingestions.run_executor import run_execute
from ingestions.runs import runs_recover_stale
from refresh import services
from refresh.models import RefreshOperation

from ..helpers import (
    FaultingEngine,
    FaultyEngine,
    WorkerKilled,
    drain_queue,
    failing_sql,
    open_table,
    write_csv_files,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

DROP, CLEAR, RUN = "table_dropped", "processed_files_cleared", "run_triggered"
STEPS = {
    "full_refresh": [DROP, CLEAR, RUN],
    "fresh_start": [DROP, RUN],
    "drop_table": [DROP],
    "clear_processed_files": [CLEAR],
}
ENDPOINTS = {
    "full_refresh": ("post", "full-refresh"),
    "fresh_start": ("post", "fresh-start"),
    "drop_table": ("delete", "table"),
    "clear_processed_files": ("delete", "processed-files"),
}
# What each step's engine call is, and which statement is each step's own.
# A drop that keeps the table for undo sets it aside (`retire`) instead of dropping it.
ENGINE_METHODS = {DROP: ("drop_table", "retire"), RUN: ("ping",)}
OWN_STATEMENT = {
    CLEAR: 'SET "history_generation"',  # clearing archives: one UPDATE of the ingestion
    RUN: 'INSERT INTO "ingestions_run"',
}
# The recovery text's words for each step, done and not done (the PRD's "state" line).
PHRASES = {
    DROP: ("Table dropped", "table not dropped"),
    CLEAR: ("file history cleared", "file history kept"),
    RUN: ("run triggered", "no run triggered"),
}

ENGINE_ERROR = "engine_error"
ENGINE_UNAVAILABLE = "engine_unavailable"
DB_ERROR = "db_error"
DB_LOST = "db_lost_while_recording"
WORKER_GONE = "worker_gone"
FAULTS = {
    DROP: [ENGINE_ERROR, ENGINE_UNAVAILABLE, DB_LOST],
    CLEAR: [DB_ERROR, DB_LOST],
    RUN: [ENGINE_ERROR, ENGINE_UNAVAILABLE, DB_ERROR, DB_LOST, WORKER_GONE],
}
# The error code a failed step records (the PRD keeps SPARK_ERROR for any failed drop).
STEP_ERROR_CODE = {
    (DROP, ENGINE_ERROR): "SPARK_ERROR",
    (DROP, ENGINE_UNAVAILABLE): "CLUSTER_UNAVAILABLE",
    (CLEAR, DB_ERROR): "INTERNAL_ERROR",
    (RUN, ENGINE_ERROR): "ENGINE_ERROR",
    (RUN, ENGINE_UNAVAILABLE): "CLUSTER_UNAVAILABLE",
    (RUN, DB_ERROR): "INTERNAL_ERROR",
}


@dataclass(frozen=True)
class Case:
    kind: str
    step: str
    fault: str

    @property
    def position(self) -> int:
        return STEPS[self.kind].index(self.step)

    @property
    def triggers_a_run(self) -> bool:
        return RUN in STEPS[self.kind]


CASES = [
    pytest.param(Case(kind, step, fault), id=f"{kind}-{step}-{fault}")
    for kind, steps in STEPS.items()
    for step in steps
    for fault in FAULTS[step]
]


@contextlib.contextmanager
def state_database_lost_on_recording(position: int):
    """The state database fails exactly when the outcome of step `position` is written."""
    recorded = 0

    def wrapper(execute, sql, params, many, context):
        nonlocal recorded
        # A step's final save writes every column; its start writes started_at alone.
        if sql.startswith('UPDATE "refresh_refreshstep" SET "operation_id"'):
            if recorded == position:
                raise OperationalError("injected: the state database went away")
            recorded += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


@contextlib.contextmanager
def fault_injected(case: Case, monkeypatch):
    if case.fault in (ENGINE_ERROR, ENGINE_UNAVAILABLE):
        error = (EngineError if case.fault == ENGINE_ERROR else EngineUnavailableError)(
            f"injected {case.fault} in {ENGINE_METHODS[case.step][0]}"
        )
        faulting = FaultingEngine(dict.fromkeys(ENGINE_METHODS[case.step], error))
        with monkeypatch.context() as patch:
            patch.setattr(services, "load_engine", lambda name="iceberg": faulting)
            yield
    elif case.fault == DB_ERROR:
        with failing_sql(OWN_STATEMENT[case.step]):
            yield
    elif case.fault == DB_LOST:
        with state_database_lost_on_recording(case.position):
            yield
    else:
        yield  # the worker dies later, once the run executes


@pytest.fixture
def scene(settings, loaded, source_dir):
    """The loaded ingestion (4 files in table and history) plus 2 files not loaded yet."""
    settings.REFRESH_RATE_LIMITS = {}
    settings.REFRESH_RATE_CEILINGS = {}
    settings.REFRESH_STALE_SECONDS = 60
    # Every step made to fail in turn: the drop-first steps, which each change something.
    # (Zero-downtime steps change nothing before the run: tests/refresh/test_zero_downtime.py
    # and the crash-injection suite cover those.)
    settings.REFRESH_DEFAULT_MODE = "drop_first"
    write_csv_files(source_dir, files=2, rows=25, start=4)
    return loaded


def table_ids(table_name: str) -> list[int] | None:
    if not load_engine().table_exists(table_name):
        return None
    return open_table(table_name).scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()


def ids_of_files(files) -> list[int]:
    return sorted(index * 100000 + row for index in files for row in range(25))


def world(ingestion) -> dict:
    """What is really there: the table, the history, the active run."""
    return {
        "table_exists": load_engine().table_exists(ingestion.table_identifier),
        "history": ProcessedFile.objects.filter(ingestion=ingestion).count(),
        "active_run": Run.objects.filter(
            ingestion=ingestion, status__in=ACTIVE_RUN_STATUSES
        ).exists(),
    }


def expected_world(steps_done: list[str]) -> dict:
    """What the record says must be there, given the steps it reports done."""
    return {
        "table_exists": DROP not in steps_done,
        "history": 0 if CLEAR in steps_done else 4,
        "active_run": RUN in steps_done,
    }


def expected_final_rows(case: Case) -> list[int] | None:
    if case.kind == "full_refresh":
        return ids_of_files(range(6))
    if case.kind == "fresh_start":
        return ids_of_files([4, 5])
    if case.kind == "drop_table":
        return None
    return ids_of_files(range(4))  # clearing the history leaves the table alone


def expected_final_history(case: Case) -> int:
    return {"full_refresh": 6, "fresh_start": 6, "drop_table": 4, "clear_processed_files": 0}[
        case.kind
    ]


def call(client, case: Case):
    method, suffix = ENDPOINTS[case.kind]
    return getattr(client, method)(
        f"/api/v1/ingestions/sales/{suffix}", {"confirm": True}, format="json"
    )


def resume(client, operation_id: str):
    return client.post(f"/api/v1/refresh-operations/{operation_id}/resume")


@pytest.mark.parametrize("case", CASES)
def test_a_failing_step_is_reported_recorded_and_resumed_without_losing_a_row(
    scene, admin_client, monkeypatch, case
):
    with fault_injected(case, monkeypatch):
        response = call(admin_client, case)
    operation = RefreshOperation.objects.get()
    steps = STEPS[case.kind]

    if case.fault == WORKER_GONE:
        check_worker_gone(admin_client, scene, case, response, operation)
    elif case.fault == DB_LOST:
        check_state_database_lost(admin_client, scene, case, response, operation)
    else:
        check_failed_step(admin_client, scene, case, response, operation, steps)

    drain_queue()
    assert not Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()
    assert not Run.objects.filter(status=RunStatus.FAILED).exists()
    rows = table_ids(scene.table_identifier)
    expected = expected_final_rows(case)
    assert (sorted(rows) if rows is not None else None) == expected, "rows lost or duplicated"
    assert ProcessedFile.objects.filter(ingestion=scene).count() == expected_final_history(case)


def check_failed_step(client, ingestion, case, response, operation, steps):
    """The step failed and said so: 500 with the record, the recovery, then a clean resume."""
    done, failed, pending = steps[: case.position], case.step, steps[case.position + 1 :]
    body = response.json()
    assert response.status_code == 500, body
    assert response["X-Operation-ID"] == body["operation_id"] == operation.public_id
    assert body["status"] == ("partial_failure" if done else "failed")
    assert body["error_code"] == (
        "PARTIAL_FAILURE" if done else STEP_ERROR_CODE[case.step, case.fault]
    )
    assert [(step["operation"], step["status"]) for step in body["operations"]] == [
        *((name, "success") for name in done),
        (failed, "failed"),
    ]
    failed_step = body["operations"][-1]
    assert failed_step["error_code"] == STEP_ERROR_CODE[case.step, case.fault]
    assert "injected" in failed_step["error"]

    recovery = body["recovery"]
    state = ", ".join(
        [PHRASES[name][0] for name in done] + [PHRASES[name][1] for name in [failed, *pending]]
    )
    assert recovery["state"] == state[:1].upper() + state[1:]
    assert recovery["remaining_steps"] == [failed, *pending]
    resume_call = f"POST /api/v1/refresh-operations/{operation.public_id}/resume"
    assert recovery["action"] == f"Finish the remaining steps: {resume_call}"
    assert "injected" in recovery["message"]
    assert recovery["message"].startswith("Nothing was changed" if not done else "Table dropped")

    # The durable record says the same, and the world matches it.
    record = client.get(f"/api/v1/refresh-operations/{operation.public_id}")
    assert record.status_code == 200
    assert record.json() == body
    assert world(ingestion) == expected_world(done)

    finished = resume(client, operation.public_id)
    assert finished.status_code == (202 if case.triggers_a_run else 200), finished.json()
    assert finished.json()["status"] == ("accepted" if case.triggers_a_run else "success")
    assert [step["status"] for step in finished.json()["operations"]] == ["success"] * len(steps)
    operation.refresh_from_db()
    assert operation.attempts == 2
    assert resume(client, operation.public_id).status_code == 409  # nothing left to resume


def check_state_database_lost(client, ingestion, case, response, operation):
    """The request died recording a step: a 500, then a record that resumes once stale."""
    assert response.status_code == 500
    assert response.json()["error_code"] == "INTERNAL_ERROR"
    record = client.get(f"/api/v1/refresh-operations/{operation.public_id}").json()
    assert record["status"] == "in_progress"
    interrupted = operation.steps.get(name=case.step)
    assert interrupted.status == "pending" and interrupted.started_at is not None

    # While it may still be running somewhere, nobody else touches the ingestion: a resume
    # is told it is in progress, naming it.
    refused = resume(client, operation.public_id)
    assert (refused.status_code, refused.json()["error_code"]) == (409, "REFRESH_IN_PROGRESS")
    assert refused.json()["current_operation_id"] == operation.public_id
    busy = client.post("/api/v1/ingestions/sales/run")
    assert (busy.status_code, busy.json()["error_code"]) == (409, "REFRESH_IN_PROGRESS")

    RefreshOperation.objects.filter(pk=operation.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    finished = resume(client, operation.public_id)
    if case.step == RUN:
        # The dead request had queued its run: resume waits for it, then finishes.
        assert (finished.status_code, finished.json()["error_code"]) == (409, "RUN_IN_PROGRESS")
        drain_queue()
        finished = resume(client, operation.public_id)
    assert finished.status_code == (202 if case.triggers_a_run else 200), finished.json()
    assert [step["status"] for step in finished.json()["operations"]] == ["success"] * len(
        STEPS[case.kind]
    )


def check_worker_gone(client, ingestion, case, response, operation):
    """Every step succeeded; the run's worker then dies mid-batch and the run recovers."""
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    dying = FaultyEngine(
        load_engine(), fail_on="append", after_real_call=True, exception=WorkerKilled()
    )
    with pytest.raises(WorkerKilled):
        run_execute(run_id=run_id, engine=dying)
    run = Run.objects.get(public_id=run_id)
    assert run.status == RunStatus.RUNNING  # a dead worker finishes nothing

    record = client.get(f"/api/v1/refresh-operations/{operation.public_id}").json()
    assert (record["status"], record["run_id"]) == ("accepted", run_id)
    refused = resume(client, operation.public_id)
    assert (refused.status_code, refused.json()["error_code"]) == (409, "OPERATION_NOT_RESUMABLE")

    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert runs_recover_stale() == [run_id]
    drain_queue()
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.SUCCESS, 2)
