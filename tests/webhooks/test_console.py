"""Console pages of webhooks (Django test client): admins subscribe (secret shown once),
delete and send a test event; refusals render in place; other members see who manages
them; another tenant's webhook is a 404; CSRF is enforced."""

import pytest
from django.test import Client

from ingestions.models import Role
from webhooks.delivery import deliver_due
from webhooks.models import Webhook, WebhookDelivery

from ..factories import MembershipFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def console(tenant):
    """`console(role, tenant_obj=None, csrf=False)` -> a logged-in test client."""

    def make(role=Role.ADMIN, tenant_obj=None, csrf=False):
        membership = MembershipFactory(tenant=tenant_obj or tenant, role=role)
        client = Client(enforce_csrf_checks=csrf)
        client.force_login(membership.user)
        client.user = membership.user
        return client

    return make


def create(client, url, events=("run.finished",), **extra):
    return client.post(
        "/webhooks/", {"url": url, "events": list(events), "payload_format": "json"}, **extra
    )


def test_every_member_sees_the_link_and_who_manages_webhooks(console):
    page = console(Role.VIEWER).get("/ingestions/")
    assert 'href="/webhooks/"' in page.content.decode()

    response = console(Role.OPERATOR).get("/webhooks/")

    assert response.status_code == 200
    assert "Tenant admins manage webhooks" in response.content.decode()
    assert "New webhook" not in response.content.decode()


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(console, receiver):
    client = console()

    response = create(client, receiver.url, events=["run.finished", "refresh.failed"], **HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="webhook-panel"' in html and "<html" not in html
    webhook = Webhook.objects.get()
    assert webhook.events == ["run.finished", "refresh.failed"]
    assert "you will not see it again" in html
    secret = html.split("data-webhook-secret")[1].split(">")[1].split("<")[0]
    assert secret.startswith("whsec_")
    assert "no-store" in response["Cache-Control"]  # a secret must not outlive its page
    again = client.get("/webhooks/").content.decode()
    assert webhook.public_id in again and secret not in again


def test_a_refused_url_is_rendered_in_place(console, settings):
    settings.AUTOLOADER_WEBHOOK_ALLOWED_HOSTS = []

    response = create(console(), "http://169.254.169.254/latest/meta-data/", **HTMX)

    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    html = response.content.decode()
    assert 'id="webhook-panel"' in html and "non-public address" in html
    # The refusal names the setting that would allow the host, and who can change it.
    assert "AUTOLOADER_WEBHOOK_ALLOWED_HOSTS" in html and "platform administrator" in html
    assert not Webhook.objects.exists()


def test_an_operator_posting_is_refused_in_place(console, receiver):
    response = create(console(Role.OPERATOR), receiver.url, **HTMX)

    assert response.status_code == 403
    assert response["X-Console-Fragment"] == "error"
    assert "Only tenant admins add webhooks" in response.content.decode()
    assert not Webhook.objects.exists()


# Deliveries are sent from threads of their own, which see only committed rows.
@pytest.mark.django_db(transaction=True)
def test_send_test_event_then_the_log_shows_the_delivery_and_its_attempt(console, receiver):
    client = console()
    create(client, receiver.url)
    webhook = Webhook.objects.get()
    detail = f"/webhooks/{webhook.public_id}/"

    queued = client.post(f"{detail}test/", **HTMX)
    assert queued.status_code == 200
    assert "Test event queued" in queued.content.decode()
    assert 'id="webhook-deliveries"' in queued.content.decode()
    deliver_due()

    log = client.get(detail, HTTP_HX_TARGET="webhook-deliveries", **HTMX).content.decode()
    assert "webhook.test" in log and "HTTP 200" in log and 'data-delivery-status="succeeded"' in log
    assert len(receiver.requests) == 1


def test_an_operator_cannot_send_a_test_event_nor_read_the_log(console, receiver):
    create(console(), receiver.url)
    webhook = Webhook.objects.get()
    operator = console(Role.OPERATOR)

    refused = operator.post(f"/webhooks/{webhook.public_id}/test/", **HTMX)
    assert refused.status_code == 403 and refused["X-Console-Fragment"] == "error"
    assert operator.get(f"/webhooks/{webhook.public_id}/").status_code == 404
    assert not WebhookDelivery.objects.exists()


def test_delete_in_place(console, receiver):
    client = console()
    create(client, receiver.url)
    webhook = Webhook.objects.get()

    response = client.post(f"/webhooks/{webhook.public_id}/delete/", **HTMX)

    assert response.status_code == 200
    assert f"Webhook {webhook.public_id} deleted" in response.content.decode()
    assert not Webhook.objects.exists()


def test_another_tenants_webhook_is_a_404(console, receiver, other_tenant):
    create(console(), receiver.url)
    webhook = Webhook.objects.get()
    stranger = console(Role.ADMIN, other_tenant)

    for response in (
        stranger.get(f"/webhooks/{webhook.public_id}/"),
        stranger.post(f"/webhooks/{webhook.public_id}/test/"),
        stranger.post(f"/webhooks/{webhook.public_id}/delete/"),
    ):
        assert response.status_code == 404
    assert webhook.public_id not in stranger.get("/webhooks/").content.decode()
    assert Webhook.objects.exists()


def test_posts_without_a_csrf_token_are_refused(console, receiver):
    client = console(csrf=True)

    assert create(client, receiver.url).status_code == 403
    assert not Webhook.objects.exists()
    page = client.get("/webhooks/").content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    assert create(client, receiver.url, HTTP_X_CSRFTOKEN=token).status_code == 200
    assert Webhook.objects.count() == 1
