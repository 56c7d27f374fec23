"""Delivery from the outbox: signed, exactly once per delivery, retried with backoff, dead
after the last attempt, never sent twice at once, sent again after a killed worker's lease,
and re-checked against the destination rules at every attempt."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from ingestions.models import Role
from webhooks import delivery as webhook_delivery
from webhooks.delivery import backoff_seconds, deliver_due, delivery_claim, delivery_send
from webhooks.events import emit
from webhooks.models import EVENTS, DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEvent

from .conftest import verify

pytestmark = pytest.mark.django_db(transaction=True)


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def test_every_event_reaches_the_receiver_once_with_a_valid_signature(tenant, subscribe, receiver):
    _client, body = subscribe(receiver.url, list(EVENTS))

    for event in EVENTS:
        emit(tenant=tenant, event=event, payload={"ingestion_id": "sales", "n": event})
    assert deliver_due() == len(EVENTS)
    assert deliver_due(now=later(3600)) == 0  # nothing is sent twice

    assert [request["headers"]["X-Autoloader-Event"] for request in receiver.requests] == list(
        EVENTS
    )
    for request in receiver.requests:
        assert verify(request, body["secret"])
        assert not verify(request, "whsec_another")
        assert request["path"] == "/hooks/autoloader"
        assert request["headers"]["Content-Type"] == "application/json"
    received = receiver.events()
    assert [item["type"] for item in received] == list(EVENTS)
    assert len({item["id"] for item in received}) == len(EVENTS)
    assert received[0]["tenant"] == "acme" and received[0]["data"]["n"] == "run.started"
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"succeeded"}
    attempt = WebhookAttempt.objects.first()
    assert attempt.succeeded and attempt.status_code == 200 and attempt.response_ms is not None


def test_a_tampered_body_or_timestamp_fails_verification(tenant, subscribe, receiver):
    _client, body = subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={"status": "SUCCESS"})
    deliver_due()
    request = receiver.requests[0]

    assert verify(request, body["secret"])
    assert not verify(
        {**request, "body": request["body"].replace(b"SUCCESS", b"FAILED")}, body["secret"]
    )
    signature = request["headers"]["X-Autoloader-Signature"]
    t = signature.split(",")[0].split("=")[1]
    shifted = signature.replace(f"t={t}", f"t={int(t) + 1}")
    assert not verify({**request, "headers": {"X-Autoloader-Signature": shifted}}, body["secret"])


def test_only_subscribed_active_webhooks_of_the_tenant_get_an_event(
    tenant, other_tenant, member, subscribe, receiver
):
    client, runs = subscribe(receiver.url, ["run.finished"])
    subscribe(receiver.url, ["refresh.failed"], client=client)
    _c, paused = subscribe(receiver.url, ["run.finished"], client=client)
    client.patch(f"/api/v1/webhooks/{paused['id']}", {"active": False}, "json")
    subscribe(receiver.url, ["run.finished"], client=member(Role.ADMIN, other_tenant))

    emit(tenant=tenant, event="run.finished", payload={})
    deliver_due()

    assert WebhookDelivery.objects.get().webhook.public_id == runs["id"]
    assert len(receiver.requests) == 1


def test_no_event_for_a_rolled_back_change(tenant, subscribe, receiver):
    subscribe(receiver.url, ["run.finished"])

    with pytest.raises(RuntimeError), transaction.atomic():
        emit(tenant=tenant, event="run.finished", payload={"run_id": "run-rolled-back"})
        raise RuntimeError("the change failed after the event was written")
    with transaction.atomic():
        emit(tenant=tenant, event="run.finished", payload={"run_id": "run-kept"})
        with pytest.raises(RuntimeError), transaction.atomic():  # an inner savepoint only
            emit(tenant=tenant, event="run.finished", payload={"run_id": "run-inner"})
            raise RuntimeError
    deliver_due()

    assert [item["data"]["run_id"] for item in receiver.events()] == ["run-kept"]
    assert WebhookEvent.objects.count() == 1


def test_an_event_nobody_subscribes_to_writes_nothing(tenant):
    emit(tenant=tenant, event="run.finished", payload={})

    assert not WebhookEvent.objects.exists()
    with pytest.raises(ValueError):
        emit(tenant=tenant, event="run.exploded", payload={})


def test_500s_are_retried_with_backoff_then_succeed(tenant, subscribe, receiver, settings):
    settings.AUTOLOADER_WEBHOOK_BACKOFF_SECONDS = 10
    subscribe(receiver.url, ["run.finished"])
    receiver.responses = [500, 503]
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.last_status_code == 500
    assert 10 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 12.6
    assert deliver_due() == 0  # not due yet
    deliver_due(now=later(13))
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_status_code == 503
    assert 20 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 25.1
    deliver_due(now=later(40))

    delivery.refresh_from_db()
    assert delivery.status == "succeeded" and delivery.attempts == 3
    assert delivery.delivered_at is not None and delivery.last_error == ""
    attempts = list(delivery.attempt_log.values_list("number", "status_code", "succeeded"))
    assert attempts == [(1, 500, False), (2, 503, False), (3, 200, True)]
    assert len(receiver.requests) == 3
    assert len({json.loads(r["body"])["id"] for r in receiver.requests}) == 1  # one event id


def test_backoff_doubles_with_jitter():
    for attempts in (1, 2, 3, 6):
        base = 30 * 2 ** (attempts - 1)
        assert base <= backoff_seconds(attempts) <= base * 1.25
    assert backoff_seconds(40) == 6 * 3600


def test_a_delivery_is_dead_after_the_last_attempt(tenant, subscribe, receiver, settings):
    settings.AUTOLOADER_WEBHOOK_MAX_ATTEMPTS = 3
    subscribe(receiver.url, ["run.finished"])
    receiver.responses = [500] * 10
    emit(tenant=tenant, event="run.finished", payload={})

    for hours in range(5):
        deliver_due(now=later(hours * 3600))

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "dead" and delivery.attempts == 3
    assert delivery.attempt_log.count() == 3 and len(receiver.requests) == 3
    assert delivery.last_error == "HTTP 500"


def test_a_redirect_is_not_followed(tenant, subscribe, receiver):
    subscribe(receiver.url, ["run.finished"])
    receiver.responses = [302]
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.last_error == "HTTP 302"
    assert len(receiver.requests) == 1


def test_an_unreachable_receiver_is_a_failed_attempt_with_a_short_error(
    tenant, subscribe, receiver
):
    subscribe(receiver.url, ["run.finished"])
    receiver.close()
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and delivery.last_status_code is None
    assert "ConnectionRefused" in delivery.last_error and len(delivery.last_error) <= 300


def test_two_deliverers_never_send_one_delivery_at_once(tenant, subscribe, receiver):
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})
    receiver.hold = threading.Event()
    sent_by_first = []

    def first():
        try:
            sent_by_first.append(deliver_due())
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    for _ in range(100):  # the first deliverer is in the middle of its POST
        if receiver.requests:
            break
        threading.Event().wait(0.05)
    assert len(receiver.requests) == 1

    assert deliver_due() == 0  # the second one finds the delivery claimed
    receiver.hold.set()
    thread.join(10)

    assert sent_by_first == [1] and len(receiver.requests) == 1
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_of_two_claims_on_what_both_read_as_due_one_wins(tenant, subscribe, receiver):
    subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})
    delivery = WebhookDelivery.objects.get()
    now = timezone.now()

    first = delivery_claim(pk=delivery.pk, lease=None, now=now)
    second = delivery_claim(pk=delivery.pk, lease=None, now=now)

    assert first is not None and second is None


def test_a_delivery_of_a_killed_worker_is_sent_again_after_its_lease(
    tenant, subscribe, receiver, settings
):
    settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS = 5
    _client, body = subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})
    pk = WebhookDelivery.objects.get().pk
    # A worker claims the delivery and is SIGKILLed before it records anything.
    assert delivery_claim(pk=pk, lease=None, now=timezone.now()) is not None

    assert deliver_due() == 0  # its lease holds: nobody sends it meanwhile
    assert deliver_due(now=later(webhook_delivery.lease_duration() - 1)) == 0
    assert deliver_due(now=later(webhook_delivery.lease_duration() + 1)) == 1

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "succeeded" and delivery.attempts == 2
    attempts = list(delivery.attempt_log.values_list("number", "succeeded", "error"))
    assert attempts[0][:2] == (1, False) and attempts[0][2].startswith("Interrupted")
    assert attempts[1] == (2, True, "")
    assert len(receiver.requests) == 1 and verify(receiver.requests[0], body["secret"])


def test_a_host_that_now_resolves_private_is_refused_at_delivery(
    tenant, subscribe, receiver, public_dns, settings
):
    dns = public_dns({"hooks.example.com": ["93.184.216.34"]})
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = []
    subscribe("http://hooks.example.com/autoloader", ["run.finished"])
    dns["hooks.example.com"] = ["169.254.169.254"]  # DNS rebinding to the metadata address
    sent = []
    real_post = webhook_delivery.post
    webhook_delivery.post = lambda *args, **kwargs: sent.append(args) or 200
    try:
        emit(tenant=tenant, event="run.finished", payload={})
        deliver_due()
    finally:
        webhook_delivery.post = real_post

    delivery = WebhookDelivery.objects.get()
    assert sent == []
    assert delivery.status == "failed"
    assert delivery.last_error.startswith("Refused: The host hooks.example.com resolves to 169.254")


def test_delivery_connects_to_the_checked_address_with_the_original_host(
    tenant, subscribe, receiver, public_dns, settings
):
    # The name resolves (for the check) to the receiver's address; the request carries the
    # name in Host: the connection used the checked address, not a second lookup.
    public_dns({"hooks.example.com": ["127.0.0.1"]})
    port = receiver.server.server_port
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [f"hooks.example.com:{port}"]
    subscribe(f"http://hooks.example.com:{port}/in", ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()

    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example.com:{port}"
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_slack_format_sends_one_line_of_text_still_signed(tenant, subscribe, receiver):
    _client, body = subscribe(receiver.url, ["run.finished"], payload_format="slack")
    emit(
        tenant=tenant,
        event="run.finished",
        payload={
            "run_id": "run-1",
            "ingestion_id": "sales",
            "status": "SUCCESS",
            "files_loaded": 4,
            "files_failed": 0,
        },
    )

    deliver_due()

    assert receiver.events() == [
        {"text": "[acme] run.finished run-1 of sales: SUCCESS (4 files loaded, 0 failed)"}
    ]
    assert verify(receiver.requests[0], body["secret"])


def test_a_webhook_deleted_during_a_send_leaves_nothing_behind(tenant, subscribe, receiver):
    client, body = subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})
    claimed = delivery_claim(pk=WebhookDelivery.objects.get().pk, lease=None, now=timezone.now())
    client.delete(f"/api/v1/webhooks/{body['id']}")

    assert delivery_send(claimed).succeeded  # sent (it was claimed), recorded nowhere

    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()


def test_a_paused_webhook_gets_nothing_new_and_its_queue_waits(tenant, subscribe, receiver):
    client, body = subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={"n": 1})
    client.patch(f"/api/v1/webhooks/{body['id']}", {"active": False}, "json")
    emit(tenant=tenant, event="run.finished", payload={"n": 2})

    assert deliver_due() == 0
    client.patch(f"/api/v1/webhooks/{body['id']}", {"active": True}, "json")
    assert deliver_due() == 1
    assert [item["data"]["n"] for item in receiver.events()] == [1]
