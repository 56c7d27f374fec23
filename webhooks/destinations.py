"""Where a webhook may send: http(s) URLs whose host resolves to public addresses, or to
hosts the platform administrator allows (the SSRF rules, checked at subscription and again
before every delivery)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from .errors import WebhookUrlNotAllowedError

MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Destination:
    """A checked URL: the request goes to `address`, with `host` as its Host (and TLS name)."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    address: str


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (one lookup; the checks and the connection use them).

    Raises:
        OSError: the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def allowed_hosts() -> set[str]:
    """AUTOLOADER_WEBHOOK_ALLOWED_HOSTS, lowercased, IPv6 without brackets."""
    return {
        host.strip().lower().strip("[]")
        for host in settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS
        if host.strip()
    }


def destination_check(url: str) -> Destination:
    """Check `url` against the rules and resolve its host once.

    Every address the host resolves to must be public (not loopback, link-local — the cloud
    metadata address —, private, shared, multicast, unspecified or reserved) unless the host
    or that address is in AUTOLOADER_WEBHOOK_ALLOWED_HOSTS. The caller connects to the
    returned address, so a DNS answer that changes after the check reaches nothing.

    Raises:
        WebhookUrlNotAllowedError: with what in the URL is refused.
    """
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlNotAllowedError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise WebhookUrlNotAllowedError("The URL contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlNotAllowedError("The URL cannot be parsed.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookUrlNotAllowedError(
            f"Only http and https URLs are allowed, not {scheme or 'a URL without scheme'}."
        )
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlNotAllowedError(
            "Credentials in the URL are not allowed: receivers authenticate deliveries by "
            "their signature."
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookUrlNotAllowedError("The URL has no host.")
    port = port or SCHEMES[scheme]
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError, ValueError):
        raise WebhookUrlNotAllowedError(f"The host {host} does not resolve.") from None
    if not addresses:
        raise WebhookUrlNotAllowedError(f"The host {host} does not resolve.")
    allowed = allowed_hosts()
    if host not in allowed:
        for address in addresses:
            if address.lower() not in allowed and not _public(address):
                raise WebhookUrlNotAllowedError(
                    f"The host {host} resolves to {address}, a non-public address; the "
                    "platform administrator has not allowed it."
                )
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Destination(scheme=scheme, host=host, port=port, target=target, address=addresses[0])


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    # `is_global` is False for loopback, link-local, private, shared (100.64/10),
    # unspecified, reserved and documentation ranges; some multicast ranges count as global.
    return ip.is_global and not ip.is_multicast
