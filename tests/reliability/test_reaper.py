"""The worker's reaper finishes what a dead web process left half-done, within a heartbeat:
a refresh killed mid-step never leaves a dropped table with nothing running or a locked
ingestion, and an undo killed half-way ends with the table and the history both restored."""

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from pyiceberg.exceptions import NoSuchTableError

from ingestions.models import ACTIVE_RUN_STATUSES, ProcessedFile, Run
from refresh import steps, undo
from refresh.models import OperationStatus, RefreshOperation, Retention, StepName
from refresh.reaper import refresh_reap
from refresh.services import refresh_execute
from refresh.sync import operation_sync
from refresh.undo import refresh_undo

from ..helpers import (
    ROOT,
    RequestProcessDied,
    database_url,
    drain_queue,
    dying_step,
    open_table,
    start_worker,
    wait_for,
    write_csv_files,
)

pytestmark = pytest.mark.django_db(transaction=True)


def silence(operation, *, seconds: int) -> None:
    """As if the operation's process had stopped beating `seconds` ago."""
    RefreshOperation.objects.filter(pk=operation.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


def ids_in(ingestion) -> list[int]:
    table = open_table(ingestion.table_identifier)
    return table.scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()


@pytest.mark.parametrize("mode", ["drop_first", "atomic"])
@pytest.mark.parametrize("after_the_action", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize(
    "step", [StepName.TABLE_DROPPED, StepName.PROCESSED_FILES_CLEARED, StepName.RUN_TRIGGERED]
)
def test_the_reaper_finishes_a_full_refresh_whose_request_died(
    settings, loaded, admin_user, source_dir, monkeypatch, step, after_the_action, mode
):
    settings.REFRESH_STALE_SECONDS = 30
    write_csv_files(source_dir, files=2, rows=25, start=4)
    actions = steps.STEP_ACTIONS if mode == "drop_first" else steps.STAGED_STEP_ACTIONS
    with monkeypatch.context() as patch:
        patch.setitem(actions, step, dying_step(actions[step], after_the_action=after_the_action))
        with pytest.raises(RequestProcessDied):
            refresh_execute(
                ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True, mode=mode
            )
    operation = RefreshOperation.objects.get()
    assert operation.status == OperationStatus.IN_PROGRESS

    assert refresh_reap() == []  # its heartbeat is fresh: it may still be working
    silence(operation, seconds=31)  # one heartbeat window, not ten minutes
    assert refresh_reap() == [operation.public_id]

    operation.refresh_from_db()
    assert operation.status == OperationStatus.ACCEPTED, operation.error
    assert Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).count() == 1
    drain_queue()
    operation = operation_sync(operation=operation)
    ids = ids_in(loaded)
    assert len(ids) == len(set(ids)) == 6 * 25
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 6
    # Undo still brings back exactly what was there before the operation.
    refresh_undo(operation=operation, actor=admin_user, confirm=True)
    assert len(ids_in(loaded)) == 100
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4


def test_the_reaper_finishes_an_undo_whose_request_died_after_restoring_the_table(
    settings, loaded, admin_user, monkeypatch
):
    settings.REFRESH_STALE_SECONDS = 30
    operation = refresh_execute(
        ingestion=loaded, kind="clear_processed_files", actor=admin_user, confirm=True
    )
    with monkeypatch.context() as patch:
        restore = undo.history_restore

        def die(**kwargs):
            raise RequestProcessDied()

        patch.setattr(undo, "history_restore", die)
        with pytest.raises(RequestProcessDied):
            refresh_undo(operation=operation, actor=admin_user, confirm=True)
        assert undo.history_restore is not restore

    operation.refresh_from_db()
    assert (operation.status, operation.retention) == ("in_progress", Retention.RESTORING)
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 0  # half-way

    silence(operation, seconds=31)
    assert refresh_reap() == [operation.public_id]
    operation.refresh_from_db()
    assert operation.status == OperationStatus.UNDONE
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4


# --- a real web process, SIGKILLed in the middle of a step ---------------------------------

# Executes a full refresh the way a web request does, but its drop step (once its effect is
# done, before its record) waits to be killed.
WEB_PROCESS = """
import os, sys, time
import django
django.setup()
from django.contrib.auth import get_user_model
from ingestions.models import Ingestion
from refresh import services, steps
from refresh.models import StepName

drop = steps.STEP_ACTIONS[StepName.TABLE_DROPPED]

def drop_then_hang(**kwargs):
    drop(**kwargs)
    print("dropped", flush=True)
    time.sleep(600)

steps.STEP_ACTIONS[StepName.TABLE_DROPPED] = drop_then_hang
services.refresh_execute(
    ingestion=Ingestion.objects.get(pk=int(sys.argv[1])),
    kind="full_refresh",
    actor=get_user_model().objects.get(pk=int(sys.argv[2])),
    confirm=True,
    mode="drop_first",
)
"""


@pytest.mark.slow
def test_a_sigkilled_web_process_leaves_no_dropped_table_behind(
    loaded, admin_user, source_dir, tmp_path, monkeypatch
):
    write_csv_files(source_dir, files=2, rows=25, start=4)
    monkeypatch.setenv("REFRESH_STALE_SECONDS", "2")
    monkeypatch.setenv("AUTOLOADER_REAPER_INTERVAL_SECONDS", "0.5")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AUTOLOADER_CATALOG_URI": settings.AUTOLOADER_CATALOG_URI,
        "AUTOLOADER_WAREHOUSE": settings.AUTOLOADER_WAREHOUSE,
        "AUTOLOADER_CATALOG_NAME": settings.AUTOLOADER_CATALOG_NAME,
        "DJANGO_SETTINGS_MODULE": "console.settings",
    }
    web = subprocess.Popen(
        [sys.executable, "-c", WEB_PROCESS, str(loaded.pk), str(admin_user.pk)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "web.log").open("wb"),
    )
    try:
        assert web.stdout.readline().strip() == b"dropped", (tmp_path / "web.log").read_text()
        web.send_signal(signal.SIGKILL)
        web.wait(timeout=10)
    finally:
        web.kill()
    operation = RefreshOperation.objects.get()
    assert operation.status == OperationStatus.IN_PROGRESS
    assert not open_table_exists(loaded)  # dropped, with nothing running yet

    worker = start_worker(tmp_path / "worker.log")
    try:
        wait_for(
            lambda: (
                RefreshOperation.objects.filter(
                    pk=operation.pk, status=OperationStatus.ACCEPTED
                ).exists()
                and not Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()
            ),
            timeout=60,
            what="the reaper to finish the operation and the worker its run",
        )
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    ids = ids_in(loaded)
    assert len(ids) == len(set(ids)) == 6 * 25
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 6
    assert "finished by the worker" in " ".join(RefreshOperation.objects.get().notes)


def open_table_exists(ingestion) -> bool:
    try:
        open_table(ingestion.table_identifier)
    except NoSuchTableError:
        return False
    return True
