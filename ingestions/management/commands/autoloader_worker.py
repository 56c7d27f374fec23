"""`manage.py autoloader_worker`: the background worker, with recovery of runs whose worker died.

It is django-tasks-db's worker plus a reaper thread: a worker killed in the middle of a
run leaves its task marked running forever, so the reaper re-queues such runs (stale
heartbeat) for a live worker to resume. The reaper also finishes refresh operations (and
undos) whose web process died half-way, and ends retention windows (`refresh.services`).
A third thread maintains the tables (`ingestions.maintenance`): a long compaction there
never delays the recovery of a run or of an operation. A fourth sends webhook deliveries
(`webhooks.delivery`) every few seconds.
"""

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils.crypto import get_random_string
from django_tasks_db.management.commands.db_worker import Worker

from ingestions.maintenance import maintenance_due
from ingestions.runs import runs_recover_stale
from refresh.batches import batches_sync_due
from refresh.schedules import schedules_fire_due
from refresh.services import operations_sync_due, refresh_reap, retention_expire
from webhooks.delivery import deliver_due_in_background

logger = logging.getLogger("ingestions.worker")

# Schedules fire from the reaper: every AUTOLOADER_REAPER_INTERVAL_SECONDS (15 s), so a
# firing comes at most that late; several workers fire each slot once (refresh.schedules).
RECOVERY = (
    runs_recover_stale,
    refresh_reap,
    retention_expire,
    schedules_fire_due,
    operations_sync_due,
    batches_sync_due,
)
MAINTENANCE = (maintenance_due,)
# Queues what is due and returns: the sends go on in their own threads, so one tenant's
# stalled receiver never holds up this loop nor another tenant's deliveries.
DELIVERIES = (deliver_due_in_background,)


class Command(BaseCommand):
    help = "Run the background worker (runs queued by the API and the console)."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=0.5, help="Idle poll interval (s).")
        parser.add_argument("--batch", action="store_true", help="Drain the queue, then exit.")

    def handle(self, *, interval: float, batch: bool, **options):
        stop = threading.Event()
        self._reap_once(RECOVERY)  # maintenance waits for its thread: startup stays quick
        for name, tasks in (("reaper", RECOVERY), ("maintenance", MAINTENANCE)):
            threading.Thread(target=self._loop, args=(stop, tasks), name=name, daemon=True).start()
        threading.Thread(
            target=self._loop,
            args=(stop, DELIVERIES, settings.AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS),
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
        for task in tasks or (*RECOVERY, *MAINTENANCE):
            try:
                task()
            except Exception:  # a transient database error must not kill the thread
                logger.warning("reaper pass (%s) failed", task.__name__, exc_info=True)
