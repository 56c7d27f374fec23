"""Fixtures of console tests: logged-in browsers-without-a-browser (Django's test Client)."""

import pytest
from django.test import Client

from ingestions.models import Role

from ..factories import MembershipFactory

HX = {"HTTP_HX_REQUEST": "true"}


def hx(target: str) -> dict:
    """Headers of an HTMX request whose swap target is the element with id `target`."""
    return {**HX, "HTTP_HX_TARGET": target}


@pytest.fixture
def console(db, tenant):
    """`console(role, tenant_obj=...)` -> a test Client logged in as a new member."""

    def make(role: str = Role.ADMIN, tenant_obj=None):
        membership = MembershipFactory(tenant=tenant_obj or tenant, role=role)
        client = Client()
        client.force_login(membership.user)
        client.user = membership.user
        return client

    return make


@pytest.fixture
def admin_console(console):
    return console(Role.ADMIN)
