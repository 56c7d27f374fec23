"""`manage.py autoloader_worker`: the background worker, with recovery of runs whose worker died.

It is django-tasks-db's worker plus a reaper thread: a worker killed in the middle of a
run leaves its task marked running forever, so the reaper re-queues such runs (stale
heartbeat) for a live worker to resume. The reaper also finishes refresh operations (and
undos) whose web process died half-way, and ends retention windows (`refresh.services`).
"""

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker

from ingestions.runs import runs_recover_stale
from refresh.services import refresh_reap, retention_expire

logger = logging.getLogger("ingestions.worker")


class Command(BaseCommand):
    help = "Run the background worker (runs queued by the API and the console)."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="Idle poll interval (s).")
        parser.add_argument("--batch", action="store_true", help="Drain the queue, then exit.")

    def handle(self, *, interval: float, batch: bool, **options):
        stop = threading.Event()
        self._reap_once()
        reaper = threading.Thread(target=self._reap, args=(stop,), name="reaper", daemon=True)
        reaper.start()
        worker = Worker(
            queue_names=["default"],
            interval=interval,
            batch=batch,
            backend_name="default",
            startup_delay=False,
            max_tasks=None,
            worker_id=get_random_string(32),
            excluded_queue_names=[],
        )
        worker.configure_signals()
        self.stdout.write(f"worker started (pid-scoped id {worker.worker_id})")
        try:
            worker.run()
        finally:
            stop.set()

    def _reap(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(settings.AUTOLOADER_REAPER_INTERVAL_SECONDS):
                self._reap_once()
        finally:
            connection.close()

    def _reap_once(self) -> None:
        for task in (runs_recover_stale, refresh_reap, retention_expire):
            try:
                task()
            except Exception:  # a transient database error must not kill the reaper
                logger.warning("reaper pass (%s) failed", task.__name__, exc_info=True)
