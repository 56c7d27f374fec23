"""One tenant cannot jam webhooks: its stalled receiver holds at most its own slots (per
tenant, per host:port) for at most the send timeout, the others' deliveries go out
meanwhile, and a tenant's backlog does not fill a pass (round-robin across tenants)."""

import http.server
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ingestions.models import Role
from webhooks.delivery import TENANT_BACKLOG, deliver_due, deliveries_wait_idle
from webhooks.events import emit
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_stalled_tenant_does_not_delay_another_tenants_delivery(
    tenant, other_tenant, member, subscribe, receiver, stall, settings
):
    settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 1.0
    globex = member(Role.ADMIN, other_tenant)
    for _ in range(5):  # the five webhooks to an endpoint that never answers
        subscribe(stall.url, ["run.finished"], client=globex)
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=other_tenant, event="run.finished", payload={})  # globex's come first
    emit(tenant=tenant, event="run.finished", payload={})

    started = time.monotonic()
    attempted = deliver_due()
    elapsed = time.monotonic() - started

    acme = WebhookDelivery.objects.get(webhook__tenant=tenant)
    assert acme.status == DeliveryStatus.SUCCEEDED and len(receiver.requests) == 1
    # acme's was delivered while globex's connections were still open.
    stalled = WebhookAttempt.objects.filter(delivery__webhook__tenant=other_tenant)
    assert stalled.exists()
    for attempt in stalled:
        assert attempt.error.startswith("TimeoutError")
        assert acme.delivered_at < attempt.started_at + timedelta(milliseconds=attempt.response_ms)
    # One endpoint, one send at a time; what the pass could not start waits, unclaimed, for
    # the next one: the pass lasted about one timeout, not five.
    assert stall.most_open == 1 and stall.received == stalled.count()
    assert attempted == 1 + stalled.count()
    untouched = WebhookDelivery.objects.filter(webhook__tenant=other_tenant, attempts=0)
    assert untouched.count() == 5 - stalled.count() >= 3
    assert not untouched.exclude(claimed_until=None).exists()
    assert elapsed < 4 * settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS


def test_a_tenant_holds_at_most_its_slots_and_the_worker_pass_does_not_wait(
    tenant, other_tenant, member, subscribe, receiver, stall, settings, public_dns
):
    # Three names of the stalling endpoint: three endpoints of one tenant.
    names = ["b1.example.com", "b2.example.com", "b3.example.com"]
    public_dns({name: ["127.0.0.1"] for name in names})
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [
        *settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS,
        *(f"{name}:{stall.port}" for name in names),
    ]
    settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 30.0  # they stay open for the whole test
    settings.AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT = 2
    globex = member(Role.ADMIN, other_tenant)
    for name in names:
        subscribe(f"http://{name}:{stall.port}/in", ["run.finished"], client=globex)
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=other_tenant, event="run.finished", payload={})

    assert deliver_due(wait=False) == 3  # the worker's pass queues and returns at once
    wait_until(lambda: stall.open == 2, 30, "globex's two sends")
    emit(tenant=tenant, event="run.finished", payload={"n": 1})
    assert deliver_due(wait=False) == 1  # globex's third is queued already, not again

    acme = WebhookDelivery.objects.filter(webhook__tenant=tenant)
    wait_until(lambda: acme.get().status == DeliveryStatus.SUCCEEDED, 30, "acme's delivery")
    # Delivered while globex's two sends were open and its third waited for their slots.
    assert stall.open == 2 and stall.received == 2
    assert WebhookDelivery.objects.filter(webhook__tenant=other_tenant, attempts=0).count() == 1

    stall.release.set()  # the receiver hangs up: those attempts fail, the third one goes
    assert deliveries_wait_idle(60)
    globex_deliveries = WebhookDelivery.objects.filter(webhook__tenant=other_tenant)
    assert sorted(globex_deliveries.values_list("attempts", flat=True)) == [1, 1, 1]
    assert set(globex_deliveries.values_list("status", flat=True)) == {DeliveryStatus.FAILED}
    assert stall.most_open == 2 and stall.received == 3


def test_a_stalled_tenants_backlog_is_bounded_and_others_still_queue(
    tenant, other_tenant, member, subscribe, receiver, stall, settings
):
    settings.AUTOLOADER_WEBHOOKS_PER_TENANT = 40
    settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 30.0  # the first send stays open throughout
    globex = member(Role.ADMIN, other_tenant)
    for _ in range(TENANT_BACKLOG + 10):
        subscribe(stall.url, ["run.finished"], client=globex)
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=other_tenant, event="run.finished", payload={})
    emit(tenant=tenant, event="run.finished", payload={"n": 1})

    assert deliver_due(wait=False) == TENANT_BACKLOG + 1  # globex's backlog is full
    emit(tenant=tenant, event="run.finished", payload={"n": 2})
    assert deliver_due(wait=False) == 1  # acme's new one only

    acme = WebhookDelivery.objects.filter(webhook__tenant=tenant)
    wait_until(
        lambda: set(acme.values_list("status", flat=True)) == {DeliveryStatus.SUCCEEDED},
        30,
        "acme's deliveries",
    )
    assert sorted(item["data"]["n"] for item in receiver.events()) == [1, 2]
    assert stall.received == 1 and stall.open == 1


def test_a_pass_takes_every_tenant_in_turn(tenant, other_tenant, member, subscribe, receiver):
    globex = member(Role.ADMIN, other_tenant)
    for _ in range(8):
        subscribe(receiver.url, ["run.finished"], client=globex)
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=other_tenant, event="run.finished", payload={})  # 8 older deliveries
    emit(tenant=tenant, event="run.finished", payload={})

    assert deliver_due(limit=3) == 3

    assert WebhookDelivery.objects.get(webhook__tenant=tenant).status == DeliveryStatus.SUCCEEDED
    sent = WebhookDelivery.objects.filter(webhook__tenant=other_tenant, attempts=1)
    assert sent.count() == 2
    assert {item["tenant"] for item in receiver.events()} == {"acme", "globex"}


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_at_the_timeout(
    tenant, subscribe, receiver, settings
):
    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            for char in b"HTTP/1.1 200 " + b"O" * 400:  # each byte well within the timeout
                try:
                    self.wfile.write(bytes([char]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_port
        settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]
        settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 1.0
        subscribe(f"http://127.0.0.1:{port}/slow", ["run.finished"])
        emit(tenant=tenant, event="run.finished", payload={})

        deliver_due()
    finally:
        server.shutdown()
        server.server_close()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "TimeoutError: no answer within 1 s"


def test_ten_concurrent_passes_send_each_delivery_once(tenant, subscribe, receiver):
    client, _body = subscribe(receiver.url, ["run.finished"])
    for _ in range(4):
        subscribe(receiver.url, ["run.finished"], client=client)
    emit(tenant=tenant, event="run.finished", payload={})
    counts, errors = [], []
    barrier = threading.Barrier(10)

    def deliverer():
        try:
            barrier.wait()
            counts.append(deliver_due())
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliverer) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == [] and sum(counts) == 5
    assert len(receiver.requests) == 5
    assert len({request["headers"]["X-Autoloader-Delivery"] for request in receiver.requests}) == 5
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {
        (DeliveryStatus.SUCCEEDED, 1)
    }
    assert WebhookAttempt.objects.count() == 5
    assert deliver_due(now=timezone.now() + timedelta(hours=1)) == 0
