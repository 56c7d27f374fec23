"""A running run's heartbeat, kept fresh from a thread (`run_executor`)."""

import logging
import threading

from django.conf import settings
from django.db import connection
from django.utils import timezone

from .errors import RunOwnershipLostError
from .models import Run, RunStatus

logger = logging.getLogger("ingestions.runs")  # one logger for a run's whole life


class RunHeartbeat:
    """Keeps the run's heartbeat fresh from a thread, so a long commit never looks dead.

    It also notices when the run was handed to another worker (the reaper re-queued it):
    the executor then stops before its next commit; and when a user cancelled the run: it
    then calls `on_cancel` (the engine's `cancel`) once.
    """

    def __init__(self, *, run_pk: int, worker_id: str):
        self.run_pk = run_pk
        self.worker_id = worker_id
        self.lost = False
        self.on_cancel = None
        self._cancel_signalled = False
        self._stop = threading.Event()
        self._interval = max(0.2, settings.AUTOLOADER_RUN_STALE_SECONDS / 6)
        self._thread = threading.Thread(target=self._loop, name="run-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        updated = Run.objects.filter(
            pk=self.run_pk, worker_id=self.worker_id, status=RunStatus.RUNNING
        ).update(heartbeat_at=timezone.now())
        if not updated:
            self.lost = True
        if (
            self.on_cancel is not None
            and not self._cancel_signalled
            and Run.objects.filter(pk=self.run_pk, cancel_requested=True).exists()
        ):
            self._cancel_signalled = True
            self.on_cancel()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    self.beat()
                except Exception:  # a locked or restarting database: try again next beat
                    logger.warning("heartbeat of run %s failed", self.run_pk, exc_info=True)
        finally:
            connection.close()

    def check(self) -> None:
        if self.lost:
            raise RunOwnershipLostError()
