"""Rate limits of executed refresh operations: per table, under a per-user and a per-tenant
ceiling, as atomic slots on the shared database counters (`ingestions.ratelimits`).

The risk the PRD's limit guards against is a destructive operation repeated on one table,
so each kind's rate (`REFRESH_RATE_LIMITS`, "5/h" full refreshes) is counted per table.
Above them, two ceilings count every destructive operation (full refresh, fresh start,
drop table, clear history) on every table: one per user (`REFRESH_RATE_PER_USER`) and one
per tenant (`REFRESH_RATE_PER_TENANT`), so a script looping over many tables is bounded
too. Undo and resume repair; they count against their own per-table rate only.

Only executions count: dry-runs never come here, and a call refused for any reason
(permission, confirmation, plan, a run in progress) gives its slots back. A slot is taken
by one conditional UPDATE per counter (`count = count + 1 WHERE count < limit`), so
parallel requests in any number of processes cannot overshoot; an execution takes a slot
of every limit that applies, or none.

A batch refresh takes its slots at once before any member starts (`rate_limit_slots`): one
of each member's table, and as many of each ceiling as it has members; each member then
uses its share (`SlotReservation.use`), and what no member used is given back.
`rate_limit_quota` and `batch_quota` read where a caller stands, for dry-runs; they write
nothing.
"""

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from django.conf import settings

from ingestions.models import Ingestion
from ingestions.ratelimits import parse_rate, rate_give_back, rate_reserve, rate_window

from .errors import RateLimitedError
from .models import OperationKind

# The kinds the per-user and per-tenant ceilings count: the destructive ones.
CEILING_KINDS = frozenset(OperationKind.values)
# Where each ceiling is set, for refusals and previews.
CEILING_SETTINGS = {"user": "REFRESH_RATE_PER_USER", "tenant": "REFRESH_RATE_PER_TENANT"}
CEILINGS = ("user", "tenant")
APPLIES_TO = ("table", *CEILINGS)
# How a preview's warning that an execution would be refused (429) begins.
WARNING = "RATE_LIMITED:"
PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


@dataclass(frozen=True)
class Limit:
    """One counter an execution counts against."""

    applies_to: str  # "table", "user" or "tenant"
    name: str  # the counter's name in `ingestions.ratelimits`
    rate: str  # "5/h"
    setting: str  # where it is set: "REFRESH_RATE_FULL_REFRESH"
    counts: str  # what it counts: "full refreshes of raw.orders"

    def refusal(self) -> str:
        return f"Rate limit reached: at most {self.described()} ({self.setting})."

    def described(self) -> str:
        rate = parse_rate(self.rate)
        period = PERIOD_WORDS.get(rate.period_seconds, f"{rate.period_seconds} s")
        # "1 full refresh operation of raw.orders", "5 ... operations of ...".
        counts = (
            self.counts.replace("operations", "operation", 1) if rate.limit == 1 else self.counts
        )
        return f"{rate.limit} {counts} per {period}"


@dataclass(frozen=True)
class Quota:
    """Where a caller stands against one limit in its current window. The quota of an
    execution is its binding limit (the fewest left), with every limit in `limits`."""

    limit: int
    used: int
    resets_at: datetime
    applies_to: str = "table"
    setting: str = ""
    described: str = ""
    limits: tuple["Quota", ...] = field(default=())

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def as_response(self) -> dict:
        return {
            **self._fields(),
            "limits": [quota._fields() for quota in self.limits or (self,)],
        }

    def _fields(self) -> dict:
        return {
            "limit": self.limit,
            "used": self.used,
            "remaining": self.remaining,
            "resets_at": self.resets_at.isoformat(),
            "applies_to": self.applies_to,
            "setting": self.setting,
            "description": self.described,
        }


@dataclass
class SlotReservation:
    """The slots a batch took for its members (`rate_limit_slots`), used one by one."""

    kind: str
    table_keys: dict[int, str | None]  # member ingestion pk -> its table counter (unused)
    ceiling_keys: list[str]  # the ceilings' counters, `unused` slots of each still held
    unused: int
    used: int = 0

    @contextmanager
    def use(self, *, ingestion: Ingestion, kind: str) -> Iterator[None]:
        """The member's slots, for the block: kept when it ends normally, back in the
        reservation when it raises, as `rate_limit_slot` does with fresh slots."""
        if kind != self.kind or ingestion.pk not in self.table_keys or self.unused < 1:
            raise ValueError(f"No reserved {kind} slot of {ingestion.public_id} left.")
        table_key = self.table_keys.pop(ingestion.pk)
        self.unused -= 1
        try:
            yield
        except BaseException:
            self.table_keys[ingestion.pk] = table_key
            self.unused += 1
            raise
        self.used += 1


def limits_of(*, actor, ingestion: Ingestion, kind: str) -> list[Limit]:
    """The limits an execution of `kind` on `ingestion` by `actor` counts against, in the
    order they are taken: the table's rate of the kind, then the user's and the tenant's
    ceilings (destructive kinds only). A limit without a configured rate is left out."""
    limits = []
    rate = settings.REFRESH_RATE_LIMITS.get(kind)
    if rate:
        label = kind.replace("_", " ")
        limits.append(
            Limit(
                applies_to="table",
                name=f"refresh:{kind}:ingestion:{ingestion.pk}",
                rate=rate,
                setting=f"REFRESH_RATE_{kind.upper()}",
                counts=f"{label} operations of {ingestion.destination_table}",
            )
        )
    if kind in CEILING_KINDS:
        ceilings = settings.REFRESH_RATE_CEILINGS
        owners = {"user": getattr(actor, "pk", None), "tenant": ingestion.tenant_id}
        for applies_to, owner in owners.items():
            if ceilings.get(applies_to) and owner is not None:
                limits.append(
                    Limit(
                        applies_to=applies_to,
                        name=f"refresh:{applies_to}:{owner}",
                        rate=ceilings[applies_to],
                        setting=CEILING_SETTINGS[applies_to],
                        counts=f"destructive operations per {applies_to} (every table counts)",
                    )
                )
    return limits


@contextmanager
def rate_limit_slot(
    *, actor, ingestion: Ingestion, kind: str, only: tuple[str, ...] = APPLIES_TO
) -> Iterator[None]:
    """Take a slot of every limit of `kind` on `ingestion` for `actor` (of those `only`
    names), atomically, for the block: kept when the block ends normally (the operation
    started), given back when it raises (the call was refused: plan, run in progress...).
    Inside a transaction, its rollback gives them back too.

    Raises:
        RateLimitedError: a limit's window is used up (nothing is taken); the message
            names the limit and its setting, `retry_after` says for how long.
    """
    limits = limits_of(actor=actor, ingestion=ingestion, kind=kind)
    keys = _reserve([limit for limit in limits if limit.applies_to in only], count=1)
    try:
        yield
    except BaseException:
        for key in keys:
            rate_give_back(key)
        raise


def rate_limit_check(*, actor, ingestion: Ingestion, kind: str, only: tuple[str, ...]) -> None:
    """Refuse now what `rate_limit_slot` would refuse later for want of a slot in the
    limits `only` names, without taking any (an early answer before costly work).

    Raises:
        RateLimitedError: as `rate_limit_slot`.
    """
    for limit in limits_of(actor=actor, ingestion=ingestion, kind=kind):
        if limit.applies_to in only and not _quota(limit).remaining:
            _refuse(limit)


def _refuse(limit: Limit) -> None:
    """Raise the refusal of `limit`'s used-up window, as taking a slot would."""
    resets_in = (_quota(limit).resets_at - datetime.now(UTC)).total_seconds()
    retry_after = max(1, math.ceil(resets_in))
    raise RateLimitedError(f"{limit.refusal()} Retry in {retry_after} s.", retry_after=retry_after)


@contextmanager
def rate_limit_slots(
    *, actor, kind: str, ingestions: Sequence[Ingestion]
) -> Iterator[SlotReservation]:
    """Take every member's slots at once, or none, for the block (a batch): one of each
    member's table rate, and one per member of each ceiling. The block uses them
    (`SlotReservation.use`); those it did not use are given back when it ends, however
    it ends.

    Raises:
        RateLimitedError: a member's table or a ceiling has too few slots left (or a
            ceiling allows fewer than the members at all); nothing is taken.
    """
    count = len(ingestions)
    table_keys: dict[int, str | None] = {}
    ceiling_keys: list[str] = []
    with ExitStack() as undo:  # a refusal half-way gives back what was taken
        for ingestion in ingestions:
            table = [
                limit
                for limit in limits_of(actor=actor, ingestion=ingestion, kind=kind)
                if limit.applies_to == "table"
            ]
            keys = _reserve(table, count=1)
            undo.callback(_give_back_all, keys, 1)
            table_keys[ingestion.pk] = keys[0] if keys else None
        if ingestions:
            ceilings = [
                limit
                for limit in limits_of(actor=actor, ingestion=ingestions[0], kind=kind)
                if limit.applies_to != "table"
            ]
            for limit in ceilings:
                if count > parse_rate(limit.rate).limit:
                    raise RateLimitedError(
                        f"Rate limit: {count} operations at once exceed what is allowed "
                        f"({limit.described()}, {limit.setting}).",
                        retry_after=parse_rate(limit.rate).period_seconds,
                    )
            ceiling_keys = _reserve(ceilings, count=count)
        undo.pop_all()
    reservation = SlotReservation(
        kind=kind, table_keys=table_keys, ceiling_keys=ceiling_keys, unused=count
    )
    try:
        yield reservation
    finally:
        _give_back_all([key for key in reservation.table_keys.values() if key], 1)
        if reservation.unused:
            _give_back_all(reservation.ceiling_keys, reservation.unused)


def rate_limit_quota(*, actor, ingestion: Ingestion, kind: str) -> Quota | None:
    """Where `actor` stands for one more `kind` on `ingestion`: the binding limit (the
    fewest slots left), with every limit in `limits`. None: nothing limits it. Reads only."""
    quotas = [_quota(limit) for limit in limits_of(actor=actor, ingestion=ingestion, kind=kind)]
    if not quotas:
        return None
    binding = min(quotas, key=lambda quota: quota.remaining)  # ties: the table's first
    return replace(binding, limits=tuple(quotas))


def batch_quota(*, actor, kind: str, ingestions: Sequence[Ingestion]) -> tuple[dict, list[str]]:
    """A batch's quota for its dry-run, and the warnings of what would refuse it.

    The quota is the binding ceiling (or, without ceilings, the tightest member table) in
    `as_response`'s shape, with `members_startable` (how many members the slots left
    cover) and `tables_exhausted` (members whose table has no slot left). Reads only.
    """
    quotas = {
        ingestion.public_id: rate_limit_quota(actor=actor, ingestion=ingestion, kind=kind)
        for ingestion in ingestions
    }
    quotas = {name: quota for name, quota in quotas.items() if quota is not None}
    if not quotas:
        return {}, []
    tables = {name: _limit(quota, "table") for name, quota in quotas.items()}
    tables = {name: table for name, table in tables.items() if table is not None}
    ceilings = [item for item in next(iter(quotas.values())).limits if item.applies_to != "table"]
    exhausted = [name for name, table in tables.items() if not table.remaining]
    label = kind.replace("_", " ")
    warnings = [
        f"{WARNING} {name} has no {label} left in this window ({tables[name].described}, "
        f"{tables[name].setting}) until {tables[name].resets_at:%Y-%m-%d %H:%M} UTC: executing "
        "the batch now would be refused (429) before any member starts."
        for name in exhausted
    ]
    warnings += [
        f"{WARNING} this batch needs {len(ingestions)} {label} operations but "
        f"{ceiling.remaining} of {ceiling.limit} destructive operations are left per "
        f"{ceiling.applies_to} ({ceiling.setting}) until {ceiling.resets_at:%Y-%m-%d %H:%M} "
        "UTC: executing it now would be refused (429) before any member starts."
        for ceiling in ceilings
        if len(ingestions) > ceiling.remaining
    ]
    shown = ceilings or list(tables.values())
    binding = min(shown, key=lambda quota: quota.remaining)
    startable = min([len(ingestions) - len(exhausted), *(c.remaining for c in ceilings)])
    return {
        **replace(binding, limits=tuple(shown)).as_response(),
        "members_startable": max(0, startable),
        "tables_exhausted": exhausted,
    }, warnings


def _limit(quota: Quota, applies_to: str) -> Quota | None:
    return next((item for item in quota.limits if item.applies_to == applies_to), None)


def _quota(limit: Limit) -> Quota:
    window = rate_window(name=limit.name, rate=limit.rate)
    return Quota(
        limit=window.limit,
        used=window.used,
        resets_at=window.resets_at,
        applies_to=limit.applies_to,
        setting=limit.setting,
        described=limit.described(),
    )


def _reserve(limits: list[Limit], *, count: int) -> list[str]:
    """One `count`-slot reservation per limit, all or none; their counters' keys."""
    taken: list[str] = []
    try:
        for limit in limits:
            taken.append(
                rate_reserve(name=limit.name, rate=limit.rate, refusal=limit.refusal(), count=count)
            )
    except RateLimitedError:
        _give_back_all(taken, count)
        raise
    return taken


def _give_back_all(keys: list[str], count: int) -> None:
    for key in keys:
        rate_give_back(key, count)
