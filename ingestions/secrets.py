"""Encryption at rest of the object-store secrets of storage locations (Fernet)."""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def new_secrets_key() -> str:
    """A fresh key for AUTOLOADER_SECRETS_KEY."""
    return Fernet.generate_key().decode()


def encrypt_secret(value: str) -> str:
    """Encrypt `value` with AUTOLOADER_SECRETS_KEY; "" stays "".

    Raises:
        ImproperlyConfigured: no key is configured (and DEBUG is off).
    """
    if not value:
        return ""
    return _fernet(_key()).encrypt(value.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Decrypt what `encrypt_secret` made; "" stays "".

    Raises:
        ImproperlyConfigured: no key, or not the key the secret was encrypted with.
    """
    if not token:
        return ""
    try:
        return _fernet(_key()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A storage location's secret cannot be decrypted: AUTOLOADER_SECRETS_KEY is not "
            "the key it was stored with. Restore that key, or grant the location again."
        ) from None


def _key() -> str:
    if settings.AUTOLOADER_SECRETS_KEY:
        return settings.AUTOLOADER_SECRETS_KEY
    if not settings.DEBUG:
        raise ImproperlyConfigured(
            "AUTOLOADER_SECRETS_KEY must be set to store location credentials when "
            "DJANGO_DEBUG=0 (manage.py grant_location --new-secrets-key prints one)."
        )
    # Development only: one random key per data dir, never committed (like the secret key).
    key_file = settings.DATA_DIR / "secrets_key"
    if not key_file.exists():
        key_file.write_text(new_secrets_key())
        key_file.chmod(0o600)
    return key_file.read_text().strip()


@functools.lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            "AUTOLOADER_SECRETS_KEY is not a Fernet key (44 url-safe base64 characters)."
        ) from None
