"""Where a webhook may send: http(s) URLs whose host resolves to globally routable
addresses, or to the host:port pairs the platform administrator allows (the SSRF rules,
checked at subscription and again before every delivery)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from .errors import WebhookUrlNotAllowedError

MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}

logger = logging.getLogger("webhooks.destinations")

# IPv4 ranges that are not globally reachable (IANA's special-purpose registry), listed
# because `is_global` alone is not trusted: Python 3.11's says True for 192.0.0.8.
NOT_GLOBAL_IPV4 = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, the cloud metadata address
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # the 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
# IPv6: only global unicast (2000::/3) is reachable, less these ranges inside it. Everything
# else is refused by default: ::/96 IPv4-compatible and ::ffff:0:0/96 mapped, NAT64
# 64:ff9b::/96 and 64:ff9b:1::/48, discard 100::/64, site-local fec0::/10, unique local
# fc00::/7, link-local fe80::/10, multicast ff00::/8, 5f00::/16 (SRv6).
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
NOT_GLOBAL_IPV6 = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: an IPv4 address inside, any IPv4 one
        "3fff::/20",  # documentation
    )
)
# Where an IPv4 address hides inside an IPv6 one (well-known, local-use): named in the refusal.
NAT64_IPV6 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
IPV4_COMPATIBLE_IPV6 = ipaddress.IPv6Network("::/96")


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


ALLOW_LIST_SETTING = "AUTOLOADER_WEBHOOK_ALLOWED_HOSTS"


def allowed_endpoints() -> set[tuple[str, int | None]]:
    """AUTOLOADER_WEBHOOK_ALLOWED_HOSTS as (host, port) pairs: `host:port`, `10.0.0.5:8080`,
    `[fd00::5]:8443`. A bare host (`alerts.corp.internal`) has port None: it allows the
    URL's default port only (80 for http, 443 for https), never every port. Lowercased,
    IPv6 without brackets; an entry that cannot be read allows nothing (and is logged).
    """
    endpoints = set()
    for entry in settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS:
        endpoint = _endpoint_of(entry.strip().lower())
        if endpoint is None:
            if entry.strip():
                logger.warning(
                    "%s: ignoring the entry %r (use host:port)", ALLOW_LIST_SETTING, entry
                )
            continue
        endpoints.add(endpoint)
    return endpoints


def _endpoint_of(entry: str) -> tuple[str, int | None] | None:
    if not entry:
        return None
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        try:
            ipaddress.ip_address(entry)  # a bare address, IPv6 ones included
            host, port = entry, None
        except ValueError:
            host, _, port = entry.partition(":") if ":" in entry else (entry, "", None)
    if not host or (port is not None and not (port.isdigit() and 0 < int(port) < 65536)):
        return None
    return host, int(port) if port is not None else None


def _allowed(host: str, port: int, scheme: str, allowed: set) -> bool:
    return (host, port) in allowed or (port == SCHEMES[scheme] and (host, None) in allowed)


def destination_check(url: str) -> Destination:
    """Check `url` against the rules and resolve its host once.

    Every address the host resolves to must be globally routable (not loopback, link-local
    — the cloud metadata address —, private, shared, multicast, unspecified, reserved, nor
    an IPv4 address wrapped in IPv6: mapped, compatible, NAT64, 6to4, Teredo) unless the
    host, or that address, with the URL's port is in AUTOLOADER_WEBHOOK_ALLOWED_HOSTS. The
    caller connects to the returned address, so a DNS answer that changes after the check
    reaches nothing.

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
    allowed = allowed_endpoints()
    if not _allowed(host, port, scheme, allowed):
        for address in addresses:
            refused = _not_public(address)
            if refused and not _allowed(address.lower(), port, scheme, allowed):
                raise WebhookUrlNotAllowedError(
                    f"The host {host} resolves to {address}, {refused}; the platform "
                    f"administrator has not allowed {_endpoint_name(host, port)} in "
                    f"{ALLOW_LIST_SETTING}."
                )
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Destination(scheme=scheme, host=host, port=port, target=target, address=addresses[0])


def _not_public(address: str) -> str:
    """Why `address` is not globally routable ("" when it is), in words for the refusal."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # no IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        wrapped = _wrapped_ipv4(ip)
        if wrapped:
            # The prefix itself is refused, whatever the IPv4 address inside: a relay or a
            # translator can reach a private one (NAT64 of 169.254.169.254, 6to4 of 127/8).
            return f"a non-public address ({wrapped})"
        if ip not in GLOBAL_UNICAST_IPV6 or any(ip in network for network in NOT_GLOBAL_IPV6):
            return "a non-public address"
    elif any(ip in network for network in NOT_GLOBAL_IPV4):
        return "a non-public address"
    # And the standard library's view (loopback, private, reserved...) on top of the lists.
    if not ip.is_global or ip.is_multicast:
        return "a non-public address"
    return ""


def _wrapped_ipv4(ip: ipaddress.IPv6Address) -> str:
    """What IPv4 address an IPv6 one carries, in words ("" for none)."""
    if ip.ipv4_mapped is not None:
        return f"the IPv4-mapped form of {ip.ipv4_mapped}"
    if ip.sixtofour is not None:
        return f"the 6to4 form of {ip.sixtofour}"
    if ip.teredo is not None:
        return f"a Teredo address of {ip.teredo[1]}"
    if ip in NAT64_IPV6[0]:
        return f"the NAT64 form of {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)}"
    if ip in NAT64_IPV6[1]:
        return "a local-use NAT64 address (an IPv4 address inside)"
    if ip in IPV4_COMPATIBLE_IPV6 and int(ip) > 1:  # not :: and ::1
        return f"the IPv4-compatible form of {ipaddress.IPv4Address(int(ip))}"
    return ""


def _endpoint_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
