"""Helpers shared by test modules (import them from here, not from another test module)."""

import contextlib
import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.db import OperationalError, connection
from django_tasks_db.management.commands.db_worker import Worker


def drain_queue() -> None:
    """Run the real django-tasks database worker until the queue is empty."""
    Worker(
        queue_names=["default"],
        interval=0,
        batch=True,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="test-worker",
        excluded_queue_names=[],
    ).run()


# --- tables and source files -----------------------------------------------------------


def open_table(table_name: str):
    """Open a table from outside the product, with plain pyiceberg, as a user would."""
    from django.conf import settings
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        settings.AUTOLOADER_CATALOG_NAME,
        uri=settings.AUTOLOADER_CATALOG_URI,
        warehouse=settings.AUTOLOADER_WAREHOUSE,
    )
    return catalog.load_table(table_name)


def write_csv_files(folder: Path, *, files: int, rows: int, start: int = 0) -> list[Path]:
    """Write `files` CSV files of `rows` rows each; ids are unique across files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + files):
        path = folder / f"part-{index:04d}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "amount"])
            for row in range(rows):
                writer.writerow([index * 100000 + row, f"name-{index}-{row}", row * 1.5])
        paths.append(path)
    return paths


def rows(ingestion) -> int:
    """The rows of the ingestion's table, read from outside the product."""
    return open_table(ingestion.table_identifier).scan().to_arrow().num_rows


# --- faults: the real engine, wrapped to fail a step ----------------------------------


class FaultyEngine:
    """Wraps the real engine; fails the chosen method after (or instead of) the real call."""

    def __init__(self, engine, *, fail_on: str, after_real_call: bool, exception: BaseException):
        self._engine = engine
        self.fail_on = fail_on
        self.after_real_call = after_real_call
        self.exception = exception

    def __getattr__(self, name):
        real = getattr(self._engine, name)
        if name != self.fail_on:
            return real

        def faulty(*args, **kwargs):
            if self.after_real_call:
                real(*args, **kwargs)
            raise self.exception

        return faulty


class FaultingEngine:
    """The real engine, with chosen methods failing with a chosen error."""

    def __init__(self, failures: dict):
        from ingestions.engines import load_engine

        self._engine = load_engine()
        self.failures = failures

    def __getattr__(self, name):
        if name in self.failures:

            def fail(*args, **kwargs):
                raise self.failures[name]

            return fail
        return getattr(self._engine, name)


@contextlib.contextmanager
def failing_sql(fragment: str):
    """Make every SQL statement containing `fragment` fail at the real database."""

    def wrapper(execute, sql, params, many, context):
        if fragment in sql:
            raise OperationalError(f"injected failure on: {fragment}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


class WorkerKilled(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the run handles it."""


class RequestProcessDied(BaseException):
    """Stands for the web process dying: not an Exception, so no handler records anything."""


def dying_step(action, *, after_the_action: bool):
    def step(**kwargs):
        if after_the_action:
            action(**kwargs)  # its effect is committed; its record never will be
        raise RequestProcessDied()

    return step


# --- worker processes ------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]  # the repository


def database_url() -> str:
    """The URL of the test database, for worker processes to share it."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(
    log: Path, *, interval: float = 0.1, quick_recovery: bool = True, **extra_env: str
):
    """A real `manage.py autoloader_worker` on the test database, one file per commit; with
    `quick_recovery`, a dead worker's run is taken over within seconds; `extra_env`: more
    settings."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AUTOLOADER_CATALOG_URI": settings.AUTOLOADER_CATALOG_URI,
        "AUTOLOADER_WAREHOUSE": settings.AUTOLOADER_WAREHOUSE,
        "AUTOLOADER_CATALOG_NAME": settings.AUTOLOADER_CATALOG_NAME,
        "AUTOLOADER_BATCH_MAX_FILES": "1",
    }
    if quick_recovery:
        env["AUTOLOADER_RUN_STALE_SECONDS"] = "2"
        env["AUTOLOADER_REAPER_INTERVAL_SECONDS"] = "0.5"
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "autoloader_worker", "--interval", str(interval)],
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


# --- the callers of the authorization matrices ---------------------------------------

# Who calls, besides the three roles of the tenant (`client_as` in tests/conftest.py).
ANONYMOUS = "anonymous"
BAD_TOKEN = "bad-token"
OTHER_TENANTS_ADMIN = "other-tenants-admin"


class Expected(NamedTuple):
    status: int
    error_code: str | None = None


def run_once(ingestion, source_dir: Path, index: int):
    """Land one new file (20 rows, `part-{index}`) and load it with the real queue."""
    from ingestions.models import Ingestion, RunStatus
    from ingestions.runs import run_request

    write_csv_files(source_dir, files=1, rows=20, start=index)
    run = run_request(ingestion=Ingestion.objects.get(pk=ingestion.pk))
    drain_queue()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCESS, run.error
    return run
