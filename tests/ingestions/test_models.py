"""What the database itself guarantees, the shape of generated ids, and per-tenant roles."""

import re
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from ingestions.models import Ingestion, Role, Run, RunStatus

from ..factories import (
    IngestionFactory,
    MembershipFactory,
    ProcessedFileFactory,
    RunFactory,
)

pytestmark = pytest.mark.django_db

FINISHED_STATUSES = [
    RunStatus.SUCCESS,
    RunStatus.PARTIAL_SUCCESS,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
]


@pytest.fixture
def ingestion(tenant):
    return IngestionFactory(tenant=tenant)


# --- at most one active run per ingestion ----------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (RunStatus.QUEUED, RunStatus.QUEUED),
        (RunStatus.QUEUED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.QUEUED),
        (RunStatus.RUNNING, RunStatus.RUNNING),
    ],
)
def test_the_database_refuses_a_second_active_run(ingestion, first, second):
    RunFactory(ingestion=ingestion, status=first)

    with pytest.raises(IntegrityError), transaction.atomic():
        RunFactory(ingestion=ingestion, status=second)

    assert Run.objects.filter(ingestion=ingestion).count() == 1


def test_the_database_refuses_to_reactivate_a_finished_run_beside_an_active_one(ingestion):
    RunFactory(ingestion=ingestion, status=RunStatus.RUNNING)
    finished = RunFactory(ingestion=ingestion, status=RunStatus.FAILED)

    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.filter(pk=finished.pk).update(status=RunStatus.QUEUED)


def test_any_number_of_finished_runs_may_sit_beside_one_active_run(ingestion):
    for status in FINISHED_STATUSES:
        RunFactory.create_batch(2, ingestion=ingestion, status=status)

    RunFactory(ingestion=ingestion, status=RunStatus.QUEUED)

    assert Run.objects.filter(ingestion=ingestion).count() == 2 * len(FINISHED_STATUSES) + 1


def test_a_new_run_may_be_queued_once_the_active_one_has_finished(ingestion):
    active = RunFactory(ingestion=ingestion, status=RunStatus.RUNNING)
    active.status = RunStatus.SUCCESS
    active.save()

    RunFactory(ingestion=ingestion, status=RunStatus.QUEUED)

    assert Run.objects.filter(ingestion=ingestion, status=RunStatus.QUEUED).count() == 1


def test_two_ingestions_may_each_have_an_active_run(tenant):
    RunFactory(ingestion=IngestionFactory(tenant=tenant), status=RunStatus.RUNNING)
    RunFactory(ingestion=IngestionFactory(tenant=tenant), status=RunStatus.RUNNING)

    assert Run.objects.filter(status=RunStatus.RUNNING).count() == 2


# --- uniqueness of history rows and ingestion ids --------------------------------------


def test_a_file_is_recorded_once_per_ingestion(ingestion):
    ProcessedFileFactory(ingestion=ingestion, path="2026/01/part-0001.csv")

    with pytest.raises(IntegrityError), transaction.atomic():
        ProcessedFileFactory(ingestion=ingestion, path="2026/01/part-0001.csv")


def test_the_same_path_may_be_recorded_by_two_ingestions(tenant):
    for ingestion in IngestionFactory.create_batch(2, tenant=tenant):
        ProcessedFileFactory(ingestion=ingestion, path="part-0001.csv")

    assert Ingestion.objects.filter(processed_files__path="part-0001.csv").count() == 2


def test_an_ingestion_id_is_unique_within_its_tenant(tenant):
    IngestionFactory(tenant=tenant, public_id="users-snapshot")

    with pytest.raises(IntegrityError), transaction.atomic():
        IngestionFactory(tenant=tenant, public_id="users-snapshot")


def test_another_tenant_may_use_the_same_ingestion_id_and_table(tenant, other_tenant):
    IngestionFactory(tenant=tenant, public_id="users-snapshot", destination_table="raw.users")

    IngestionFactory(tenant=other_tenant, public_id="users-snapshot", destination_table="raw.users")

    assert Ingestion.objects.filter(public_id="users-snapshot").count() == 2


def test_two_ingestions_of_a_tenant_cannot_load_into_one_table(tenant):
    IngestionFactory(tenant=tenant, destination_table="raw.users")

    with pytest.raises(IntegrityError), transaction.atomic():
        IngestionFactory(tenant=tenant, destination_table="raw.users")


# --- generated ids ---------------------------------------------------------------------


def test_generated_ingestion_and_run_ids_are_prefixed_random_hex(tenant):
    ingestions = [
        Ingestion.objects.create(
            tenant=tenant,
            name=f"Feed {number}",
            source_uri="/data",
            source_format="csv",
            destination_table=f"raw.feed_{number}",
        )
        for number in range(2)
    ]
    runs = [Run.objects.create(ingestion=ingestion) for ingestion in ingestions]

    assert all(re.fullmatch(r"ing-[0-9a-f]{12}", item.public_id) for item in ingestions)
    assert all(re.fullmatch(r"run-[0-9a-f]{12}", item.public_id) for item in runs)
    assert ingestions[0].public_id != ingestions[1].public_id
    assert runs[0].public_id != runs[1].public_id


# --- progress and duration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "found", "loaded", "failed", "progress"),
    [
        (RunStatus.QUEUED, 0, 0, 0, 0.0),
        (RunStatus.RUNNING, 4, 0, 0, 0.0),
        (RunStatus.RUNNING, 4, 2, 1, 0.75),
        (RunStatus.RUNNING, 3, 1, 0, 0.3333),
        (RunStatus.PARTIAL_SUCCESS, 4, 3, 1, 1.0),
        # A resumed run counts files loaded by its earlier attempt: never above 100 %.
        (RunStatus.RUNNING, 2, 3, 0, 1.0),
        # Nothing new to load is still a finished job.
        (RunStatus.SUCCESS, 0, 0, 0, 1.0),
    ],
)
def test_run_progress_is_the_share_of_found_files_dealt_with(
    status, found, loaded, failed, progress
):
    run = Run(status=status, files_found=found, files_loaded=loaded, files_failed=failed)

    assert run.progress == progress


def test_run_duration_is_known_once_the_run_has_finished():
    started = timezone.now()

    assert Run(started_at=None, finished_at=None).duration_seconds is None
    assert Run(started_at=started, finished_at=None).duration_seconds is None
    finished = Run(
        started_at=started, finished_at=started + timedelta(seconds=90, milliseconds=500)
    )
    assert finished.duration_seconds == 90.5


# --- per-tenant roles (TenantRoleBackend) ----------------------------------------------


@pytest.fixture
def globex_ingestion(other_tenant):
    return IngestionFactory(tenant=other_tenant)


def member_of(tenant, role):
    return MembershipFactory(tenant=tenant, role=role).user


@pytest.mark.parametrize(
    ("role", "permission", "granted"),
    [
        (Role.VIEWER, "view_ingestion", True),
        (Role.VIEWER, "run_ingestion", False),
        (Role.VIEWER, "change_ingestion", False),
        (Role.OPERATOR, "run_ingestion", True),
        (Role.OPERATOR, "fresh_start_ingestion", True),
        (Role.OPERATOR, "full_refresh_ingestion", False),
        (Role.OPERATOR, "clear_history_ingestion", False),
        (Role.OPERATOR, "delete_ingestion", False),
        (Role.ADMIN, "full_refresh_ingestion", True),
        (Role.ADMIN, "drop_table_ingestion", True),
        (Role.ADMIN, "clear_history_ingestion", True),
        (Role.ADMIN, "delete_ingestion", True),
    ],
)
def test_a_role_grants_its_permissions_on_its_tenants_ingestions(
    tenant, ingestion, role, permission, granted
):
    user = member_of(tenant, role)

    assert user.has_perm(f"ingestions.{permission}", ingestion) is granted


def test_an_admin_has_no_permission_on_another_tenants_ingestion(
    tenant, ingestion, globex_ingestion
):
    admin = member_of(tenant, Role.ADMIN)

    assert admin.has_perm("ingestions.full_refresh_ingestion", ingestion)
    assert not admin.has_perm("ingestions.full_refresh_ingestion", globex_ingestion)
    assert not admin.has_perm("ingestions.view_ingestion", globex_ingestion)


def test_permissions_follow_the_role_in_the_tenant_that_owns_the_object(
    tenant, other_tenant, ingestion, globex_ingestion
):
    user = member_of(tenant, Role.ADMIN)
    MembershipFactory(user=user, tenant=other_tenant, role=Role.VIEWER)

    assert user.has_perm("ingestions.full_refresh_ingestion", ingestion)
    assert user.has_perm("ingestions.view_ingestion", globex_ingestion)
    assert not user.has_perm("ingestions.full_refresh_ingestion", globex_ingestion)


def test_a_run_is_judged_by_its_ingestions_tenant(tenant, ingestion, globex_ingestion):
    operator = member_of(tenant, Role.OPERATOR)

    assert operator.has_perm("ingestions.run_ingestion", RunFactory(ingestion=ingestion))
    assert not operator.has_perm("ingestions.run_ingestion", RunFactory(ingestion=globex_ingestion))


def test_has_perm_without_an_object_grants_nothing(tenant):
    admin = member_of(tenant, Role.ADMIN)

    assert not admin.has_perm("ingestions.view_ingestion")
    assert not admin.has_perm("ingestions.full_refresh_ingestion")
    assert admin.get_all_permissions() == set()


def test_an_inactive_user_has_no_permission(tenant, ingestion):
    admin = member_of(tenant, Role.ADMIN)
    admin.is_active = False
    admin.save()

    assert not admin.has_perm("ingestions.view_ingestion", ingestion)
    assert not admin.has_perm("ingestions.view_ingestion", tenant)
    assert admin.get_all_permissions(ingestion) == set()
