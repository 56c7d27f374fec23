"""Webhooks in the Django admin: read-only for auditors, the secret never shown."""

import pytest
from django.test import Client
from django.urls import reverse

from webhooks.delivery import deliver_due
from webhooks.events import emit
from webhooks.models import Webhook, WebhookDelivery

from ..factories import UserFactory

pytestmark = pytest.mark.django_db


def test_webhooks_and_deliveries_are_read_only_without_the_secret(tenant, subscribe, receiver):
    _client, body = subscribe(receiver.url, ["run.finished"])
    emit(tenant=tenant, event="run.finished", payload={})
    deliver_due()
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    webhook = Webhook.objects.get()
    delivery = WebhookDelivery.objects.get()

    for name in ("webhooks_webhook", "webhooks_webhookdelivery"):
        assert client.get(reverse(f"admin:{name}_changelist")).status_code == 200
        assert client.get(reverse(f"admin:{name}_add")).status_code == 403
    page = client.get(reverse("admin:webhooks_webhook_change", args=[webhook.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert body["secret"] not in html and webhook.secret_encrypted not in html
    log = client.get(reverse("admin:webhooks_webhookdelivery_change", args=[delivery.pk]))
    assert log.status_code == 200 and "200" in log.content.decode()
