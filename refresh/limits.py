"""Per-user rate limits of executed refresh operations: atomic slots on a database counter.

Only executions count: dry-runs never come here, and a call refused for any reason
(permission, confirmation, plan, a run in progress) gives its slot back. Each user, kind
and fixed window has one `RateLimitCounter` row, shared by every web process; a slot is
taken by one conditional UPDATE (`count = count + 1 WHERE count < limit`), so parallel
requests cannot overshoot the rate the way a read-then-increment on a cache could.

The service holds the slot around the part of a call that can still be refused
(`with rate_limit_slot(...)`): a refusal gives it back, a started operation keeps it.
"""

import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.models import F

from .errors import RateLimitedError
from .models import RateLimitCounter

logger = logging.getLogger(__name__)

SECONDS_BY_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The settings' syntax (django-ratelimit's, which this module replaced): "5/h", "100/15m".
RATE_SYNTAX = re.compile(r"(?P<limit>\d+)/(?P<multiplier>\d*)(?P<unit>[smhd])[a-z]*")
# Counters of windows that ended this long ago are deleted; the grace keeps the row of a
# request that computed its window just before the boundary.
EXPIRED_GRACE = timedelta(minutes=1)


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


@contextmanager
def rate_limit_slot(*, user, kind: str) -> Iterator[None]:
    """Take one of `user`'s slots of `kind` in the current window, atomically, for the block.

    The slot is kept when the block ends normally (the operation started) and given back
    when it raises (the call was refused: plan, run in progress, ...). A kind without a rate
    in `settings.REFRESH_RATE_LIMITS` is not limited.

    Raises:
        RateLimitedError: every slot of the window is taken; `retry_after` says for how long.
    """
    key = _reserve(user=user, kind=kind)
    try:
        yield
    except BaseException:
        if key is not None:
            _give_back(key)
        raise


def _reserve(*, user, kind: str) -> str | None:
    configured = settings.REFRESH_RATE_LIMITS.get(kind)
    if not configured:
        return None
    rate = parse_rate(configured)
    now = time.time()
    window_start = int(now // rate.period_seconds) * rate.period_seconds
    window_end = window_start + rate.period_seconds
    key = f"refresh:{kind}:user:{user.pk}:{rate.period_seconds}s:{window_start}"
    # get_or_create absorbs the race of two requests creating the window's row at once
    # (the loser's INSERT fails on the unique key inside a savepoint, then it reads the row).
    _, created = RateLimitCounter.objects.get_or_create(
        key=key,
        defaults={
            "window_start": datetime.fromtimestamp(window_start, UTC),
            "expires_at": datetime.fromtimestamp(window_end, UTC),
        },
    )
    if created:  # once per window and key: drop the rows nothing will read again
        expired_before = datetime.fromtimestamp(now, UTC) - EXPIRED_GRACE
        RateLimitCounter.objects.filter(expires_at__lt=expired_before).delete()
    reserved = RateLimitCounter.objects.filter(key=key, count__lt=rate.limit).update(
        count=F("count") + 1
    )
    if not reserved:
        retry_after = max(1, math.ceil(window_end - now))
        raise RateLimitedError(
            f"Rate limit reached: at most {configured.replace('/', ' per ')} "
            f"{kind.replace('_', ' ')} operations per user. Retry in {retry_after} s.",
            retry_after=retry_after,
        )
    return key


def _give_back(key: str) -> None:
    try:
        with transaction.atomic():  # a savepoint: a failure here breaks no outer block
            RateLimitCounter.objects.filter(key=key, count__gt=0).update(count=F("count") - 1)
    except DatabaseError:
        # Never hide the error the refused call raised: the slot stays taken until its
        # window ends, which errs on the side of the limit.
        logger.exception("could not give back the rate limit slot %s", key)
