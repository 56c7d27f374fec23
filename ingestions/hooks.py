"""How the apps above the domain plug into it, without the domain importing them.

The domain (`ingestions`) *publishes* what happens and *asks* registered guards; the apps
above (`refresh`, `webhooks`) register in their `AppConfig.ready()`:

- `publish(event, **facts)` / `subscribe(receiver)`: events such as `run.started`,
  `run.finished`, `run.published`, `run.discarded`, `file.quarantined` and the refresh
  operations' `refresh.*`. Receivers run synchronously in the publisher's transaction, so
  what they record (the webhooks' outbox) commits or rolls back with the change.
- `refuse_changes(ingestion)`: every registered change guard may refuse (by raising a
  domain error) a run or a change of the ingestion now; `busy_excluded(queryset)` leaves
  out the ingestions a guard's owner considers busy (maintenance skips them).
- `register_ingestion_field(name, read=, write=)`: a field of the ingestion's API kept by
  an app above (refresh keeps the run `schedule`).
- `run_ended(run)`: what the worker does after a run of a refresh operation ended.
- `periodic_jobs(kind)`: the worker's periodic passes (`recovery`, `maintenance`,
  `deliveries`), in registration order.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db.models import QuerySet
from django.dispatch import Signal

# --- events ---------------------------------------------------------------------------

_happened = Signal()


def publish(event: str, **facts) -> None:
    """Tell every subscriber that `event` happened, with its facts (objects or ids)."""
    _happened.send(sender=event, **facts)


def subscribe(receiver: Callable[..., None]) -> None:
    """`receiver(event=..., **facts)` hears every published event."""

    def relay(sender, signal, **facts):
        receiver(event=sender, **facts)

    _happened.connect(relay, weak=False, dispatch_uid=f"{receiver.__module__}.{receiver.__name__}")


# --- guards ---------------------------------------------------------------------------

_change_guards: list[Callable] = []
_busy_filters: list[Callable[[QuerySet], QuerySet]] = []


def register_change_guard(guard: Callable, *, busy: Callable[[QuerySet], QuerySet]) -> None:
    """`guard(ingestion)` raises to refuse a run or a change of the ingestion now; `busy`
    leaves out of an ingestion queryset those the same owner would refuse."""
    if guard not in _change_guards:
        _change_guards.append(guard)
        _busy_filters.append(busy)


def refuse_changes(ingestion) -> None:
    for guard in _change_guards:
        guard(ingestion)


def busy_excluded(ingestions: QuerySet) -> QuerySet:
    for leave_out in _busy_filters:
        ingestions = leave_out(ingestions)
    return ingestions


# --- fields the apps above add to an ingestion -----------------------------------------

_ingestion_fields: dict[str, tuple[Callable, Callable]] = {}


def register_ingestion_field(name: str, *, read: Callable, write: Callable) -> None:
    """A field of the ingestion's API that another app keeps (refresh: the run `schedule`,
    the PRD's `refresh_schedule`). `read(ingestions)` -> {ingestion pk: value} for those that
    have one; `write(ingestion=, actor=, value=)` sets it (None removes it) in the caller's
    transaction and returns what the response shows of it."""
    _ingestion_fields[name] = (read, write)


def ingestion_field_values(name: str, ingestions) -> dict:
    read, _write = _ingestion_fields.get(name, (lambda _ingestions: {}, None))
    return read(ingestions)


def ingestion_field_write(name: str, *, ingestion, actor, value):
    _read, write = _ingestion_fields[name]
    return write(ingestion=ingestion, actor=actor, value=value)


# --- the worker -----------------------------------------------------------------------

_run_ended: list[Callable] = []
_periodic: dict[str, list[Callable[[], object]]] = {}
JOB_KINDS = ("recovery", "maintenance", "deliveries")


def on_run_ended(hook: Callable) -> None:
    """`hook(run)` runs in the worker after a run of a refresh operation (a staged run) ended."""
    if hook not in _run_ended:
        _run_ended.append(hook)


def run_ended(run) -> None:
    for hook in _run_ended:
        hook(run)


def register_periodic(kind: str, *jobs: Callable[[], object]) -> None:
    """Jobs the worker calls on every pass of `kind`: `recovery` (the reaper, every
    AUTOLOADER_REAPER_INTERVAL_SECONDS), `maintenance` (its own thread, same interval) or
    `deliveries` (every AUTOLOADER_WEBHOOK_DELIVERY_INTERVAL_SECONDS; must not block)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"Unknown periodic job kind {kind!r}.")
    registered = _periodic.setdefault(kind, [])
    registered.extend(job for job in jobs if job not in registered)


def periodic_jobs(kind: str) -> tuple[Callable[[], object], ...]:
    return tuple(_periodic.get(kind, ()))
