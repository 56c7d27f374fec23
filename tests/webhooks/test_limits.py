"""A tenant has at most AUTOLOADER_WEBHOOKS_PER_TENANT webhooks: one more is 409
WEBHOOK_LIMIT_REACHED, also when ten admins add one at once; other tenants are not
affected."""

import threading

import pytest
from auditlog.models import LogEntry
from django.db import connection

from ingestions.models import Role
from webhooks.models import Webhook


def create(client, url):
    return client.post("/api/v1/webhooks", {"url": url, "events": ["run.finished"]}, "json")


@pytest.mark.django_db
def test_one_webhook_more_than_the_cap_is_refused_with_409(
    member, other_tenant, subscribe, receiver, settings
):
    settings.AUTOLOADER_WEBHOOKS_PER_TENANT = 3
    client, first = subscribe(receiver.url, ["run.finished"])
    for _ in range(2):
        subscribe(receiver.url, ["run.finished"], client=client)

    refused = create(client, receiver.url)

    assert refused.status_code == 409
    assert refused.json()["error_code"] == "WEBHOOK_LIMIT_REACHED"
    assert "AUTOLOADER_WEBHOOKS_PER_TENANT" in refused.json()["detail"]
    assert Webhook.objects.count() == 3
    # Another tenant has its own cap.
    assert create(member(Role.ADMIN, other_tenant), receiver.url).status_code == 201
    # Room again once one is deleted.
    assert client.delete(f"/api/v1/webhooks/{first['id']}").status_code == 204
    assert create(client, receiver.url).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_creations_never_pass_the_cap(member, subscribe, receiver, settings):
    settings.AUTOLOADER_WEBHOOKS_PER_TENANT = 3
    subscribe(receiver.url, ["run.finished"])
    admins = [member(Role.ADMIN) for _ in range(10)]
    statuses, barrier = [], threading.Barrier(10)

    def add(admin):
        try:
            barrier.wait()
            statuses.append(create(admin, receiver.url).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(admin,)) for admin in admins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses) == [201] * 2 + [409] * 8
    assert Webhook.objects.count() == 3
    assert LogEntry.objects.filter(additional_data__operation="webhook_created").count() == 3
