"""The tenant switcher: a user in several tenants chooses which one the console acts for."""

import pytest
from django.test import Client

from ingestions.models import Membership, Role
from ingestions.tenancy import SESSION_TENANT_KEY

from ..factories import IngestionFactory, MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_tenants_user(tenant, other_tenant):
    IngestionFactory(tenant=tenant, name="Acme sales")
    IngestionFactory(tenant=other_tenant, name="Globex orders")
    membership = MembershipFactory(tenant=tenant, role=Role.ADMIN)
    MembershipFactory(user=membership.user, tenant=other_tenant, role=Role.VIEWER)
    client = Client()
    client.force_login(membership.user)
    return client


def test_the_switcher_shows_only_for_users_in_several_tenants(two_tenants_user, console):
    page = two_tenants_user.get("/ingestions/").content.decode()
    assert '<select id="tenant-switch" name="tenant"' in page
    assert "Acme sales" in page and "Globex orders" not in page
    single = console(Role.VIEWER).get("/ingestions/").content.decode()
    assert "tenant-switch" not in single


def test_switching_acts_for_the_other_tenant_with_its_role(two_tenants_user):
    response = two_tenants_user.post("/tenant/", {"tenant": "globex"})
    assert response.status_code == 302
    assert two_tenants_user.session[SESSION_TENANT_KEY] == "globex"
    page = two_tenants_user.get("/ingestions/").content.decode()
    assert "Globex orders" in page and "Acme sales" not in page
    assert '<span class="role">Viewer</span>' in page


def test_switching_to_a_tenant_one_is_not_a_member_of_is_refused(two_tenants_user):
    TenantFactory(slug="initech")
    response = two_tenants_user.post("/tenant/", {"tenant": "initech"}, follow=True)
    assert SESSION_TENANT_KEY not in two_tenants_user.session
    assert "You are not a member of that tenant." in response.content.decode()


def test_a_tenant_left_since_it_was_chosen_is_forgotten(two_tenants_user):
    two_tenants_user.post("/tenant/", {"tenant": "globex"})
    Membership.objects.filter(tenant__slug="globex").delete()
    page = two_tenants_user.get("/ingestions/")
    assert page.status_code == 200
    assert "Acme sales" in page.content.decode()
    assert SESSION_TENANT_KEY not in two_tenants_user.session


def test_the_switcher_needs_a_post_with_the_csrf_token(two_tenants_user, tenant):
    assert two_tenants_user.get("/tenant/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(Membership.objects.filter(tenant=tenant).first().user)
    assert strict.post("/tenant/", {"tenant": "globex"}).status_code == 403
