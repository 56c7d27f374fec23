"""`Idempotency-Key`: the same key and body within the TTL replays the first response."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError
from .models import IdempotencyRecord

HEADER = "Idempotency-Key"


def fingerprint(*, method: str, path: str, body) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def idempotency_begin(*, user, key: str, request_fingerprint: str) -> IdempotencyRecord | None:
    """Reserve `key` for this request, or return the stored record to replay.

    Returns None when the caller should execute (the key is now reserved), or the record
    whose stored response must be replayed.

    Raises:
        IdempotencyKeyReusedError: the key was used with another request.
        IdempotencyKeyInUseError: the first request with this key has not answered yet.
    """
    expired_before = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_SECONDS)
    IdempotencyRecord.objects.filter(user=user, key=key, created_at__lt=expired_before).delete()
    try:
        with transaction.atomic():
            IdempotencyRecord.objects.create(user=user, key=key, fingerprint=request_fingerprint)
        return None
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.get(user=user, key=key)
    if record.fingerprint != request_fingerprint:
        # Naming what the key made lets a client that retried with another body (a new
        # plan_id after a cleared DAG run) follow it instead of refreshing twice.
        made = {
            "operation_id": (record.headers or {}).get("X-Operation-ID"),
            "run_id": (record.response or {}).get("run_id"),
        }
        raise IdempotencyKeyReusedError(
            f"Idempotency-Key {key!r} was already used with a different request.",
            **{name: value for name, value in made.items() if value},
        )
    if record.status_code is None:
        raise IdempotencyKeyInUseError(f"A request with Idempotency-Key {key!r} is in progress.")
    return record


def idempotency_complete(*, user, key: str, status_code: int, body, headers: dict) -> None:
    IdempotencyRecord.objects.filter(user=user, key=key).update(
        status_code=status_code, response=body, headers=headers
    )


def idempotency_release(*, user, key: str) -> None:
    """Forget a reservation whose request was refused before doing anything."""
    IdempotencyRecord.objects.filter(user=user, key=key, status_code__isnull=True).delete()
