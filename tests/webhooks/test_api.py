"""The webhooks REST API: subscribe (secret shown once, stored encrypted), change, delete,
test, delivery log; tenant admins only; another tenant's webhook looks absent; every
destination rule refuses the attack it is there for."""

import pytest
from auditlog.models import LogEntry

from ingestions.models import Role
from ingestions.secrets import decrypt_secret
from webhooks.models import Webhook, WebhookDelivery, WebhookEvent

pytestmark = pytest.mark.django_db


def test_create_answers_201_with_id_and_the_secret_shown_once(subscribe, receiver):
    client, body = subscribe(receiver.url, ["run.finished", "run.started"])

    assert body["id"].startswith("wh-")
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    # In the table's order, whatever order they were sent in.
    assert body["events"] == ["run.started", "run.finished"]
    assert body["payload_format"] == "json" and body["active"] is True
    shown_again = client.get(f"/api/v1/webhooks/{body['id']}").json()
    assert "secret" not in shown_again
    assert all("secret" not in item for item in client.get("/api/v1/webhooks").json())


def test_the_secret_is_stored_encrypted_and_never_audited(subscribe, receiver):
    _client, body = subscribe(receiver.url, ["run.finished"])

    webhook = Webhook.objects.get(public_id=body["id"])
    assert body["secret"] not in webhook.secret_encrypted
    assert decrypt_secret(webhook.secret_encrypted) == body["secret"]
    entry = LogEntry.objects.get(additional_data__operation="webhook_created")
    assert entry.additional_data["tenant"] == "acme"
    assert body["secret"] not in str(entry.changes) + str(entry.additional_data)
    # Only the origin: a URL's path can be a credential too (Slack's are).
    assert entry.changes["url"] == [None, receiver.url.split("/hooks")[0] + "/…"]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata address
        "http://localhost/",  # a name resolving to loopback
        "http://127.0.0.1:8000/",  # loopback, not allowed here
        "http://[::1]/",  # IPv6 loopback
        "http://[::ffff:127.0.0.1]/",  # loopback mapped into IPv6
        "http://10.0.0.1/",  # private
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://[fe80::1]/",  # IPv6 link-local
        "http://[fc00::1]/",  # IPv6 unique local
        "http://0.0.0.0/",  # unspecified
        "http://224.0.0.1/",  # multicast
        "http://2130706433/",  # 127.0.0.1 spelled as a number
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "https://user:pass@hooks.example.com/",  # credentials in the URL
        "https://hooks.example.com@169.254.169.254/",
        "http://" + "a" * 2050 + ".com/",  # too long
        "http://hooks.example.com/\r\nX-Injected: 1",  # header injection
        "http://hooks.exa\x00mple.com/",
    ],
)
def test_create_refuses_a_destination_outside_the_rules(admin_client, settings, url):
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = []

    response = admin_client.post(
        "/api/v1/webhooks", {"url": url, "events": ["run.finished"]}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error_code"] in {"WEBHOOK_URL_NOT_ALLOWED", "VALIDATION_ERROR"}
    if len(url) <= 2048 and "\x00" not in url:  # else refused by the serializer already
        assert response.json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED"
    assert not Webhook.objects.exists()


def test_a_public_host_is_accepted_and_an_allowed_private_one_too(
    admin_client, settings, public_dns
):
    public_dns({"hooks.example.com": ["93.184.216.34"], "ci.internal": ["10.1.2.3"]})
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = []
    post = lambda url: admin_client.post(  # noqa: E731
        "/api/v1/webhooks", {"url": url, "events": ["run.finished"]}, format="json"
    )

    assert post("https://hooks.example.com/autoloader").status_code == 201
    assert post("https://ci.internal/hook").status_code == 400
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = ["ci.internal:443"]
    assert post("https://ci.internal/hook").status_code == 201


def test_a_name_with_one_private_address_among_public_ones_is_refused(admin_client, public_dns):
    public_dns({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})

    response = admin_client.post(
        "/api/v1/webhooks",
        {"url": "https://mixed.example.com/", "events": ["run.finished"]},
        format="json",
    )

    assert response.json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED"


def test_unknown_events_and_formats_are_validation_errors(admin_client, receiver):
    for body in (
        {"url": receiver.url, "events": ["run.exploded"]},
        {"url": receiver.url, "events": []},
        {"url": receiver.url, "events": ["run.finished"], "payload_format": "xml"},
        {"url": receiver.url, "events": ["run.finished"], "secret": "mine"},
    ):
        response = admin_client.post("/api/v1/webhooks", body, format="json")
        assert response.status_code == 400, body
        assert response.json()["error_code"] == "VALIDATION_ERROR"


def test_patch_changes_allowed_fields_rechecks_the_url_and_is_audited(subscribe, receiver):
    client, body = subscribe(receiver.url, ["run.finished"])
    url = f"/api/v1/webhooks/{body['id']}"

    response = client.patch(
        url, {"events": ["refresh.failed"], "active": False, "payload_format": "slack"}, "json"
    )
    assert response.status_code == 200
    assert response.json()["events"] == ["refresh.failed"]
    assert response.json()["active"] is False
    assert response.json()["payload_format"] == "slack"
    refused = client.patch(url, {"url": "http://169.254.169.254/"}, "json")
    assert refused.json()["error_code"] == "WEBHOOK_URL_NOT_ALLOWED"
    assert Webhook.objects.get(public_id=body["id"]).url == receiver.url
    entry = LogEntry.objects.get(additional_data__operation="webhook_updated")
    assert entry.changes["active"] == [True, False]


def test_delete_removes_the_webhook_and_is_audited(subscribe, receiver):
    client, body = subscribe(receiver.url, ["run.finished"])

    assert client.delete(f"/api/v1/webhooks/{body['id']}").status_code == 204
    assert client.get(f"/api/v1/webhooks/{body['id']}").json()["error_code"] == (
        "WEBHOOK_NOT_FOUND"
    )
    assert LogEntry.objects.filter(additional_data__operation="webhook_deleted").exists()


def test_test_event_is_queued_to_that_webhook_only(subscribe, receiver):
    client, first = subscribe(receiver.url, ["run.finished"])
    _client, second = subscribe(receiver.url, ["run.finished"], client=client)

    response = client.post(f"/api/v1/webhooks/{first['id']}/test")

    assert response.status_code == 202
    delivery = WebhookDelivery.objects.get()
    assert delivery.webhook.public_id == first["id"]
    assert delivery.event.event == "webhook.test"
    assert response.json() == {"event_id": delivery.event.public_id, "delivery_id": delivery.pk}
    log = client.get(f"/api/v1/webhooks/{first['id']}/deliveries").json()
    assert [item["event"] for item in log] == ["webhook.test"]
    assert log[0]["status"] == "pending" and log[0]["attempt_log"] == []
    assert client.get(f"/api/v1/webhooks/{second['id']}/deliveries").json() == []


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_viewers_and_operators_are_refused_every_action(member, subscribe, receiver, role):
    _admin, body = subscribe(receiver.url, ["run.finished"])
    client = member(role)
    one = f"/api/v1/webhooks/{body['id']}"

    calls = [
        client.get("/api/v1/webhooks"),
        client.post("/api/v1/webhooks", {"url": receiver.url, "events": ["run.started"]}, "json"),
        client.get(one),
        client.patch(one, {"active": False}, "json"),
        client.delete(one),
        client.get(f"{one}/deliveries"),
        client.post(f"{one}/test"),
    ]

    assert [call.status_code for call in calls] == [403] * len(calls)
    assert {call.json()["error_code"] for call in calls} == {"INSUFFICIENT_PERMISSIONS"}
    assert Webhook.objects.get().active is True and not WebhookEvent.objects.exists()


def test_another_tenants_webhook_answers_404_to_every_call(
    member, subscribe, receiver, other_tenant
):
    _admin, body = subscribe(receiver.url, ["run.finished"])
    stranger = member(Role.ADMIN, other_tenant)
    one = f"/api/v1/webhooks/{body['id']}"

    calls = [
        stranger.get(one),
        stranger.patch(one, {"active": False}, "json"),
        stranger.delete(one),
        stranger.get(f"{one}/deliveries"),
        stranger.post(f"{one}/test"),
    ]

    assert [call.status_code for call in calls] == [404] * len(calls)
    assert {call.json()["error_code"] for call in calls} == {"WEBHOOK_NOT_FOUND"}
    assert stranger.get("/api/v1/webhooks").json() == []
    assert Webhook.objects.get().active is True
