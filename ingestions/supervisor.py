"""Keep the web and the workers running on one host: each process that exits is restarted.

`manage.py serve` (`make run`) and `manage.py supervise` (`make serve`, `deploy/serve.sh`)
both run their processes through `Supervisor`, so they behave the same:

- **A process that exits is restarted**, whatever its status, the web (gunicorn) as well as
  a worker: one process dying never takes the others down. Each restart is logged with the
  exit status (a signal by its name).
- **Exponential backoff per process**: the first restart waits `backoff_initial` seconds
  (1 s), each following one twice as long up to `backoff_max` (60 s). A process that stayed
  up `stable_seconds` (60 s) before it exited starts again from `backoff_initial`: a crash
  loop costs at most one start a minute, an occasional crash a one-second gap.
- **Stopping** (`request_stop`, called from the SIGINT/SIGTERM handler of the command):
  no more restarts; every process gets SIGTERM, and SIGKILL if it has not exited within
  `grace` seconds. Nothing is left running.

The processes stay in the supervisor's process group, so Ctrl-C in a terminal reaches them
all at once, as before. The supervisor itself holds no database connection.
"""

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
STABLE_SECONDS = 60.0
POLL_SECONDS = 0.2


@dataclass
class Program:
    """One supervised process: its name in the log and its command line."""

    name: str
    command: Sequence[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    # When the exited process starts again (None: running, or not yet started).
    restart_at: float | None = None
    # The wait before the next restart: doubles on each quick exit, reset by a stable run.
    delay: float = field(default=BACKOFF_INITIAL_SECONDS)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def describe_status(returncode: int) -> str:
    """`status 3`, or `signal SIGKILL` for a process a signal ended (negative returncode)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


class Supervisor:
    """Start `programs`, restart each one that exits (with backoff), stop them all on request.

    Args:
        programs: what to run; each restarts on its own schedule.
        backoff_initial: the wait before a first restart, in seconds.
        backoff_max: the longest wait between restarts.
        stable_seconds: a process that ran this long before exiting restarts after
            `backoff_initial` again.
        clock: monotonic seconds (tests pass their own).
        spawn: starts a command (tests may wrap `subprocess.Popen`).
    """

    def __init__(
        self,
        programs: Sequence[Program],
        *,
        backoff_initial: float = BACKOFF_INITIAL_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        stable_seconds: float = STABLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Sequence[str]], subprocess.Popen] = subprocess.Popen,
    ):
        self.programs = list(programs)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.spawn = spawn
        self.stopping = False
        for program in self.programs:
            program.delay = backoff_initial

    def start(self) -> None:
        for program in self.programs:
            self._start(program)

    def _start(self, program: Program) -> None:
        program.process = self.spawn(list(program.command))
        program.started_at = self.clock()
        program.restart_at = None
        logger.info("supervise: %s started (pid %s)", program.name, program.pid)

    def poll(self) -> None:
        """Notice the processes that exited and restart the ones whose wait is over."""
        if self.stopping:
            return
        now = self.clock()
        for program in self.programs:
            if program.restart_at is None and program.process is not None:
                returncode = program.process.poll()
                if returncode is None:
                    continue
                ran = now - program.started_at
                if ran >= self.stable_seconds:
                    program.delay = self.backoff_initial
                program.restart_at = now + program.delay
                logger.warning(
                    "supervise: %s (pid %s) exited with %s after %.1f s; restarting in %g s",
                    program.name,
                    program.pid,
                    describe_status(returncode),
                    ran,
                    program.delay,
                )
                program.delay = min(program.delay * 2, self.backoff_max)
            if program.restart_at is not None and now >= program.restart_at:
                program.restarts += 1
                self._start(program)
                logger.warning(
                    "supervise: %s restarted (pid %s, restart %d)",
                    program.name,
                    program.pid,
                    program.restarts,
                )

    def run(self, *, poll_seconds: float = POLL_SECONDS) -> None:
        """Supervise until `request_stop` (a signal handler calls it)."""
        while not self.stopping:
            self.poll()
            time.sleep(poll_seconds)

    def request_stop(self, *_signal_args) -> None:
        """Stop restarting; `run` returns. Usable as a signal handler."""
        self.stopping = True

    def stop(self, *, grace: float = 15.0) -> None:
        """SIGTERM every running process, SIGKILL what is still running after `grace` s."""
        self.stopping = True
        running = [program for program in self.programs if program.running()]
        for program in running:
            program.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for program in running:
            try:
                program.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning(
                    "supervise: %s did not stop within %g s: killed", program.name, grace
                )
                program.process.kill()
                program.process.wait()
