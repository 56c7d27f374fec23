"""The Django admin is no way around the rules: what the services record stays as they
recorded it, even for a superuser; protection and storage locations change through the
services, audited."""

import pytest
from auditlog.models import LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse

from ingestions.locations import location_grant
from ingestions.models import CommitStatus, Role, RunBatch, RunStatus, StorageLocation, Tenant
from ingestions.secrets import new_secrets_key
from refresh.models import OperationKind, RefreshPlan
from refresh.preview import refresh_preview
from refresh.services import refresh_execute

from ..factories import (
    IngestionFactory,
    MembershipFactory,
    ProcessedFileFactory,
    RunFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

RECORDS = ["run", "runbatch", "processedfile", "refreshoperation", "refreshplan", "logentry"]


@pytest.fixture
def superuser(client):
    """A Django client logged in as a staff superuser."""
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def records(tenant):
    """One of each record the services write, by the real services where they write it."""
    ingestion = IngestionFactory(tenant=tenant, public_id="sales", destination_table="raw.sales")
    admin = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    run = RunFactory(ingestion=ingestion, status=RunStatus.SUCCESS)
    operation = refresh_execute(
        ingestion=ingestion, kind=OperationKind.DROP_TABLE, actor=admin, confirm=True
    )
    plan = refresh_preview(ingestion=ingestion, kind=OperationKind.DROP_TABLE, actor=admin)
    return {
        "ingestion": ingestion,
        "run": run,
        # No service writes a batch outside a real load: the row as the worker leaves it.
        "runbatch": RunBatch.objects.create(
            run=run, batch_key="sales-1", status=CommitStatus.COMMITTED, table_name="raw.sales"
        ),
        "processedfile": ProcessedFileFactory(ingestion=ingestion),
        "refreshoperation": operation,
        "refreshplan": RefreshPlan.objects.get(public_id=plan.plan_id),
        "logentry": LogEntry.objects.filter(
            additional_data__operation=OperationKind.DROP_TABLE
        ).first(),
    }


def admin_url(obj, view: str, *args) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("name", RECORDS)
def test_records_of_the_services_cannot_be_added_changed_or_deleted_by_a_superuser(
    superuser, records, name
):
    record = records[name]

    assert superuser.get(admin_url(record, "add")).status_code == 403
    assert superuser.get(admin_url(record, "delete", record.pk)).status_code == 403
    assert superuser.post(admin_url(record, "delete", record.pk), {"post": "yes"}).status_code == (
        403
    )
    page = superuser.get(admin_url(record, "change", record.pk))
    assert page.status_code == 200  # shown, read-only
    assert 'name="_save"' not in page.content.decode()
    assert type(record).objects.filter(pk=record.pk).exists()


@pytest.mark.parametrize("name", [*RECORDS, "ingestion"])
def test_changelists_offer_no_delete_action(superuser, records, name):
    record = records[name]

    response = superuser.get(admin_url(record, "changelist"))

    assert response.status_code == 200
    assert 'value="delete_selected"' not in response.content.decode()
    deleted = superuser.post(
        admin_url(record, "changelist"),
        {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"},
    )
    assert deleted.status_code in (200, 302)
    assert type(record).objects.filter(pk=record.pk).exists()


def test_an_ingestion_cannot_be_added_or_deleted_and_only_its_protection_changes(
    superuser, records
):
    ingestion = records["ingestion"]
    change = admin_url(ingestion, "change", ingestion.pk)

    assert superuser.get(admin_url(ingestion, "add")).status_code == 403
    assert superuser.get(admin_url(ingestion, "delete", ingestion.pk)).status_code == 403
    assert list(superuser.get(change).context["adminform"].form.fields) == ["protected"]

    protected = superuser.post(change, {"protected": "on", "name": "renamed", "source_uri": "/"})
    assert protected.status_code == 302
    ingestion.refresh_from_db()
    assert ingestion.protected is True
    assert (ingestion.name, ingestion.source_uri) == (records["ingestion"].name, "/nonexistent")
    entry = LogEntry.objects.filter(additional_data__operation="ingestion_updated").get()
    assert entry.changes == {"protected": ["False", "True"]}
    assert entry.actor.username == "root"

    assert superuser.post(change, {}).status_code == 302  # the box unticked
    ingestion.refresh_from_db()
    assert ingestion.protected is False


def test_a_tenant_can_be_added_and_renamed_but_not_deleted(superuser, tenant):
    memberships = {"memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}

    added = superuser.post(
        admin_url(tenant, "add"), {"slug": "initech", "name": "Initech", **memberships}
    )
    assert added.status_code == 302
    renamed = superuser.post(
        admin_url(tenant, "change", tenant.pk), {"slug": "acme", "name": "ACME", **memberships}
    )
    assert renamed.status_code == 302
    assert Tenant.objects.get(slug="acme").name == "ACME"

    assert superuser.get(admin_url(tenant, "delete", tenant.pk)).status_code == 403
    assert superuser.post(admin_url(tenant, "delete", tenant.pk), {"post": "yes"}).status_code == (
        403
    )
    assert Tenant.objects.filter(pk=tenant.pk).exists()


# --- storage locations ------------------------------------------------------------------


@pytest.fixture
def secrets_key(settings):
    settings.AUTOLOADER_SECRETS_KEY = new_secrets_key()


def grant_form(superuser, tenant, uri: str, **fields):
    return superuser.post(
        reverse("admin:ingestions_storagelocation_add"),
        {
            "tenant": tenant.pk,
            "uri": uri,
            "name": "",
            "s3_endpoint_url": "",
            "s3_region": "",
            "s3_access_key_id": "",
            "secret_access_key": "",
            **fields,
        },
    )


def test_a_location_is_granted_through_the_service_and_its_secret_never_shown(
    superuser, tenant, secrets_key
):
    form = superuser.get(reverse("admin:ingestions_storagelocation_add")).content.decode()
    assert 'type="password" name="secret_access_key"' in form

    granted = grant_form(
        superuser,
        tenant,
        "s3://landing/acme//raw",
        s3_access_key_id="AKIAEXAMPLE",
        secret_access_key="wJalrXUtnFEMI-very-secret",
    )

    assert granted.status_code == 302
    location = StorageLocation.objects.get()
    assert location.uri == "s3://landing/acme/raw/"  # normalized by location_grant
    assert location.has_secret
    assert "wJalrXUtnFEMI" not in location.s3_secret_access_key_encrypted
    assert LogEntry.objects.filter(additional_data__operation="location_granted").exists()
    for page in (
        superuser.get(reverse("admin:ingestions_storagelocation_changelist")),
        superuser.get(reverse("admin:ingestions_storagelocation_change", args=[location.pk])),
    ):
        html = page.content.decode()
        assert "wJalrXUtnFEMI" not in html
        assert location.s3_secret_access_key_encrypted not in html
        assert "not set" not in html and ">set<" in html


def test_an_overlapping_location_is_refused_on_the_form_with_the_services_message(
    superuser, tenant, other_tenant, secrets_key
):
    location_grant(tenant=other_tenant, uri="s3://landing/shared/")
    with pytest.raises(ValidationError) as refusal:
        location_grant(tenant=tenant, uri="s3://landing/shared/acme")

    refused = grant_form(superuser, tenant, "s3://landing/shared/acme")

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["uri"] == refusal.value.message_dict["uri"]
    assert StorageLocation.objects.count() == 1


def test_only_a_locations_name_changes_and_deleting_it_revokes_it(superuser, tenant, secrets_key):
    location = location_grant(tenant=tenant, uri="s3://landing/acme/", name="Landing")
    change = reverse("admin:ingestions_storagelocation_change", args=[location.pk])

    assert list(superuser.get(change).context["adminform"].form.fields) == ["name"]
    assert superuser.post(change, {"name": "Landing zone", "uri": "s3://other/"}).status_code == (
        302
    )
    location.refresh_from_db()
    assert (location.name, location.uri) == ("Landing zone", "s3://landing/acme/")

    deleted = superuser.post(
        reverse("admin:ingestions_storagelocation_delete", args=[location.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 302
    assert not StorageLocation.objects.exists()
    assert LogEntry.objects.filter(additional_data__operation="location_revoked").exists()


def test_deleting_locations_in_bulk_revokes_each_one(superuser, tenant, secrets_key):
    locations = [location_grant(tenant=tenant, uri=f"s3://landing/{name}/") for name in ("a", "b")]

    superuser.post(
        reverse("admin:ingestions_storagelocation_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [location.pk for location in locations],
            "post": "yes",
        },
    )

    assert not StorageLocation.objects.exists()
    assert LogEntry.objects.filter(additional_data__operation="location_revoked").count() == 2
