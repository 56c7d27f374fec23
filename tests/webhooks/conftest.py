"""Webhook fixtures: a receiver on 127.0.0.1 (http.server in a thread) that the tests allow
as a destination, and helpers to subscribe and to check signatures."""

import hashlib
import hmac
import http.server
import json
import threading

import pytest

from ingestions.models import Role
from webhooks import destinations


class Receiver:
    """Records every POST; answers the next statuses in `responses` (then 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.responses: list[int] = []
        self.hold: threading.Event | None = None  # set: each request waits for it
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status = receiver.responses.pop(0) if receiver.responses else 200
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/autoloader"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict]:
        return [json.loads(request["body"]) for request in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Stall:
    """A receiver that reads each POST and never answers (until `close`): the endpoint
    that stalls. Counts the requests and how many were open at once."""

    def __init__(self):
        self.received = 0
        self.open = 0
        self.most_open = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        stall = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with stall.lock:
                    stall.received += 1
                    stall.open += 1
                    stall.most_open = max(stall.most_open, stall.open)
                # Open until the sender gives up (it closes: the next read sees it) or the
                # test ends.
                self.connection.settimeout(0.05)
                while not stall.release.is_set():
                    try:
                        if self.connection.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                with stall.lock:
                    stall.open -= 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/stalled"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def verify(request: dict, secret: str) -> bool:
    """The receiver's side of the signature, as docs/webhooks.md shows it."""
    fields = dict(
        item.split("=", 1) for item in request["headers"]["X-Autoloader-Signature"].split(",")
    )
    expected = hmac.new(
        secret.encode(), fields["t"].encode() + b"." + request["body"], hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.fixture
def receiver(settings):
    receiver = Receiver()
    # The allow-list names host and port: this receiver only, not every local port.
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.server.server_port}"]
    settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 5.0
    yield receiver
    receiver.close()


@pytest.fixture
def stall(settings, receiver):
    """A stalling endpoint, allowed (host:port) beside `receiver`. At the end it lets go,
    and the test waits for every send of this process to end (none writes after it)."""
    from webhooks.delivery import deliveries_wait_idle

    stall = Stall()
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [
        *settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS,
        f"127.0.0.1:{stall.port}",
    ]
    yield stall
    stall.close()
    assert deliveries_wait_idle(60), "webhook sends still under way after the test"


@pytest.fixture
def subscribe(member):
    """`subscribe(url, events, **extra)` -> (admin client, the 201 body with the secret)."""

    def make(url: str, events: list[str], client=None, **extra):
        client = client or member(Role.ADMIN)
        response = client.post(
            "/api/v1/webhooks", {"url": url, "events": events, **extra}, format="json"
        )
        assert response.status_code == 201, response.json()
        return client, response.json()

    return make


@pytest.fixture
def public_dns(monkeypatch):
    """`public_dns({"hooks.example.com": ["93.184.216.34"]})`: names resolve as given
    (through the resolver the checks use; other names resolve for real)."""

    def install(table: dict[str, list[str]]):
        real = destinations.resolve_host

        def fake(host, port):
            return table[host] if host in table else real(host, port)

        monkeypatch.setattr(destinations, "resolve_host", fake)
        return table

    return install
