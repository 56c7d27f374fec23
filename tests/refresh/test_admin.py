"""The Django admin lets auditors review refresh operations and their audit entries."""

import pytest
from auditlog.models import LogEntry
from django.urls import reverse

from ingestions.errors import PermissionDeniedError
from ingestions.models import Role
from refresh.models import OperationKind, RefreshOperation
from refresh.preview import refresh_preview
from refresh.services import refresh_execute

from ..factories import IngestionFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

LOG_ENTRIES = reverse("admin:auditlog_logentry_changelist")
OPERATIONS = reverse("admin:refresh_refreshoperation_changelist")
PLANS = reverse("admin:refresh_refreshplan_changelist")


@pytest.fixture
def auditor(client):
    """A Django client logged in as a superuser."""
    client.force_login(UserFactory(username="auditor", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def audited(csv_ingestion, tenant, other_tenant):
    """Audit entries written by the real services: two tables dropped, one refusal."""
    acme_admin = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    acme_viewer = MembershipFactory(tenant=tenant, role=Role.VIEWER).user
    globex_admin = MembershipFactory(tenant=other_tenant, role=Role.ADMIN).user
    globex_ingestion = IngestionFactory(tenant=other_tenant, destination_table="raw.orders")

    refresh_execute(
        ingestion=csv_ingestion, kind=OperationKind.DROP_TABLE, actor=acme_admin, confirm=True
    )
    refresh_execute(
        ingestion=globex_ingestion, kind=OperationKind.DROP_TABLE, actor=globex_admin, confirm=True
    )
    with pytest.raises(PermissionDeniedError):
        refresh_execute(
            ingestion=csv_ingestion,
            kind=OperationKind.FULL_REFRESH,
            actor=acme_viewer,
            confirm=True,
        )
    return {
        "acme_admin": acme_admin,
        "acme_viewer": acme_viewer,
        "globex_admin": globex_admin,
        "ingestion_name": csv_ingestion.name,
    }


def listed(response) -> list:
    assert response.status_code == 200
    return list(response.context["cl"].queryset)


def audit_keys(entries) -> set[tuple]:
    """(tenant, operation, outcome, actor) of each refresh entry.

    The log also holds the setup's own changes (locations granted, ingestions created by the
    factories, by no actor); this file is about refresh operations' entries.
    """
    keys = set()
    for entry in entries:
        data = entry.additional_data
        if data["operation"] in OperationKind.values:
            keys.add((data["tenant"], data["operation"], data["outcome"], entry.actor.username))
    return keys


def test_the_audit_log_lists_every_refresh_entry_with_its_tenant_operation_and_outcome(
    auditor, audited
):
    response = auditor.get(LOG_ENTRIES)

    assert audit_keys(listed(response)) == {
        ("acme", "drop_table", "success", audited["acme_admin"].username),
        ("globex", "drop_table", "success", audited["globex_admin"].username),
        ("acme", "full_refresh", "refused", audited["acme_viewer"].username),
    }
    page = response.content.decode()
    for filter_title in ("By tenant", "By refresh operation", "By outcome"):
        assert filter_title in page
    assert "refused" in page and "globex" in page
    # The ingestion by its name beside its id (the factory names it "Ingestion <n>").
    name = audited["ingestion_name"]
    assert f"{name} (sales)" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"tenant": "globex"}, {("globex", "drop_table", "success")}),
        ({"operation": "full_refresh"}, {("acme", "full_refresh", "refused")}),
        ({"outcome": "refused"}, {("acme", "full_refresh", "refused")}),
        (
            {"outcome": "success"},
            {("acme", "drop_table", "success"), ("globex", "drop_table", "success")},
        ),
        ({"tenant": "acme", "operation": "drop_table"}, {("acme", "drop_table", "success")}),
    ],
)
def test_each_audit_filter_narrows_the_log(auditor, audited, query, expected):
    entries = listed(auditor.get(LOG_ENTRIES, query))

    assert {key[:3] for key in audit_keys(entries)} == expected


def test_the_refusal_entry_names_the_actor_and_the_reason(auditor, audited):
    (entry,) = listed(auditor.get(LOG_ENTRIES, {"outcome": "refused"}))

    assert entry.actor == audited["acme_viewer"]
    assert entry.additional_data["reason"] == "INSUFFICIENT_PERMISSIONS"
    assert entry.action == LogEntry.Action.ACCESS


def test_operations_changelist_filters_by_kind_status_and_tenant(auditor, audited, tenant):
    assert len(listed(auditor.get(OPERATIONS))) == 2
    assert listed(auditor.get(OPERATIONS, {"kind": "full_refresh"})) == []
    assert len(listed(auditor.get(OPERATIONS, {"kind": "drop_table", "status": "success"}))) == 2
    (acme_operation,) = listed(auditor.get(OPERATIONS, {"tenant__id__exact": tenant.pk}))
    assert acme_operation.ingestion_public_id == "sales"


def test_an_operation_page_shows_its_steps_read_only(auditor, audited):
    operation = RefreshOperation.objects.get(ingestion__public_id="sales")

    response = auditor.get(reverse("admin:refresh_refreshoperation_change", args=[operation.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "table_dropped" in page
    assert operation.public_id in page
    assert 'name="_save"' not in page  # nothing to save: the record is read-only
    assert auditor.get(reverse("admin:refresh_refreshoperation_add")).status_code == 403


def test_plans_changelist_lists_dry_runs(auditor, csv_ingestion, tenant):
    admin_user = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    plan = refresh_preview(
        ingestion=csv_ingestion, kind=OperationKind.FULL_REFRESH, actor=admin_user
    )

    plans = listed(auditor.get(PLANS, {"kind": "full_refresh"}))

    assert [record.public_id for record in plans] == [plan.plan_id]


def test_membership_changes_in_the_admin_are_audited(auditor, tenant):
    """Adding a member, changing a role and removing a member through the tenant's inline
    each leave an entry naming the staff user, in the tenant's audit."""
    from ingestions.models import Membership

    user = UserFactory(username="newcomer")
    url = reverse("admin:ingestions_tenant_change", args=[tenant.pk])

    def post(rows: list[dict]):
        data = {
            "slug": tenant.slug,
            "name": tenant.name,
            "memberships-TOTAL_FORMS": str(len(rows)),
            "memberships-INITIAL_FORMS": str(sum(1 for row in rows if row.get("id"))),
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        }
        for index, row in enumerate(rows):
            for key, value in row.items():
                data[f"memberships-{index}-{key}"] = value
            data[f"memberships-{index}-tenant"] = str(tenant.pk)
        response = auditor.post(url, data)
        assert response.status_code == 302, response.context["errors"] if response.context else ""

    post([{"user": str(user.pk), "role": Role.VIEWER}])
    membership = Membership.objects.get(user=user, tenant=tenant)
    post([{"id": str(membership.pk), "user": str(user.pk), "role": Role.OPERATOR}])
    post([{"id": str(membership.pk), "user": str(user.pk), "role": Role.OPERATOR, "DELETE": "on"}])

    assert not Membership.objects.filter(user=user).exists()
    entries = LogEntry.objects.filter(
        additional_data__operation__startswith="membership_"
    ).order_by("id")
    assert [
        (e.additional_data["operation"], e.changes["role"], e.actor.username) for e in entries
    ] == [
        ("membership_added", [None, "viewer"], "auditor"),
        ("membership_changed", ["viewer", "operator"], "auditor"),
        ("membership_removed", ["operator", None], "auditor"),
    ]
    assert {e.additional_data["tenant"] for e in entries} == {tenant.slug}
    assert {e.additional_data["member"] for e in entries} == {"newcomer"}


def test_failed_files_and_tokens_are_read_only_in_the_admin(auditor):
    for model in ("filefailure", "apitoken"):
        assert auditor.get(reverse(f"admin:ingestions_{model}_changelist")).status_code == 200
        assert auditor.get(reverse(f"admin:ingestions_{model}_add")).status_code == 403
