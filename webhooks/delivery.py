"""Sending the outbox: the worker's `deliveries` thread calls `deliver_due` every few seconds.

A delivery is claimed with a conditional UPDATE and a lease, so two workers never send it
at once, and one whose worker was killed mid-send is sent again once the lease expires:
delivery is at least once, and receivers dedupe on the event's `id`. Each attempt is
recorded; failures are retried with exponential backoff and jitter, up to
AUTOLOADER_WEBHOOK_MAX_ATTEMPTS, then the delivery is `dead`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ingestions.secrets import decrypt_secret

from .destinations import Destination, destination_check
from .errors import WebhookUrlNotAllowedError
from .models import DeliveryStatus, PayloadFormat, WebhookAttempt, WebhookDelivery

logger = logging.getLogger("webhooks.delivery")

EVENT_HEADER = "X-Autoloader-Event"
SIGNATURE_HEADER = "X-Autoloader-Signature"
DELIVERY_HEADER = "X-Autoloader-Delivery"
USER_AGENT = "Autoloader-Webhooks/1"
# Deliveries one pass takes at most (the next pass takes the rest).
BATCH = 50
ERROR_LENGTH = 300
# A claim lasts the send's timeout twice (connecting, then waiting for the answer) and
# this, for the database writes around it.
LEASE_MARGIN_SECONDS = 5
MAX_BACKOFF_SECONDS = 6 * 3600


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Autoloader-Signature` value: `t=<timestamp>,v1=<hex HMAC-SHA256>` of
    `"<timestamp>.<body>"` with the webhook's secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def body_of(delivery: WebhookDelivery) -> bytes:
    """What is POSTed: the event as JSON, or a Slack-compatible `{"text": ...}`."""
    event = delivery.event
    envelope = {
        "id": event.public_id,
        "type": event.event,
        "created_at": event.created_at.isoformat(),
        "tenant": event.tenant.slug,
        "data": event.payload,
    }
    if delivery.webhook.payload_format == PayloadFormat.SLACK:
        envelope = {"text": summary(envelope)}
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


def summary(envelope: dict) -> str:
    """One line for a chat channel: `[acme] run.finished run-… of ing-…: SUCCESS`."""
    data = envelope["data"]
    subject = data.get("operation_id") or data.get("run_id") or data.get("path") or ""
    parts = [f"[{envelope['tenant']}] {envelope['type']}"]
    if subject:
        parts.append(subject)
    if data.get("ingestion_id"):
        parts.append(f"of {data['ingestion_id']}")
    line = " ".join(parts)
    if data.get("status"):
        line += f": {data['status']}"
    if "files_loaded" in data:
        line += f" ({data['files_loaded']} files loaded, {data['files_failed']} failed)"
    if data.get("error"):
        line += f" — {data['error'][:200]}"
    if data.get("message"):
        line += f": {data['message']}"
    return line


def deliver_due(*, now=None, limit: int = BATCH) -> int:
    """Send the deliveries that are due; returns how many this pass attempted."""
    now = now or timezone.now()
    due = (
        WebhookDelivery.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED],
            next_attempt_at__lte=now,
            webhook__active=True,  # a paused webhook's deliveries wait for it
        )
        .order_by("next_attempt_at", "id")
        .values_list("pk", "claimed_until")[:limit]
    )
    attempted = 0
    for pk, lease in list(due):
        claim = delivery_claim(pk=pk, lease=lease, now=now)
        if claim is not None:
            delivery_send(claim)
            attempted += 1
    return attempted


def delivery_claim(*, pk: int, lease, now) -> WebhookDelivery | None:
    """Take one delivery for this process, if nobody took it since it was read as due.

    `lease` is the `claimed_until` it was read with: the UPDATE only matches that row in
    that state, so of two workers that read it, one claims it. A lease that had expired
    means a worker died mid-send: that attempt is recorded as interrupted.
    """
    token = uuid.uuid4().hex
    lease_seconds = lease_duration()
    claimed = WebhookDelivery.objects.filter(
        Q(claimed_until__isnull=True) if lease is None else Q(claimed_until=lease),
        pk=pk,
        status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED],
        next_attempt_at__lte=now,
    ).update(
        claimed_by=token,
        claimed_until=now + timedelta(seconds=lease_seconds),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("event__tenant", "webhook").get(pk=pk)
    if lease is not None:
        # The attempt the dead worker made (its number was counted when it claimed it).
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts - 1,
            started_at=lease - timedelta(seconds=lease_seconds),
            error="Interrupted: the worker stopped during the attempt; sent again.",
        )
    return delivery


def lease_duration() -> float:
    """How long a claim holds a delivery (seconds)."""
    return 2 * settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    status_code: int | None = None
    error: str = ""
    response_ms: int | None = None


def delivery_send(delivery: WebhookDelivery) -> Outcome:
    """Make one attempt at a claimed delivery and record it."""
    started = timezone.now()
    outcome = _attempt(delivery)
    finished = timezone.now()
    changes = {
        "claimed_by": "",
        "claimed_until": None,
        "last_status_code": outcome.status_code,
        "last_error": outcome.error[:ERROR_LENGTH],
        "last_response_ms": outcome.response_ms,
    }
    if outcome.succeeded:
        changes.update(status=DeliveryStatus.SUCCEEDED, delivered_at=finished)
    elif delivery.attempts >= settings.AUTOLOADER_WEBHOOK_MAX_ATTEMPTS:
        changes.update(status=DeliveryStatus.DEAD)
    else:
        changes.update(
            status=DeliveryStatus.FAILED,
            next_attempt_at=finished + timedelta(seconds=backoff_seconds(delivery.attempts)),
        )
    with transaction.atomic():
        # Only while the claim is still ours (and the webhook was not deleted meanwhile): a
        # worker that lost its lease records nothing more; the next one logs the attempt
        # as interrupted.
        ours = WebhookDelivery.objects.filter(pk=delivery.pk, claimed_by=delivery.claimed_by)
        if ours.update(**changes):
            WebhookAttempt.objects.create(
                delivery=delivery,
                number=delivery.attempts,
                started_at=started,
                succeeded=outcome.succeeded,
                status_code=outcome.status_code,
                error=outcome.error[:ERROR_LENGTH],
                response_ms=outcome.response_ms,
            )
    logger.info(
        "webhook delivery %s (%s to %s) attempt %s: %s",
        delivery.pk,
        delivery.event.event,
        delivery.webhook.public_id,
        delivery.attempts,
        "ok" if outcome.succeeded else outcome.error,
    )
    return outcome


def backoff_seconds(attempts: int) -> float:
    """base * 2^(attempts-1), plus up to 25 % jitter (receivers that failed together do not
    all get their retries at once), at most six hours."""
    delay = settings.AUTOLOADER_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempts - 1)
    return min(delay * (1 + random.uniform(0, 0.25)), MAX_BACKOFF_SECONDS)  # noqa: S311 - jitter


def _attempt(delivery: WebhookDelivery) -> Outcome:
    webhook = delivery.webhook
    try:
        # Checked again now: a host that resolved public at subscription may not any more.
        destination = destination_check(webhook.url)
        secret = decrypt_secret(webhook.secret_encrypted)
    except WebhookUrlNotAllowedError as refused:
        return Outcome(succeeded=False, error=f"Refused: {refused}")
    except ImproperlyConfigured:
        return Outcome(succeeded=False, error="The webhook's secret cannot be decrypted.")
    body = body_of(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event.event,
        DELIVERY_HEADER: str(delivery.pk),
        SIGNATURE_HEADER: sign(secret=secret, timestamp=int(time.time()), body=body),
    }
    started = time.monotonic()
    try:
        status_code = post(destination, body=body, headers=headers)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(
            succeeded=False,
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            response_ms=_elapsed_ms(started),
        )
    response_ms = _elapsed_ms(started)
    if 200 <= status_code < 300:
        return Outcome(succeeded=True, status_code=status_code, response_ms=response_ms)
    # Redirects are not followed: the checked destination is the only one reached.
    return Outcome(
        succeeded=False,
        status_code=status_code,
        error=f"HTTP {status_code}",
        response_ms=response_ms,
    )


def post(destination: Destination, *, body: bytes, headers: dict) -> int:
    """POST `body` to the checked address of `destination`; returns the status code.

    http.client (what urllib uses underneath) with the socket opened to the address that
    was checked, the Host header and TLS name from the URL: a DNS answer that changed since
    the check (rebinding) is never used. Redirects are not followed.
    """
    timeout = settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS
    connection_class = (
        _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    )
    connection = connection_class(
        destination.host, destination.port, address=destination.address, timeout=timeout
    )
    try:
        connection.request("POST", destination.target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)  # a little of the body, so the connection closes cleanly
        return response.status
    finally:
        connection.close()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the URL's host name, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
