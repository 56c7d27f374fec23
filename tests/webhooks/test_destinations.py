"""SSRF: every address that is not globally routable is refused, also an IPv4 address
wrapped in IPv6 (mapped, compatible, NAT64, 6to4, Teredo), when the webhook is added and
again at every send; the allow-list names host and port, and allows nothing else."""

import pytest

from webhooks.delivery import deliver_due
from webhooks.events import emit
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db
# Deliveries are sent from threads of their own, which see only committed rows.
sends = pytest.mark.django_db(transaction=True)

SETTING = "AUTOLOADER_WEBHOOK_ALLOWED_HOSTS"
# The spellings (PORT: the allowed local receiver's port) and their neighbours.
NON_GLOBAL = [
    "::127.0.0.1",  # IPv4-compatible loopback
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:5db8:d822::1",  # 6to4 of a public address: the prefix itself is refused
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001::1",
    "fec0::1",  # site-local
    "::ffff:127.0.0.1",
    "::ffff:93.184.216.34",  # mapped: refused whatever is inside
    "2001:db8::1",  # documentation
    "100::1",  # discard-only
    "3fff::1",  # documentation (2024)
    "5f00::1",  # SRv6 SIDs
    "192.0.0.8",
    "192.0.0.170",
    "192.88.99.1",  # 6to4 relay anycast
    "198.18.0.1",  # benchmarking
    "240.0.0.1",
    "255.255.255.255",
]


def literal(address: str, port: int | None = None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/hook" if port else f"http://{host}/hook"


def create(client, url):
    return client.post("/api/v1/webhooks", {"url": url, "events": ["run.finished"]}, "json")


@pytest.mark.parametrize("address", NON_GLOBAL)
def test_create_refuses_every_non_global_address(admin_client, receiver, address):
    # The receiver on 127.0.0.1:PORT is allowed: no other spelling reaches it, nor anything.
    for url in (literal(address), literal(address, receiver.server.server_port)):
        response = create(admin_client, url)

        assert response.status_code == 400, url
        assert response.json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED"
        assert SETTING in response.json()["detail"]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize("address", NON_GLOBAL)
@sends
def test_a_name_that_later_resolves_non_global_is_refused_at_send(
    tenant, subscribe, receiver, public_dns, address
):
    dns = public_dns({"hooks.example.com": ["93.184.216.34"]})
    subscribe(f"http://hooks.example.com:{receiver.server.server_port}/in", ["run.finished"])
    dns["hooks.example.com"] = [address]  # rebinding after the check at subscription
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert delivery.last_error.startswith(
        f"Refused: The host hooks.example.com resolves to {address}"
    )
    assert SETTING in delivery.last_error
    assert receiver.requests == []  # the local receiver (the victim) got nothing


def test_the_allow_list_names_host_and_port(admin_client, receiver, settings):
    port = receiver.server.server_port
    other_port = port + 1 if port < 65535 else port - 1

    assert create(admin_client, f"http://127.0.0.1:{port}/hook").status_code == 201
    for url in (
        f"http://127.0.0.1:{other_port}/hook",  # the product's own port, say
        "http://127.0.0.1/hook",
        f"http://[::1]:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        f"http://[::127.0.0.1]:{port}/hook",
        f"http://localhost:{other_port}/hook",
    ):
        refused = create(admin_client, url)
        assert refused.status_code == 400, url
        assert refused.json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED"
        assert (
            f"127.0.0.1:{other_port}" in refused.json()["detail"]
            or SETTING in (refused.json()["detail"])
        )
    assert Webhook.objects.count() == 1


@sends
def test_an_allowed_host_on_another_port_is_refused_at_send(tenant, subscribe, receiver, settings):
    port = receiver.server.server_port
    subscribe(receiver.url, ["run.finished"])
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{port + 1}"]  # changed since
    emit(tenant=tenant, event="run.finished", payload={})

    deliver_due()

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert f"127.0.0.1:{port}" in delivery.last_error and SETTING in delivery.last_error
    assert receiver.requests == []


def test_a_bare_host_entry_allows_its_default_port_only(admin_client, settings, public_dns):
    public_dns({"ci.internal": ["10.1.2.3"]})
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = ["ci.internal", "10.9.9.9"]

    assert create(admin_client, "https://ci.internal/hook").status_code == 201
    assert create(admin_client, "http://ci.internal/hook").status_code == 201
    assert create(admin_client, "http://10.9.9.9/hook").status_code == 201
    for url in ("https://ci.internal:8443/hook", "http://ci.internal:22/", "http://10.9.9.9:81/"):
        assert create(admin_client, url).json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED", url
    assert Webhook.objects.count() == 3


def test_unreadable_allow_list_entries_allow_nothing(admin_client, settings, public_dns):
    public_dns({"ci.internal": ["10.1.2.3"]})
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = ["ci.internal:0", "ci.internal:http", "[::1"]

    for url in ("http://ci.internal/", "http://ci.internal:0/", "http://[::1]/"):
        assert create(admin_client, url).json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED", url


def test_public_addresses_still_pass(admin_client, public_dns):
    public_dns({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})

    assert create(admin_client, "https://hooks.example.com/in").status_code == 201
    assert create(admin_client, "https://[2606:4700:4700::1111]/in").status_code == 201
    assert create(admin_client, "https://8.8.8.8/in").status_code == 201
