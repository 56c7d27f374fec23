"""Per-user rate limits of executed refresh operations, on the shared cache (django-ratelimit)."""

from django.conf import settings
from django_ratelimit.core import get_usage

from .errors import RateLimitedError


def check_rate_limit(*, request, user, kind: str) -> None:
    """Count one execution of `kind` by `user`; refuse it past the configured rate.

    Dry-runs never come here. The count lives in the default cache (the database cache
    unless configured otherwise), so every web process sees the same count.

    Raises:
        RateLimitedError: the user is over the rate; `retry_after` says for how long.
    """
    rate = settings.REFRESH_RATE_LIMITS.get(kind)
    if not rate:
        return
    usage = get_usage(
        request,
        group=f"refresh:{kind}",
        key=lambda group, request: str(user.pk),
        rate=rate,
        method=get_usage.ALL,
        increment=True,
    )
    if usage and usage["should_limit"]:
        retry_after = max(1, int(usage["time_left"]))
        raise RateLimitedError(
            f"Rate limit reached: at most {rate.replace('/', ' per ')} "
            f"{kind.replace('_', ' ')} operations per user. Retry in {retry_after} s.",
            retry_after=retry_after,
        )
