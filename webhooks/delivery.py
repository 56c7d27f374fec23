"""Sending the outbox: the worker's `deliveries` thread calls `deliver_due` every few seconds.

A delivery is claimed with a conditional UPDATE and a lease, so two workers never send it
at once, and one whose worker was killed mid-send is sent again once the lease expires:
delivery is at least once, and receivers dedupe on the event's `id`. Each attempt is
recorded; failures are retried with exponential backoff and jitter, up to
AUTOLOADER_WEBHOOK_MAX_ATTEMPTS, then the delivery is `dead`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client as http_client
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from ingestions.secrets import decrypt_secret

from .destinations import SCHEMES, Destination, destination_check
from .errors import WebhookUrlNotAllowedError
from .models import DeliveryStatus, PayloadFormat, WebhookAttempt, WebhookDelivery

logger = logging.getLogger("webhooks.delivery")

EVENT_HEADER = "X-Autoloader-Event"
SIGNATURE_HEADER = "X-Autoloader-Signature"
DELIVERY_HEADER = "X-Autoloader-Delivery"
USER_AGENT = "Autoloader-Webhooks/1"
# Deliveries one pass takes at most (the next pass takes the rest).
BATCH = 50
# Deliveries of one tenant queued or in flight in one process at most: a tenant whose
# receiver stalls does not fill the queue (nor the query that skips what is queued).
TENANT_BACKLOG = 20
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


def deliver_due(*, now=None, limit: int = BATCH, wait: bool = True) -> int:
    """Send the deliveries that are due; returns how many this pass attempted (or, with
    `wait=False`, how many it queued).

    At most `limit` are taken, round-robin across tenants (each tenant's oldest first, then
    each one's second...), so one tenant's backlog does not fill the pass (nor, past
    TENANT_BACKLOG queued or in flight, the process's queue). They are sent
    concurrently by the process's dispatcher, at most AUTOLOADER_WEBHOOK_DELIVERY_THREADS at
    once, of which at most AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT for one tenant and
    _PER_ENDPOINT for one host:port: a receiver that never answers holds its own slots for
    the timeout, not the other tenants'. A slot that frees takes the next queued delivery.

    `wait=True` (tests, scripts): returns when the pass is over. No send starts after
    the send timeout has elapsed since the pass began (what is left waits for the next
    pass, unclaimed), so a pass lasts about one timeout, two at worst, whatever one tenant
    queued. `wait=False` (the worker's deliveries thread): returns at once; the sends go on
    while later passes queue more, so a stalled endpoint never delays another tenant's
    deliveries.
    """
    start_before = time.monotonic() + settings.AUTOLOADER_WEBHOOK_TIMEOUT_SECONDS
    items = _due_fairly(now=now, limit=limit, backlog=_DISPATCHER.backlog())
    taken = _DISPATCHER.submit(items, now=now, start_before=start_before if wait else None)
    if not wait:
        return len(taken)
    return _DISPATCHER.wait(taken)


def deliver_due_in_background() -> int:
    """The worker's pass: queue what is due and return; the sends go on meanwhile."""
    return deliver_due(wait=False)


def deliveries_wait_idle(timeout: float) -> bool:
    """Wait until this process sends and queues nothing (True), at most `timeout` seconds."""
    return _DISPATCHER.wait_idle(timeout)


def _due_fairly(*, now, limit: int, backlog: dict[int, int]) -> list[_Item]:
    """Up to `limit` due deliveries, round-robin across tenants, oldest first within each,
    none already in `backlog` (pk -> tenant: queued or in flight in this process), at most
    TENANT_BACKLOG per tenant with those."""
    now_or_real = now or timezone.now()
    rank = Window(
        RowNumber(),
        partition_by=[F("webhook__tenant_id")],
        order_by=[F("next_attempt_at").asc(), F("id").asc()],
    )
    due = (
        WebhookDelivery.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now_or_real),
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED],
            next_attempt_at__lte=now_or_real,
            webhook__active=True,  # a paused webhook's deliveries wait for it
        )
        .annotate(rank=rank)
        .order_by("rank", "next_attempt_at", "id")
        # What is in the backlog is among each tenant's first: this many rows hold `limit`
        # others if there are.
        .values_list("pk", "claimed_until", "webhook__tenant_id", "webhook__url")[
            : limit + len(backlog)
        ]
    )
    per_tenant = Counter(backlog.values())
    items = []
    for pk, lease, tenant_id, url in due:
        if len(items) == limit:
            break
        if pk in backlog or per_tenant[tenant_id] >= TENANT_BACKLOG:
            continue
        per_tenant[tenant_id] += 1
        items.append(_Item(pk=pk, lease=lease, tenant_id=tenant_id, endpoint=endpoint_of(url)))
    return items


def endpoint_of(url: str) -> str:
    """The host:port a URL reaches, what the per-endpoint bound counts."""
    try:
        parts = urlsplit(url)
        port = parts.port or SCHEMES.get(parts.scheme.lower(), 0)
    except ValueError:
        return url
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclass(eq=False)
class _Item:
    """A due delivery as the pass read it (`lease`: its `claimed_until` then)."""

    pk: int
    lease: object
    tenant_id: int
    endpoint: str
    now: object = None  # the pass's `now` when one was given (tests); else the claim's time
    start_before: float | None = None  # monotonic: not started by then, left for a next pass
    attempted: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class _Dispatcher:
    """Sends queued deliveries, each in a thread of its own, within the bounds (see
    `deliver_due`). One per process; its state is guarded by one lock."""

    def __init__(self):
        self._lock = threading.Condition()
        self._queues: dict[int, deque[_Item]] = {}  # tenant -> its items, oldest first
        self._by_tenant: Counter[int] = Counter()  # sends in flight
        self._by_endpoint: Counter[str] = Counter()
        self._running = 0
        self._known: dict[int, int] = {}  # pk -> tenant, queued or in flight

    def backlog(self) -> dict[int, int]:
        with self._lock:
            return dict(self._known)

    def submit(self, items: list[_Item], *, now, start_before: float | None) -> list[_Item]:
        with self._lock:
            taken = [item for item in items if item.pk not in self._known]
            for item in taken:
                item.now, item.start_before = now, start_before
                self._known[item.pk] = item.tenant_id
                self._queues.setdefault(item.tenant_id, deque()).append(item)
            self._pump()
            return taken

    def wait(self, items: list[_Item]) -> int:
        """Wait for `items`; those not started by their `start_before` are dropped."""
        for item in items:
            if not item.done.wait(max(item.start_before - time.monotonic(), 0)):
                with self._lock:
                    self._drop_if_queued(item)
                item.done.wait()  # started: its send ends within its timeout
        return sum(item.attempted for item in items)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._known, timeout)

    def _drop_if_queued(self, item: _Item) -> None:
        queue = self._queues.get(item.tenant_id)
        if queue is not None and item in queue:
            queue.remove(item)
            if not queue:
                del self._queues[item.tenant_id]
            self._known.pop(item.pk, None)
            item.done.set()
            self._lock.notify_all()

    def _pump(self) -> None:
        """Start what the bounds allow, one per tenant in turn (called with the lock held)."""
        threads = max(settings.AUTOLOADER_WEBHOOK_DELIVERY_THREADS, 1)
        per_tenant = max(settings.AUTOLOADER_WEBHOOK_CONCURRENCY_PER_TENANT, 1)
        per_endpoint = max(settings.AUTOLOADER_WEBHOOK_CONCURRENCY_PER_ENDPOINT, 1)
        now = time.monotonic()
        for queue in list(self._queues.values()):  # what a finished pass left: not started
            for item in [each for each in queue if (each.start_before or now) < now]:
                self._drop_if_queued(item)
        started = True
        while started and self._running < threads:
            started = False
            for tenant_id in list(self._queues):
                if self._running >= threads:
                    break
                if self._by_tenant[tenant_id] >= per_tenant:
                    continue
                queue = self._queues[tenant_id]
                item = next(
                    (each for each in queue if self._by_endpoint[each.endpoint] < per_endpoint),
                    None,
                )
                if item is None:
                    continue
                queue.remove(item)
                del self._queues[tenant_id]
                if queue:  # to the back of the line: the other tenants go next
                    self._queues[tenant_id] = queue
                self._start(item)
                started = True

    def _start(self, item: _Item) -> None:
        self._running += 1
        self._by_tenant[item.tenant_id] += 1
        self._by_endpoint[item.endpoint] += 1
        try:
            threading.Thread(
                target=self._send, args=(item,), name=f"webhook-delivery-{item.pk}", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: the next pass takes it again
            logger.warning("no thread for webhook delivery %s", item.pk, exc_info=True)
            self._release(item)

    def _release(self, item: _Item) -> None:
        self._running -= 1
        self._by_tenant[item.tenant_id] -= 1
        self._by_endpoint[item.endpoint] -= 1
        self._known.pop(item.pk, None)
        item.done.set()
        self._lock.notify_all()

    def _send(self, item: _Item) -> None:
        # A daemon thread: a worker that exits mid-send leaves a lease that expires, and the
        # delivery is sent again (at least once), as after a kill.
        try:
            claim = delivery_claim(pk=item.pk, lease=item.lease, now=item.now or timezone.now())
            if claim is not None:
                item.attempted = True
                delivery_send(claim)
        except Exception:  # a database error must not lose the slot
            logger.warning("webhook delivery %s failed", item.pk, exc_info=True)
        finally:
            connection.close()  # this thread's own connection
            with self._lock:
                self._release(item)
                self._pump()


_DISPATCHER = _Dispatcher()


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
        webhook__active=True,  # paused while it waited in the queue
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
    except (OSError, http_client.HTTPException) as exc:
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
    http = connection_class(
        destination.host, destination.port, address=destination.address, timeout=timeout
    )
    # The socket's timeout bounds each wait; this bounds the whole attempt, so a receiver
    # that answers a byte at a time holds a sender no longer than one that never answers.
    expired = threading.Event()
    watchdog = threading.Timer(timeout, _abort, args=(http, expired))
    watchdog.daemon = True
    watchdog.start()
    try:
        http.request("POST", destination.target, body=body, headers=headers)
        response = http.getresponse()
        response.read(64 * 1024)  # a little of the body, so the connection closes cleanly
        return response.status
    except (OSError, http_client.HTTPException) as exc:
        if expired.is_set():
            raise TimeoutError(f"no answer within {timeout:g} s") from exc
        raise
    finally:
        watchdog.cancel()
        http.close()


def _abort(http: http_client.HTTPConnection, expired: threading.Event) -> None:
    """The attempt's time is up: shut its socket, which ends any read or write under way."""
    expired.set()
    sock = http.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


class _PinnedHTTPConnection(http_client.HTTPConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http_client.HTTPSConnection):
    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the URL's host name, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
