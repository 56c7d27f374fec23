"""`manage.py serve`: web (gunicorn) and worker together; Ctrl-C or SIGTERM stops both.

Either one that exits is restarted with backoff (`ingestions.supervisor`): the web keeps
serving while its worker is down, and the worker comes back.
"""

import signal
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from ingestions.demo import DEMO_USERS, demo_token_saved
from ingestions.management.commands.seed_demo import DEFAULT_DEMO_PASSWORD
from ingestions.supervisor import Program, Supervisor


class Command(BaseCommand):
    help = "Serve the console, the API and the background worker until interrupted."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *, host: str, port: int, web_workers: int, **options):
        base = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        # Once, here: the web and the worker would otherwise race to create it.
        call_command("init_catalog")
        web = Program("web", web_command(host=host, port=port, web_workers=web_workers))
        supervisor = Supervisor([web, Program("worker", [*base, "autoloader_worker"])])
        signal.signal(signal.SIGINT, supervisor.request_stop)
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        supervisor.start()
        url = f"http://{host}:{port}/"
        healthy = self._wait_healthy(url + "healthz", web, supervisor)
        if healthy:
            self._banner(url)
        # A web that exits before it ever answered (a port in use, a broken setting) is not
        # a crash to retry: serve stops and says so. Later, whatever exits is restarted.
        failed_to_start = not healthy and not supervisor.stopping and not web.running()
        if not failed_to_start:
            supervisor.run()  # until Ctrl-C or SIGTERM
        self.stdout.write("stopping web and worker…")
        supervisor.stop(grace=15)
        self.stdout.write("stopped.")
        if failed_to_start:
            sys.exit(1)

    def _wait_healthy(self, url: str, web: Program, supervisor: Supervisor) -> bool:
        """Whether the web answered /healthz; False when it exited before it ever did."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not supervisor.stopping:
            if not web.running():
                return False
            supervisor.poll()  # a worker that dies while the web starts is restarted
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
                    if response.status == 200:
                        return True
            except OSError:
                time.sleep(0.3)
        return False

    def _banner(self, url: str) -> None:
        token = demo_token_saved()
        lines = [
            "",
            f"  Autoloader Console is up:  {url}",
            f"  API docs:                  {url}api/docs/",
            f"  Demo logins (password '{DEFAULT_DEMO_PASSWORD}' unless AUTOLOADER_DEMO_PASSWORD):",
            *(
                f"    {username:<13} {role.value:<9} of {tenant}"
                for username, tenant, role in DEMO_USERS
            ),
        ]
        if token:
            lines += [
                f"  API token of admin:        {token}",
                f"    curl -H 'Authorization: Bearer {token}' {url}api/v1/ingestions",
            ]
        lines += ["  Ctrl-C stops web and worker.", ""]
        self.stdout.write("\n".join(lines))


def web_command(*, host: str, port: int, web_workers: int) -> list[str]:
    """gunicorn's command line; its control socket lives in the data dir, not in ~/.gunicorn."""
    return [
        sys.executable, "-m", "gunicorn", "console.wsgi:application",
        "--bind", f"{host}:{port}", "--workers", str(web_workers), "--threads", "4",
        "--graceful-timeout", "10", "--access-logfile", "-", "--chdir", str(settings.BASE_DIR),
        "--control-socket", str(settings.DATA_DIR / "gunicorn.ctl"),
    ]  # fmt: skip
