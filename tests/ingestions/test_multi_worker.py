"""Several worker processes on PostgreSQL share one queue and never run an ingestion twice."""

import signal
import time

import pyarrow.compute as pc
import pytest
from django.db import connection
from django_tasks_db.models import DBTaskResult

from ingestions.models import ProcessedFile, RunStatus
from ingestions.runs import run_request
from ingestions.tasks import execute_run

from ..factories import IngestionFactory
from ..helpers import open_table, start_worker, write_csv_files
from .conftest import postgres_or_skip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WORKERS = 3
INGESTIONS = 6
FILES, ROWS = 4, 25


def test_workers_share_the_queue_and_run_each_ingestion_once(tenant, tmp_path):
    postgres_or_skip()
    ingestions = []
    for index in range(INGESTIONS):
        source = tmp_path / f"source-{index}"
        write_csv_files(source, files=FILES, rows=ROWS)
        ingestions.append(
            IngestionFactory(
                tenant=tenant,
                public_id=f"shared-{index}",
                source_uri=str(source),
                destination_table=f"raw.shared_{index}",
            )
        )
    runs = [run_request(ingestion=ingestion) for ingestion in ingestions]
    # A second task for every run: two workers may now take the same run at the same
    # instant, and only the database's claim decides which one executes it.
    for run in runs:
        execute_run.enqueue(run.public_id)
    log = tmp_path / "workers.log"
    workers = [start_worker(log, interval=0.05, quick_recovery=False) for _ in range(WORKERS)]
    try:
        deadline = time.monotonic() + 120
        while DBTaskResult.objects.exclude(status__in=["SUCCESSFUL", "FAILED"]).exists():
            assert time.monotonic() < deadline, f"queue not drained: {log.read_text()[-3000:]}"
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
        connection.close()

    tasks = list(DBTaskResult.objects.all())
    assert len(tasks) == 2 * INGESTIONS
    assert all(task.status == "SUCCESSFUL" for task in tasks), log.read_text()[-3000:]
    assert all(len(task.worker_ids) == 1 for task in tasks), "a task was taken twice"
    assert len({task.worker_ids[0] for task in tasks}) >= 2, "one worker did everything"
    for run in runs:
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCESS, run.error
        assert run.attempts == 1, f"{run.public_id} was executed {run.attempts} times"
        outcomes = sorted(
            task.return_value for task in tasks if task.args_kwargs["args"] == [run.public_id]
        )
        assert outcomes == ["SKIPPED", "SUCCESS"]
    for ingestion in ingestions:
        ids = open_table(ingestion.table_identifier).scan(selected_fields=("id",)).to_arrow()["id"]
        assert len(ids) == FILES * ROWS
        assert pc.count_distinct(ids).as_py() == FILES * ROWS
        assert ProcessedFile.objects.filter(ingestion=ingestion).count() == FILES
