"""Production mode: DEBUG off, secrets from the environment, gunicorn + WhiteNoise, workers."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def production_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "AUTOLOADER_", "DATABASE_URL"))
    }
    env.update(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="autoloader.example.com,127.0.0.1",
        AUTOLOADER_DATA_DIR=str(data_dir),
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_deploy_reports_no_issue_in_production_mode(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env(tmp_path)
    del env["DJANGO_SECRET_KEY"]

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0" in result.stderr


def get(url: str, *, https: bool = True):
    """GET through a pretend TLS proxy (X-Forwarded-Proto), without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Host": "autoloader.example.com"}
    if https:
        headers["X-Forwarded-Proto"] = "https"
    opener = urllib.request.build_opener(NoRedirect)
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http
        return opener.open(request, timeout=10)
    except urllib.error.HTTPError as response:
        return response


def test_serve_runs_gunicorn_whitenoise_and_workers_and_stops_on_sigterm(tmp_path):
    port = free_port()
    home = tmp_path / "home"  # where gunicorn would put its control socket by default
    env = production_env(
        tmp_path, PORT=str(port), AUTOLOADER_WORKERS="2", PYTHON=sys.executable, HOME=str(home)
    )
    env.pop("XDG_RUNTIME_DIR", None)
    # What `make serve` does before it starts the processes.
    for command in (["migrate", "--noinput"], ["createcachetable"], ["collectstatic", "--noinput"]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((tmp_path / "staticfiles" / "staticfiles.json").read_text())
    hashed_css = manifest["paths"]["admin/css/base.css"]
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        serve = subprocess.Popen(
            ["bash", "deploy/serve.sh"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = get(f"{base}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert serve.poll() is None, log.read_text()[-3000:]
                time.sleep(0.3)
        assert health.status == 200, health.read()
        assert json.loads(health.read())["status"] == "ok"
        # Plain HTTP is sent to HTTPS: the proxy in front terminates TLS.
        insecure = get(f"{base}/healthz", https=False)
        assert insecure.status == 301
        assert insecure.headers["Location"].startswith("https://")
        # Static files come from WhiteNoise, hashed and cached for ever.
        static = get(f"{base}/static/{hashed_css}")
        assert static.status == 200
        assert "max-age=315360000" in static.headers["Cache-Control"]
        assert "Strict-Transport-Security" in static.headers
        # The workers are running beside the web.
        children = subprocess.run(
            ["pgrep", "-f", "-s", str(serve.pid), "autoloader_worker"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(children) == 2, log.read_text()[-3000:]
        # gunicorn's control socket is in the data dir, nothing in the user's home.
        assert (tmp_path / "gunicorn.ctl").is_socket()
        assert not (home / ".gunicorn").exists()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
            raise
    assert serve.returncode == 0, log.read_text()[-3000:]
    leftovers = subprocess.run(
        ["pgrep", "-s", str(serve.pid)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], "serve.sh left processes running"
