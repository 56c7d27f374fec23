"""API tokens: named, per user, stored as a SHA-256 digest and shown once (the one place
for their rules; the console, the API authentication and `create_token` call it)."""

import hashlib
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import audit
from .errors import AutoloaderError
from .models import ApiToken, Membership, new_token_key

NAME_MAX_LENGTH = ApiToken._meta.get_field("name").max_length
# "alc_" and the key's next 8 characters: enough to tell tokens apart, nothing to guess with.
PREFIX_LENGTH = 12
# `last_used_at` is "used within the last minute", not a write on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenNotFoundError(AutoloaderError):
    """No token with this id belongs to the user."""

    error_code = "NOT_FOUND"
    status_code = 404
    help = "List your tokens on the console's API tokens page."


def key_digest(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def token_list(*, user) -> QuerySet[ApiToken]:
    """The user's tokens, newest first."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Make a named token for `user`; returns it and its key, which is never stored.

    Raises:
        ValidationError: an empty or too long name, or one the user already gave a token.
    """
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the token a name."]})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError({"name": [f"At most {NAME_MAX_LENGTH} characters."]})
    taken = ValidationError({"name": [f"You already have a token named “{name}”."]})
    if ApiToken.objects.filter(user=user, name=name).exists():
        raise taken
    key = new_token_key()
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user, name=name, prefix=key[:PREFIX_LENGTH], key_digest=key_digest(key)
            )
            _audit(user=user, token=token, action="token_created", changes={"name": [None, name]})
    except IntegrityError:
        # The same name made twice at once: the unique constraint decided.
        raise taken from None
    return token, key


def token_revoke(*, user, token_id: int) -> ApiToken:
    """Delete one of the user's own tokens: requests with its key fail from now on.

    Raises:
        TokenNotFoundError: no token with this id is the user's (another user's included).
    """
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(user=user, pk=token_id).first()
        if token is None:
            raise TokenNotFoundError()
        _audit(user=user, token=token, action="token_revoked", changes={"name": [token.name, None]})
        token.delete()
    return token


def token_authenticate(key: str) -> tuple[object, ApiToken] | None:
    """The active user and token behind `key`, or None.

    The lookup is by digest, so no comparison of secrets happens in Python (nothing to time).
    `last_used_at` is written at most once a minute per token.
    """
    token = ApiToken.objects.select_related("user").filter(key_digest=key_digest(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is None or token.last_used_at < stale:
        # Conditional, so concurrent requests write once between them.
        ApiToken.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=token.pk
        ).update(last_used_at=now)
        token.last_used_at = now
    return token.user, token


def _audit(*, user, token: ApiToken, action: str, changes: dict) -> None:
    """One entry per tenant of the user: the token acts in each, so each audit shows it.

    The key is never part of it: the name and prefix tell the token apart.
    """
    for membership in Membership.objects.filter(user=user).select_related("tenant"):
        audit.record_change(
            actor=user,
            obj=token,
            tenant=membership.tenant,
            action=action,
            changes=changes,
            data={"token": token.name, "prefix": token.prefix},
        )
