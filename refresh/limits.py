"""Per-user rate limits of executed refresh operations, on the shared cache (django-ratelimit).

Only executions count: dry-runs never come here, and a call refused for any reason
(permission, confirmation, plan, a run in progress) does not use up the quota. The count
lives in the default cache (the database cache unless configured otherwise), so every web
process sees the same count.
"""

from django.conf import settings
from django_ratelimit.core import get_usage

from .errors import RateLimitedError


def _usage(*, user, kind: str, increment: bool) -> dict | None:
    rate = settings.REFRESH_RATE_LIMITS.get(kind)
    if not rate:
        return None
    # django-ratelimit reads the request only for the key and the HTTP method; the key is
    # the user and every method counts, so services call it without a request.
    return get_usage(
        None,
        group=f"refresh:{kind}",
        key=lambda group, request: str(user.pk),
        rate=rate,
        method=get_usage.ALL,
        increment=increment,
    )


def check_rate_limit(*, user, kind: str) -> None:
    """Refuse if `user` already used up the rate of `kind`; counts nothing.

    Raises:
        RateLimitedError: the user is at the rate; `retry_after` says for how long.
    """
    usage = _usage(user=user, kind=kind, increment=False)
    if usage and usage["count"] >= usage["limit"]:
        rate = settings.REFRESH_RATE_LIMITS[kind]
        retry_after = max(1, int(usage["time_left"]))
        raise RateLimitedError(
            f"Rate limit reached: at most {rate.replace('/', ' per ')} "
            f"{kind.replace('_', ' ')} operations per user. Retry in {retry_after} s.",
            retry_after=retry_after,
        )


def count_execution(*, user, kind: str) -> None:
    """Count one execution of `kind` by `user` (once it has started)."""
    _usage(user=user, kind=kind, increment=True)
