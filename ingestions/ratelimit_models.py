"""The counters behind rate limits and concurrency caps (`ingestions.ratelimits`): rows
that parallel requests in any number of processes update with single conditional queries."""

from django.db import models


class RateCounter(models.Model):
    """Slots taken under one key (who, what, period, window start) in one fixed window.

    Taking a slot is a single conditional UPDATE of `count` (`ingestions.ratelimits`), so
    parallel requests in any number of processes can never take more than the rate.
    """

    key = models.CharField(max_length=200, unique=True)
    window_start = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class ConcurrencyLease(models.Model):
    """One of the numbered slots of a concurrency cap, held until released or expired."""

    scope = models.CharField(max_length=200)
    slot = models.PositiveIntegerField()
    holder = models.CharField(max_length=32)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "slot"], name="one_holder_per_slot")
        ]

    def __str__(self) -> str:
        return f"{self.scope}#{self.slot}"
