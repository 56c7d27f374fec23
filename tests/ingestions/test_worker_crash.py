"""Exactly-once under SIGKILL: a real worker process killed mid-run, then a new one finishes."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from ingestions.models import ProcessedFile, Run, RunStatus
from ingestions.runs import run_request

from ..conftest import open_table, write_csv_files

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the test database, for worker processes to share it."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AUTOLOADER_CATALOG_URI": settings.AUTOLOADER_CATALOG_URI,
        "AUTOLOADER_WAREHOUSE": settings.AUTOLOADER_WAREHOUSE,
        "AUTOLOADER_CATALOG_NAME": settings.AUTOLOADER_CATALOG_NAME,
        "AUTOLOADER_BATCH_MAX_FILES": "1",
        "AUTOLOADER_RUN_STALE_SECONDS": "2",
        "AUTOLOADER_REAPER_INTERVAL_SECONDS": "0.5",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "autoloader_worker", "--interval", "0.1"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
