"""The web outlives its worker: `manage.py serve` (`make run`) and `deploy/serve.sh`
(`make serve`) restart whatever exits, with backoff, and stop everything on SIGTERM."""

import logging
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

from ingestions.supervisor import Program, Supervisor, describe_status

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
QUICK_EXIT = [sys.executable, "-c", "import sys; sys.exit(3)"]


# --- the supervisor: backoff, logging, stopping (real processes, a test clock) ----------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exited(program: Program) -> None:
    program.process.wait(timeout=10)


def test_a_process_that_exits_is_restarted_with_doubling_backoff_reset_by_a_stable_run(caplog):
    clock = Clock()
    program = Program("worker", QUICK_EXIT)
    supervisor = Supervisor(
        [program], backoff_initial=1, backoff_max=4, stable_seconds=10, clock=clock
    )
    caplog.set_level(logging.INFO, logger="ingestions.supervisor")
    supervisor.start()
    restarts_at = []
    # Each quick exit waits twice as long as the one before, up to the maximum.
    for expected_wait in (1, 2, 4, 4):
        exited(program)
        supervisor.poll()  # notices the exit
        first_pid = program.pid
        clock.now += expected_wait - 0.01
        supervisor.poll()
        assert program.pid == first_pid  # still waiting
        clock.now += 0.01
        supervisor.poll()
        assert program.pid != first_pid  # restarted
        restarts_at.append(clock.now)
    assert restarts_at == [1, 3, 7, 11]
    assert program.restarts == 4

    # A process that stayed up longer than stable_seconds is restarted after 1 s again.
    exited(program)
    clock.now += 10
    supervisor.poll()
    clock.now += 1
    supervisor.poll()
    assert program.restarts == 5

    exits = [record.getMessage() for record in caplog.records if "exited" in record.message]
    assert len(exits) == 5
    assert all("exited with status 3" in message for message in exits)
    assert [message.rsplit("restarting in ", 1)[1] for message in exits] == [
        "1 s",
        "2 s",
        "4 s",
        "4 s",
        "1 s",
    ]
    supervisor.stop(grace=5)


def test_an_exit_by_signal_is_named():
    assert describe_status(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_status(1) == "status 1"


def test_stop_terminates_every_process_and_kills_one_that_ignores_sigterm():
    ignores_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    stubborn = Program("stubborn", [sys.executable, "-c", ignores_term])
    polite = Program("polite", [sys.executable, "-c", "import time; time.sleep(60)"])

    def spawn(command):
        return subprocess.Popen(command, stdout=subprocess.PIPE)

    supervisor = Supervisor([stubborn, polite], spawn=spawn)
    supervisor.start()
    assert stubborn.process.stdout.readline() == b"ready\n"
    started = time.monotonic()

    supervisor.stop(grace=1)

    assert time.monotonic() - started < 10
    assert polite.process.returncode == -signal.SIGTERM
    assert stubborn.process.returncode == -signal.SIGKILL
    supervisor.poll()  # stopping: nothing restarts
    assert not stubborn.running() and not polite.running()


# --- the real commands: SIGKILL the worker, the web keeps answering --------------------


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the task ended meanwhile
            continue
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def child_running(parent: int, words: str) -> int | None:
    """The pid of `parent`'s child whose command line contains `words`, if one runs."""
    for pid in children_of(parent):
        if words in command_line(pid):
            return pid
    return None


def wait_until(condition, *, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s\n{log.read_text()[-3000:]}")


def healthz(base: str, headers: dict | None = None) -> int | None:
    request = urllib.request.Request(f"{base}/healthz", headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as response:
        return response.code
    except OSError:
        return None


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "AUTOLOADER_", "DATABASE_URL"))
    }
    env.update(AUTOLOADER_DATA_DIR=str(data_dir), HOME=str(data_dir / "home"), **extra)
    return env


def manage(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def assert_the_web_outlives_its_worker(
    command: list[str], *, env: dict, base: str, headers: dict, log: Path
) -> None:
    """Start `command`; SIGKILL its worker, then its web; each comes back; SIGTERM ends all."""
    with log.open("wb") as output:
        serve = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: every process it starts is findable
        )
    try:
        wait_until(lambda: healthz(base, headers) == 200, timeout=90, what="/healthz", log=log)
        worker = wait_until(
            lambda: child_running(serve.pid, "autoloader_worker"),
            timeout=30,
            what="the worker",
            log=log,
        )

        os.kill(worker, signal.SIGKILL)

        # The web keeps serving while the worker is down...
        assert healthz(base, headers) == 200
        assert serve.poll() is None
        # ...and a new worker starts after the first backoff (1 s).
        new_worker = wait_until(
            lambda: (pid := child_running(serve.pid, "autoloader_worker")) != worker and pid,
            timeout=15,
            what="a new worker",
            log=log,
        )
        assert healthz(base, headers) == 200
        assert "exited with signal SIGKILL" in log.read_text()

        # The web itself is restarted too (its own backoff).
        web = child_running(serve.pid, "gunicorn")
        os.kill(web, signal.SIGKILL)
        wait_until(
            lambda: child_running(serve.pid, "gunicorn") not in (None, web),
            timeout=15,
            what="a new web",
            log=log,
        )
        wait_until(lambda: healthz(base, headers) == 200, timeout=60, what="the web back", log=log)
        assert child_running(serve.pid, "autoloader_worker") == new_worker
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)  # our own session only
            serve.wait()
            raise
    assert serve.returncode == 0, log.read_text()[-3000:]
    # Nothing of the session is left: web, its gunicorn workers, the workers.
    wait_until(
        lambda: (
            not subprocess.run(
                ["pgrep", "-s", str(serve.pid)], capture_output=True, text=True
            ).stdout.split()
        ),
        timeout=15,
        what="every process of serve to end",
        log=log,
    )


@pytest.mark.slow
def test_manage_py_serve_restarts_a_killed_worker_while_the_web_keeps_serving(tmp_path):
    port = free_port()
    env = clean_env(tmp_path)
    manage("migrate", "--noinput", env=env)

    assert_the_web_outlives_its_worker(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--web-workers", "1"],
        env=env,
        base=f"http://127.0.0.1:{port}",
        headers={},
        log=tmp_path / "serve.log",
    )


@pytest.mark.slow
def test_deploy_serve_sh_restarts_a_killed_worker_while_the_web_keeps_serving(tmp_path):
    port = free_port()
    env = clean_env(
        tmp_path,
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="autoloader.example.com,127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        AUTOLOADER_WORKERS="1",
        PYTHON=sys.executable,
    )
    for command in (["migrate", "--noinput"], ["createcachetable"], ["collectstatic", "--noinput"]):
        manage(*command, env=env)

    assert_the_web_outlives_its_worker(
        ["bash", "deploy/serve.sh"],
        env=env,
        base=f"http://127.0.0.1:{port}",
        # Through a pretend TLS proxy, as in production.
        headers={"Host": "autoloader.example.com", "X-Forwarded-Proto": "https"},
        log=tmp_path / "serve.log",
    )
