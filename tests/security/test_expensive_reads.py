"""Expensive reads are bounded per caller: one tenant's previews cannot take the web tier.

Check-source and dry-runs list a source (seconds on a big folder) and anyone who may view
can ask for them. They are rate-limited per user and per tenant, and one tenant runs at most
AUTOLOADER_LISTINGS_PER_TENANT listings at once; the other tenants are untouched.
"""

import pytest

from ingestions.models import ConcurrencyLease, RateCounter, Role
from ingestions.ratelimits import concurrency_slot

from ..factories import IngestionFactory, grant_location
from ..helpers import write_csv_files

pytestmark = pytest.mark.django_db
CHECK = "/api/v1/ingestions/check-source"


@pytest.fixture
def globex_source(tmp_path, other_tenant):
    folder = tmp_path / "globex"
    write_csv_files(folder, files=2, rows=3, start=50)
    grant_location(other_tenant, str(folder))
    return folder


@pytest.fixture
def acme_ingestion(tenant, source_dir):
    write_csv_files(source_dir, files=2, rows=3)
    return IngestionFactory(
        tenant=tenant, public_id="sales", source_uri=str(source_dir), destination_table="raw.s"
    )


def dry_run(client, ingestion_id="sales"):
    return client.post(
        f"/api/v1/ingestions/{ingestion_id}/full-refresh", {"dry_run": True}, format="json"
    )


def test_a_viewer_cannot_dry_run_past_the_per_user_rate(settings, member, acme_ingestion):
    settings.AUTOLOADER_PREVIEW_RATE_LIMITS = {"user": "3/m", "tenant": "100/m"}
    viewer, colleague = member(Role.VIEWER), member(Role.VIEWER)

    answers = [dry_run(viewer).status_code for _ in range(5)]

    assert answers == [200, 200, 200, 429, 429]
    refused = dry_run(viewer)
    assert refused.json()["error_code"] == "RATE_LIMITED"
    assert "AUTOLOADER_PREVIEW_RATE_PER_USER" in refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Another user of the same tenant still has their own previews.
    assert dry_run(colleague).status_code == 200


def test_check_source_is_limited_per_tenant_and_spares_other_tenants(
    settings, member, other_tenant, source_dir, globex_source
):
    settings.AUTOLOADER_PREVIEW_RATE_LIMITS = {"user": "100/m", "tenant": "4/m"}
    write_csv_files(source_dir, files=1, rows=3)
    acme = [member(Role.ADMIN) for _ in range(3)]
    globex = member(Role.ADMIN, tenant_obj=other_tenant)
    body = {"uri": str(source_dir), "format": "csv"}

    answers = [client.post(CHECK, body, format="json").status_code for client in acme * 2]

    assert answers.count(200) == 4
    assert answers.count(429) == 2
    theirs = globex.post(CHECK, {"uri": str(globex_source), "format": "csv"}, format="json")
    assert theirs.status_code == 200
    assert theirs.json()["files"]["count"] == 2


def test_a_tenant_with_every_listing_busy_is_refused_at_once_and_others_are_not(
    settings, member, other_tenant, tenant, acme_ingestion, globex_source
):
    settings.AUTOLOADER_LISTINGS_PER_TENANT = 2
    viewer, admin = member(Role.VIEWER), member(Role.ADMIN)
    globex = member(Role.ADMIN, tenant_obj=other_tenant)
    scope = f"listing:tenant:{tenant.pk}"
    with (
        concurrency_slot(scope=scope, limit=2, lease_seconds=60, refusal=""),
        concurrency_slot(scope=scope, limit=2, lease_seconds=60, refusal=""),
    ):
        refused = dry_run(viewer)
        checked = admin.post(
            CHECK, {"uri": acme_ingestion.source_uri, "format": "csv"}, format="json"
        )
        theirs = globex.post(CHECK, {"uri": str(globex_source), "format": "csv"}, format="json")

    assert refused.status_code == 429
    assert "AUTOLOADER_LISTINGS_PER_TENANT" in refused.json()["detail"]
    assert checked.status_code == 429
    assert theirs.status_code == 200
    # A refusal by the cap gives the rate slots back; the slots are free again after.
    assert not ConcurrencyLease.objects.exists()
    assert dry_run(viewer).status_code == 200
    assert sum(RateCounter.objects.values_list("count", flat=True)) == 2 * 2  # user + tenant


def test_a_lease_left_by_a_killed_process_expires(settings, tenant, member, acme_ingestion):
    from datetime import timedelta

    from django.utils import timezone

    settings.AUTOLOADER_LISTINGS_PER_TENANT = 1
    ConcurrencyLease.objects.create(
        scope=f"listing:tenant:{tenant.pk}",
        slot=0,
        holder="dead",
        expires_at=timezone.now() - timedelta(seconds=1),
    )

    assert dry_run(member(Role.VIEWER)).status_code == 200


def test_the_workers_previews_are_not_gated(settings, member, acme_ingestion):
    """A schedule's firing previews in the worker (gate=None): a user who used up their web
    previews, or a tenant whose listings are all busy, does not make it fail."""
    from refresh.preview import refresh_preview

    settings.AUTOLOADER_PREVIEW_RATE_LIMITS = {"user": "1/m", "tenant": "1/m"}
    settings.AUTOLOADER_LISTINGS_PER_TENANT = 1
    viewer = member(Role.VIEWER)
    assert dry_run(viewer).status_code == 200
    assert dry_run(viewer).status_code == 429

    with concurrency_slot(
        scope=f"listing:tenant:{acme_ingestion.tenant.pk}",
        limit=1,
        lease_seconds=60,
        refusal="busy",
    ):
        plan = refresh_preview(
            ingestion=acme_ingestion, kind="full_refresh", actor=viewer.user, gate=None
        )

    assert plan.impact.files_to_process == 2
