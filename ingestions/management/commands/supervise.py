"""`manage.py supervise`: production mode on one host (`make serve`, `deploy/serve.sh`).

gunicorn (configured by `deploy/gunicorn.conf.py`) and N background workers, each restarted
with backoff when it exits (`ingestions.supervisor`); SIGTERM or Ctrl-C stops them all.
"""

import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingestions.supervisor import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    STABLE_SECONDS,
    Program,
    Supervisor,
)


class Command(BaseCommand):
    help = "Run gunicorn and N workers, restarting any that exits, until SIGTERM or Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2, help="background workers (2)")
        parser.add_argument(
            "--web-config",
            default=str(settings.BASE_DIR / "deploy" / "gunicorn.conf.py"),
            help="gunicorn's configuration file (deploy/gunicorn.conf.py)",
        )
        parser.add_argument("--backoff-initial", type=float, default=BACKOFF_INITIAL_SECONDS)
        parser.add_argument("--backoff-max", type=float, default=BACKOFF_MAX_SECONDS)
        parser.add_argument("--stable-seconds", type=float, default=STABLE_SECONDS)
        parser.add_argument(
            "--grace", type=float, default=30.0, help="seconds to stop before SIGKILL (30)"
        )

    def handle(self, *, workers: int, web_config: str, grace: float, **options):
        if workers < 0:
            raise CommandError("--workers must be 0 or more.")
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        programs = [Program("web", [sys.executable, "-m", "gunicorn", "-c", web_config])]
        programs += [
            Program(f"worker-{number}", [*manage, "autoloader_worker"])
            for number in range(1, workers + 1)
        ]
        supervisor = Supervisor(
            programs,
            backoff_initial=options["backoff_initial"],
            backoff_max=options["backoff_max"],
            stable_seconds=options["stable_seconds"],
        )
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        supervisor.start()
        pids = " ".join(f"{program.name}={program.pid}" for program in programs)
        self.stderr.write(f"supervise: web (gunicorn) and {workers} worker(s) running: {pids}")
        supervisor.run()
        self.stderr.write("supervise: stopping web and workers…")
        supervisor.stop(grace=grace)
        self.stderr.write("supervise: stopped.")
