"""`manage.py serve`: web (gunicorn) and worker together; Ctrl-C or SIGTERM stops both."""

import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from ingestions.demo import DEMO_USERS, demo_token_saved
from ingestions.management.commands.seed_demo import DEFAULT_DEMO_PASSWORD


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
        children = [
            subprocess.Popen(web_command(host=host, port=port, web_workers=web_workers)),
            subprocess.Popen([*base, "autoloader_worker"]),
        ]
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        url = f"http://{host}:{port}/"
        if self._wait_healthy(url + "healthz", children, lambda: stopping):
            self._banner(url)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.3)
        self.stdout.write("stopping web and worker…")
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("stopped.")
        failed = [child.returncode for child in children if child.returncode not in (0, -15)]
        if failed and not stopping:
            sys.exit(1)

    def _wait_healthy(self, url: str, children, stopping) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stopping():
            if any(child.poll() is not None for child in children):
                return False
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
