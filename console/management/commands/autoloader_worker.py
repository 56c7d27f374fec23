"""`manage.py autoloader_worker`: the background worker, with recovery of runs whose worker died.

It is django-tasks-db's worker plus a reaper thread: a worker killed in the middle of a
run leaves its task marked running forever, so the reaper re-queues such runs (stale
heartbeat) for a live worker to resume. The apps above register their own passes with the
reaper (`ingestions.hooks.register_periodic`): refresh finishes operations (and undos) whose
web process died half-way, ends retention windows, fires schedules and moves batches on.
A third thread maintains the tables (`ingestions.maintenance`): a long compaction there
never delays the recovery of a run or of an operation. A fourth sends webhook deliveries
(registered by `webhooks`) every few seconds.
"""

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker

from ingestions import hooks

logger = logging.getLogger("ingestions.worker")


class Command(BaseCommand):
    help = "Run the background worker (runs queued by the API and the console)."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="Idle poll interval (s).")
        parser.add_argument("--batch", action="store_true", help="Drain the queue, then exit.")

    def handle(self, *, interval: float, batch: bool, **options):
        stop = threading.Event()
        recovery = hooks.periodic_jobs("recovery")
        self._reap_once(recovery)  # maintenance waits for its thread: startup stays quick
        for name, tasks in (
            ("reaper", recovery),
            ("maintenance", hooks.periodic_jobs("maintenance")),
        ):
            threading.Thread(target=self._loop, args=(stop, tasks), name=name, daemon=True).start()
        threading.Thread(
            target=self._loop,
            args=(
                stop,
                hooks.periodic_jobs("deliveries"),
                settings.AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS,
            ),
            name="deliveries",
            daemon=True,
        ).start()
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

    def _loop(self, stop: threading.Event, tasks, interval: float | None = None) -> None:
        try:
            while not stop.wait(interval or settings.AUTOLOADER_REAPER_INTERVAL_SECONDS):
                self._reap_once(tasks)
        finally:
            connection.close()

    def _reap_once(self, tasks=None) -> None:
        """One pass of `tasks` (default: recovery, then maintenance)."""
        every = (*hooks.periodic_jobs("recovery"), *hooks.periodic_jobs("maintenance"))
        for task in tasks or every:
            try:
                task()
            except Exception:  # a transient database error must not kill the thread
                logger.warning("reaper pass (%s) failed", task.__name__, exc_info=True)
