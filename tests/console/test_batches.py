"""The console's batch refresh: a combined preview, the number of tables typed to confirm,
then a page that follows the batch to published (or failed, naming the member)."""

import re

import pytest
from django.test import Client

from ingestions.models import Role
from refresh.models import BatchStatus, RefreshBatch, RefreshOperation

from ..helpers import drain_queue, rows

pytestmark = pytest.mark.django_db(transaction=True)

NEW = "/refresh-batches/new/"
CHOSEN = "?ingestion_ids=orders&ingestion_ids=users&operation=full_refresh"


def confirm_body(page: str, typed: str) -> dict:
    plan_id = re.search(r'name="plan_id" value="([^"]+)"', page).group(1)
    return {
        "ingestion_ids": ["orders", "users"],
        "operation": "full_refresh",
        "plan_id": plan_id,
        "typed_count": typed,
    }


def test_preview_then_typed_count_runs_the_batch_and_its_page_follows_it(console, three):
    client = console(Role.ADMIN)
    page = client.get(NEW + CHOSEN).content.decode()
    assert "Full refresh of 2 tables together" in page
    assert 'data-total="files_to_process">9<' in page  # 5 + 4
    assert not RefreshOperation.objects.exists()

    wrong = client.post(NEW, confirm_body(page, "3"))
    assert wrong.status_code == 400
    assert "not the number of tables (2)" in wrong.content.decode()
    assert not RefreshOperation.objects.exists()

    response = client.post(NEW, confirm_body(page, "2"))
    batch = RefreshBatch.objects.get(status=BatchStatus.LOADING)
    assert response.status_code == 302
    assert response["Location"] == f"/refresh-batches/{batch.public_id}/"
    page = client.get(response["Location"]).content.decode()
    assert "data-polling" in page and "Loading" in page

    drain_queue()
    page = client.get(f"/refresh-batches/{batch.public_id}/").content.decode()
    assert "new version is live." in page
    assert "data-polling" not in page
    assert [rows(ingestion) for ingestion in three[:2]] == [45, 35]


def test_a_refused_member_is_said_on_the_preview_and_nothing_starts(console, three):
    three[1].protected = True
    three[1].save()
    client = console(Role.ADMIN)
    page = client.get(NEW + CHOSEN).content.decode()
    response = client.post(NEW, confirm_body(page, "2"))
    assert response.status_code == 423
    assert "users: Ingestion users is protected" in response.content.decode()
    assert not RefreshOperation.objects.exists()


def test_a_used_up_table_is_said_on_the_preview_and_no_confirmation_is_offered(
    console, three, settings
):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    client = console(Role.ADMIN)
    fresh = client.get(NEW + CHOSEN).content.decode()
    assert 'data-quota="left"' in fresh and 'name="typed_count"' in fresh

    client.post(NEW, confirm_body(fresh, "2"))  # takes each table's only slot
    drain_queue()
    page = client.get(NEW + CHOSEN).content.decode()

    assert "RATE_LIMITED" in page and "REFRESH_RATE_FULL_REFRESH" in page
    assert 'data-quota="exhausted"' in page
    assert 'name="typed_count"' not in page and "data-confirm-button" not in page
    assert RefreshOperation.objects.count() == 2  # the first batch's two, nothing more


def test_bad_choices_and_other_tenants(console, three, other_tenant):
    client = console(Role.ADMIN)
    assert client.get(NEW).status_code == 400
    assert client.get(NEW + "?ingestion_ids=orders&operation=drop_table").status_code == 400
    assert client.get(NEW + "?ingestion_ids=nope&operation=full_refresh").status_code == 404
    outsider = console(Role.ADMIN, tenant_obj=other_tenant)
    assert outsider.get(NEW + CHOSEN).status_code == 404
    client.post(NEW, confirm_body(client.get(NEW + CHOSEN).content.decode(), "2"))
    batch = RefreshBatch.objects.get(status=BatchStatus.LOADING)
    assert outsider.get(f"/refresh-batches/{batch.public_id}/").status_code == 404


def test_a_viewer_is_refused_and_csrf_is_enforced(console, three):
    viewer = console(Role.VIEWER)
    page = viewer.get(NEW + CHOSEN).content.decode()
    response = viewer.post(NEW, confirm_body(page, "2"))
    assert response.status_code == 403
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(console(Role.ADMIN).user)
    assert strict.post(NEW, confirm_body(page, "2")).status_code == 403
    assert not RefreshOperation.objects.exists()
