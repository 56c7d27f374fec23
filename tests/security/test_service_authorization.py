"""Services authorize themselves: an ingestion is created, changed or deleted only by an
actor whose role in its tenant allows it, whichever adapter (API, console, admin, a script)
calls the service. Each test calls the service directly, as an adapter that forgot the
check would, and then checks that nothing changed."""

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission

from ingestions.errors import PermissionDeniedError
from ingestions.models import Ingestion, Role
from ingestions.services import ingestion_create, ingestion_delete, ingestion_update

from ..factories import IngestionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingestion(tenant):
    return IngestionFactory(tenant=tenant, name="orders")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_an_admin_creates_an_ingestion(member, tenant, source_dir, role):
    actor = member(role).user
    with pytest.raises(PermissionDeniedError):
        ingestion_create(
            tenant=tenant,
            actor=actor,
            name="sneaky",
            source_uri=str(source_dir),
            source_format="csv",
            destination_table="raw.sneaky",
        )
    assert not Ingestion.objects.filter(name="sneaky").exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_an_admin_changes_or_deletes_an_ingestion(member, ingestion, role):
    actor = member(role).user
    entries = LogEntry.objects.count()
    with pytest.raises(PermissionDeniedError):
        ingestion_update(ingestion=ingestion, data={"protected": True}, actor=actor)
    with pytest.raises(PermissionDeniedError):
        ingestion_delete(ingestion=ingestion, actor=actor, confirm=True)
    ingestion.refresh_from_db()
    assert not ingestion.protected
    assert LogEntry.objects.count() == entries


def test_another_tenants_admin_can_change_nothing(member, other_tenant, ingestion):
    intruder = member(Role.ADMIN, other_tenant).user
    with pytest.raises(PermissionDeniedError):
        ingestion_update(ingestion=ingestion, data={"name": "mine now"}, actor=intruder)
    with pytest.raises(PermissionDeniedError):
        ingestion_delete(ingestion=ingestion, actor=intruder, confirm=True)
    ingestion.refresh_from_db()
    assert ingestion.name == "orders"


def test_an_admin_of_the_tenant_and_platform_staff_given_the_permission_may(member, ingestion):
    ingestion_update(ingestion=ingestion, data={"name": "by admin"}, actor=member(Role.ADMIN).user)
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="change_ingestion"))
    staff = type(staff).objects.get(pk=staff.pk)  # permissions are cached per instance
    ingestion_update(ingestion=ingestion, data={"protected": True}, actor=staff)
    ingestion.refresh_from_db()
    assert (ingestion.name, ingestion.protected) == ("by admin", True)


def test_a_run_is_queued_only_for_an_actor_who_may_run_it(member, other_tenant, ingestion):
    from ingestions.models import Run
    from ingestions.runs import run_request

    for actor in (member(Role.VIEWER).user, member(Role.ADMIN, other_tenant).user):
        with pytest.raises(PermissionDeniedError):
            run_request(ingestion=ingestion, actor=actor)
    assert not Run.objects.filter(ingestion=ingestion).exists()
    assert run_request(ingestion=ingestion, actor=member(Role.OPERATOR).user).ingestion == ingestion
