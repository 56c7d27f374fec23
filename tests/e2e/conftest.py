"""Browser tests: Playwright for Python driving Debian's Chromium against the live server.

The browser is /usr/bin/chromium (`scripts/ensure_chromium.sh` installs it for `make test`);
`playwright install` is never used. Without it, and without root to install it, the tests
skip. Playwright's sync API keeps an asyncio loop running in the test thread while the
browser is open, so Django's "no ORM in async context" guard is lifted for this package
only, and the browser is closed when the package's tests end.
"""

import contextlib
import os
import signal
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.db.backends.signals import connection_created

from ingestions.models import Role

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="package")
def browser():
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.skip(
                f"{CHROMIUM} is missing: sudo apt-get update && sudo apt-get install -y chromium"
            )
        pytest.fail(f"{CHROMIUM} is missing; `make test` installs it (scripts/ensure_chromium.sh)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser, live_server):
    """`new_page(viewport=...)` -> a page in a fresh browser context on the live server.

    A JavaScript error on any page fails the test.
    """
    contexts, errors = [], []

    def make(viewport=None):
        context = browser.new_context(base_url=live_server.url, viewport=viewport or DESKTOP)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def user_of(member):
    """`user_of(role, tenant_obj=None)` -> a new member of the tenant, to log in as."""

    def make(role: str = Role.ADMIN, tenant_obj=None):
        return member(role, tenant_obj).user

    return make


def log_in(page, user, password: str = PASSWORD) -> None:
    from playwright.sync_api import expect

    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Ingestions", exact=True)).to_be_visible()


@pytest.fixture
def worker(tmp_path):
    """A real worker process on the test database and catalog, stopped at the end."""
    from ..helpers import start_worker

    process = start_worker(tmp_path / "worker.log")
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
        process.wait()
    connection.close()


@contextlib.contextmanager
def failing_sql_in_server(fragment: str):
    """Make every SQL statement containing `fragment` fail, in the live server's threads too.

    `tests.refresh.conftest.failing_sql` reaches only the test's own connection; the live
    server's request threads connect on their own, so the wrapper goes on every connection
    made meanwhile. A keep-alive thread keeps its connection object (and the wrapper) after
    the block: the wrapper then lets everything through.
    """
    failing = True

    def wrapper(execute, sql, params, many, context):
        if failing and fragment in sql:
            raise OperationalError(f"injected failure on: {fragment}")
        return execute(sql, params, many, context)

    def install(sender, connection, **kwargs):
        if wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(wrapper)

    connection_created.connect(install, weak=False)
    try:
        yield
    finally:
        failing = False
        connection_created.disconnect(install)
