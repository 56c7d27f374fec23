"""Rate limits and concurrency caps on the shared database, for every process at once.

A rate is a counter per key and fixed window; a slot is taken by one conditional UPDATE
(`count = count + 1 WHERE count < limit`), so parallel requests in any number of web
processes cannot overshoot it the way a read-then-increment on a cache could. A concurrency
cap is a set of numbered lease rows per scope, unique together: taking one is an INSERT that
only one caller can win; a lease that outlives its holder (a killed process) expires.

`expensive_read` is the gate in front of what lists a source from a web request (check
source, dry-runs): per-user and per-tenant rates, and a cap on one tenant's listings at
once, so one tenant's heavy previews cannot take the web threads from another.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .errors import RateLimitedError
from .ratelimit_models import ConcurrencyLease, RateCounter

logger = logging.getLogger(__name__)

SECONDS_BY_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# django-ratelimit's syntax, which these settings kept: "5/h", "100/15m".
RATE_SYNTAX = re.compile(r"(?P<limit>\d+)/(?P<multiplier>\d*)(?P<unit>[smhd])[a-z]*")
# Counters of windows that ended this long ago are deleted; the grace keeps the row of a
# request that computed its window just before the boundary.
EXPIRED_GRACE = timedelta(minutes=1)
# How long a caller refused by a concurrency cap is told to wait.
BUSY_RETRY_SECONDS = 2


@dataclass(frozen=True)
class Rate:
    limit: int
    period_seconds: int


def parse_rate(rate: str) -> Rate:
    """'5/h' -> Rate(limit=5, period_seconds=3600); '100/15m' -> Rate(100, 900)."""
    match = RATE_SYNTAX.fullmatch(rate.strip())
    if match is None:
        raise ImproperlyConfigured(f"Rate {rate!r} is not like '5/h' or '100/15m'.")
    multiplier = int(match["multiplier"] or 1)
    return Rate(
        limit=int(match["limit"]), period_seconds=multiplier * SECONDS_BY_UNIT[match["unit"]]
    )


@dataclass(frozen=True)
class Window:
    """Where one key stands in its current window: for previews that show what is left."""

    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


def _window(rate: Rate, now: float) -> tuple[int, int]:
    start = int(now // rate.period_seconds) * rate.period_seconds
    return start, start + rate.period_seconds


def _key(name: str, rate: Rate, window_start: int) -> str:
    return f"{name}:{rate.period_seconds}s:{window_start}"


def rate_window(*, name: str, rate: str) -> Window:
    """How much of `name`'s current window is used (reads only)."""
    parsed = parse_rate(rate)
    start, end = _window(parsed, time.time())
    used = (
        RateCounter.objects.filter(key=_key(name, parsed, start))
        .values_list("count", flat=True)
        .first()
    )
    return Window(limit=parsed.limit, used=used or 0, resets_at=datetime.fromtimestamp(end, UTC))


def rate_reserve(*, name: str, rate: str, refusal: str, count: int = 1) -> str:
    """Take `count` slots of `name` in the current window of `rate`, all or none.

    Returns:
        The counter's key, for `rate_give_back`.

    Raises:
        RateLimitedError: fewer than `count` slots are left; `retry_after` says for how long,
            and the message is `refusal` followed by the wait.
    """
    parsed = parse_rate(rate)
    now = time.time()
    start, end = _window(parsed, now)
    key = _key(name, parsed, start)
    # get_or_create absorbs the race of two requests creating the window's row at once
    # (the loser's INSERT fails on the unique key inside a savepoint, then it reads the row).
    _, created = RateCounter.objects.get_or_create(
        key=key,
        defaults={
            "window_start": datetime.fromtimestamp(start, UTC),
            "expires_at": datetime.fromtimestamp(end, UTC),
        },
    )
    if created:  # once per window and key: drop the rows nothing will read again
        expired_before = datetime.fromtimestamp(now, UTC) - EXPIRED_GRACE
        RateCounter.objects.filter(expires_at__lt=expired_before).delete()
    reserved = RateCounter.objects.filter(key=key, count__lte=parsed.limit - count).update(
        count=F("count") + count
    )
    if not reserved:
        retry_after = max(1, math.ceil(end - now))
        raise RateLimitedError(f"{refusal} Retry in {retry_after} s.", retry_after=retry_after)
    return key


def rate_give_back(key: str, count: int = 1) -> None:
    """Return slots taken by a call that was then refused for another reason."""
    try:
        with transaction.atomic():  # a savepoint: a failure here breaks no outer block
            RateCounter.objects.filter(key=key, count__gte=count).update(count=F("count") - count)
    except DatabaseError:
        # Never hide the error the refused call raised: the slot stays taken until its
        # window ends, which errs on the side of the limit.
        logger.exception("could not give back the rate limit slot %s", key)


@contextmanager
def concurrency_slot(*, scope: str, limit: int, lease_seconds: float, refusal: str):
    """Hold one of `limit` numbered slots of `scope` for the block.

    Raises:
        RateLimitedError: every slot is held (by live holders); retry in a moment.
    """
    holder = uuid.uuid4().hex
    now = timezone.now()
    ConcurrencyLease.objects.filter(scope=scope, expires_at__lt=now).delete()
    taken = None
    for slot in range(limit):
        try:
            with transaction.atomic():
                ConcurrencyLease.objects.create(
                    scope=scope,
                    slot=slot,
                    holder=holder,
                    expires_at=now + timedelta(seconds=lease_seconds),
                )
        except IntegrityError:
            continue
        taken = slot
        break
    if taken is None:
        raise RateLimitedError(
            f"{refusal} Retry in {BUSY_RETRY_SECONDS} s.", retry_after=BUSY_RETRY_SECONDS
        )
    try:
        yield
    finally:
        ConcurrencyLease.objects.filter(scope=scope, slot=taken, holder=holder).delete()


@contextmanager
def expensive_read(*, tenant, actor, counted: bool = True) -> Iterator[None]:
    """The gate in front of a listing made for a web request (check source, dry-runs).

    Per-user and per-tenant rates (`AUTOLOADER_PREVIEW_RATE_LIMITS`: "user", "tenant") and at
    most `AUTOLOADER_LISTINGS_PER_TENANT` listings of one tenant at once. A request counts
    once against the rates: a batch preview takes its rate slot with `preview_rate` and
    gates each member's listing with `counted=False`. Runs and schedule firings in the worker
    never come here: they are bounded by one active run per ingestion.

    Raises:
        RateLimitedError: a rate is used up, or the tenant's listings are all busy.
    """
    taken = preview_rate(tenant=tenant, actor=actor) if counted else []
    try:
        limit = settings.AUTOLOADER_LISTINGS_PER_TENANT
        if not limit:
            yield
            return
        with concurrency_slot(
            scope=f"listing:tenant:{tenant.pk}",
            limit=limit,
            lease_seconds=settings.AUTOLOADER_LISTING_MAX_SECONDS + 30,
            refusal=(
                f"Your tenant already has {limit} source listings running "
                "(AUTOLOADER_LISTINGS_PER_TENANT)."
            ),
        ):
            yield
    except RateLimitedError:
        for key in taken:
            rate_give_back(key)
        raise


def preview_rate(*, tenant, actor) -> list[str]:
    """Count one preview request of `actor` in `tenant`; returns the counters' keys.

    Raises:
        RateLimitedError: the actor's or the tenant's previews are used up (none is taken).
    """
    rates = settings.AUTOLOADER_PREVIEW_RATE_LIMITS
    taken: list[str] = []
    try:
        if rates.get("user") and getattr(actor, "pk", None) is not None:
            taken.append(
                rate_reserve(
                    name=f"preview:user:{actor.pk}",
                    rate=rates["user"],
                    refusal=(
                        f"Rate limit reached: at most {_words(rates['user'])} previews and "
                        "source checks per user (AUTOLOADER_PREVIEW_RATE_PER_USER)."
                    ),
                )
            )
        if rates.get("tenant"):
            taken.append(
                rate_reserve(
                    name=f"preview:tenant:{tenant.pk}",
                    rate=rates["tenant"],
                    refusal=(
                        f"Rate limit reached: at most {_words(rates['tenant'])} previews and "
                        "source checks per tenant (AUTOLOADER_PREVIEW_RATE_PER_TENANT)."
                    ),
                )
            )
    except RateLimitedError:
        for key in taken:
            rate_give_back(key)
        raise
    return taken


def _words(rate: str) -> str:
    """'30/m' -> '30 per m'."""
    return rate.replace("/", " per ")
