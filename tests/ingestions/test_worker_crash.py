"""Exactly-once under SIGKILL: a real worker process killed mid-run, then a new one finishes."""

import random
import signal
import time

import pytest
from django.db import connection

from ingestions.models import ProcessedFile, Run, RunStatus
from ingestions.runs import run_request

from ..helpers import open_table, start_worker, wait_for, write_csv_files

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_sigkilled_worker_leaves_every_row_in_the_table_exactly_once(
    csv_ingestion, source_dir, tmp_path
):
    files, rows = 24, 50
    write_csv_files(source_dir, files=files, rows=rows)
    rng = random.Random(20261126)
    run = run_request(ingestion=csv_ingestion)
    log = tmp_path / "worker.log"
    kills = 0
    try:
        # Kill two workers at random instants of the same run, then let a third finish it.
        for _ in range(2):
            victim = start_worker(log)
            wait_for(
                lambda: Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).exists(),
                60,
                "the worker to start the run",
            )
            time.sleep(rng.uniform(0.05, 1.0))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            run.refresh_from_db()
            if run.status != RunStatus.RUNNING:
                break
        finisher = start_worker(log)
        try:
            wait_for(
                lambda: Run.objects.filter(pk=run.pk, status=RunStatus.SUCCESS).exists(),
                120,
                f"the run to succeed (log: {log.read_text()[-2000:]})",
            )
        finally:
            finisher.send_signal(signal.SIGTERM)
            finisher.wait(timeout=30)
    finally:
        connection.close()

    run.refresh_from_db()
    assert kills >= 1
    data = (
        open_table(csv_ingestion.table_identifier)
        .scan(selected_fields=("id", "_source_file"))
        .to_arrow()
    )
    ids = data["id"].to_pylist()
    assert len(ids) == len(set(ids)), "a row was loaded twice"
    assert len(ids) == files * rows, "a row was lost"
    assert ProcessedFile.objects.filter(ingestion=csv_ingestion).count() == files
    assert run.files_loaded == files
    assert run.attempts >= 2
