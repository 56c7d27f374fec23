"""Per-user rate limits of executed refresh operations: atomic slots on a database counter.

Only executions count: dry-runs never come here, and a call refused for any reason
(permission, confirmation, plan, a run in progress) gives its slot back. Each user, kind
and fixed window has one `RateLimitCounter` row, shared by every web process; a slot is
taken by one conditional UPDATE (`count = count + 1 WHERE count < limit`), so parallel
requests cannot overshoot the rate the way a read-then-increment on a cache could.

The service holds the slot around the part of a call that can still be refused
(`with rate_limit_slot(...)`): a refusal gives it back, a started operation keeps it.

A batch refresh takes the slots of all its members at once, or none, before any member
starts (`rate_limit_slots`, the same conditional UPDATE by `count` slots); each member then
uses one of them (`SlotReservation.use`), and the slots no member used are given back.
`rate_limit_quota` reads where a user stands, for dry-runs; it writes nothing.
"""

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F

from ingestions.ratelimits import EXPIRED_GRACE, Rate, parse_rate

from .errors import RateLimitedError
from .models import RateLimitCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quota:
    """Where a user stands in the current window of one kind's rate."""

    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def as_response(self) -> dict:
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "resets_at": self.resets_at,
        }


@dataclass
class SlotReservation:
    """Slots of one user and kind taken together (`rate_limit_slots`), used one by one."""

    user_pk: int | None
    kind: str
    key: str | None  # None: the kind is not limited
    unused: int
    used: int = field(default=0)

    @contextmanager
    def use(self, *, user, kind: str) -> Iterator[None]:
        """One of the reserved slots, for the block: kept when it ends normally, back in
        the reservation when it raises, as `rate_limit_slot` does with a fresh slot."""
        if (getattr(user, "pk", None), kind) != (self.user_pk, self.kind) or self.unused < 1:
            raise ValueError(f"No reserved {kind} slot of this user left.")
        self.unused -= 1
        try:
            yield
        except BaseException:
            self.unused += 1
            raise
        self.used += 1


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


@contextmanager
def rate_limit_slots(*, user, kind: str, count: int) -> Iterator[SlotReservation]:
    """Take `count` of `user`'s slots of `kind` at once, or none, for the block (a batch:
    one per member). The block uses them (`SlotReservation.use`); those it did not use
    are given back when it ends, however it ends.

    Raises:
        RateLimitedError: fewer than `count` slots are left in the window (or the rate
            allows fewer than `count` at all); nothing is taken.
    """
    key = _reserve(user=user, kind=kind, count=count)
    reservation = SlotReservation(
        user_pk=getattr(user, "pk", None), kind=kind, key=key, unused=count
    )
    try:
        yield reservation
    finally:
        if key is not None and reservation.unused:
            _give_back(key, count=reservation.unused)


def rate_limit_quota(*, user, kind: str) -> Quota | None:
    """`user`'s slots of `kind` in the current window (None: the kind is not limited).
    Reads only."""
    configured = settings.REFRESH_RATE_LIMITS.get(kind)
    if not configured:
        return None
    rate = parse_rate(configured)
    key, _window_start, window_end = _window(user=user, kind=kind, rate=rate, now=time.time())
    used = RateLimitCounter.objects.filter(key=key).values_list("count", flat=True).first()
    return Quota(
        limit=rate.limit, used=used or 0, resets_at=datetime.fromtimestamp(window_end, UTC)
    )


def _window(*, user, kind: str, rate: Rate, now: float) -> tuple[str, int, int]:
    window_start = int(now // rate.period_seconds) * rate.period_seconds
    key = f"refresh:{kind}:user:{user.pk}:{rate.period_seconds}s:{window_start}"
    return key, window_start, window_start + rate.period_seconds


def _reserve(*, user, kind: str, count: int = 1) -> str | None:
    configured = settings.REFRESH_RATE_LIMITS.get(kind)
    if not configured:
        return None
    rate = parse_rate(configured)
    now = time.time()
    key, window_start, window_end = _window(user=user, kind=kind, rate=rate, now=now)
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
    reserved = RateLimitCounter.objects.filter(key=key, count__lte=rate.limit - count).update(
        count=F("count") + count
    )
    if not reserved:
        retry_after = max(1, math.ceil(window_end - now))
        per_user = f"at most {configured.replace('/', ' per ')} {kind.replace('_', ' ')}"
        if count > rate.limit:
            message = (
                f"Rate limit: {count} {kind.replace('_', ' ')} operations at once exceed "
                f"what one user may start ({per_user} operations per user)."
            )
        elif count > 1:
            message = (
                f"Rate limit: {count} {kind.replace('_', ' ')} operations do not fit in what "
                f"is left ({per_user} operations per user). Retry in {retry_after} s."
            )
        else:
            message = (
                f"Rate limit reached: {per_user} operations per user. Retry in {retry_after} s."
            )
        raise RateLimitedError(message, retry_after=retry_after)
    return key


def _give_back(key: str, *, count: int = 1) -> None:
    try:
        with transaction.atomic():  # a savepoint: a failure here breaks no outer block
            RateLimitCounter.objects.filter(key=key, count__gte=count).update(
                count=F("count") - count
            )
    except DatabaseError:
        # Never hide the error the refused call raised: the slot stays taken until its
        # window ends, which errs on the side of the limit.
        logger.exception("could not give back the rate limit slot %s", key)
