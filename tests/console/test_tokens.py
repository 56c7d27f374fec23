"""The API tokens page: a user's own tokens, made (key shown once) and revoked in place."""

import re

import pytest
from django.test import Client

from ingestions.models import ApiToken, Role
from ingestions.tokens import key_digest, token_create

from ..factories import MembershipFactory
from .conftest import hx

pytestmark = pytest.mark.django_db

KEY = re.compile(r"alc_[A-Za-z0-9_-]{20,}")


def shown_keys(response) -> set[str]:
    return set(KEY.findall(response.content.decode()))


def test_the_page_requires_a_login():
    response = Client().get("/tokens/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/tokens/"


def test_a_fragment_request_without_a_login_reloads_to_the_login_page():
    response = Client().post("/tokens/", {"name": "ci"}, **hx("token-panel"))

    assert response["HX-Redirect"] == "/login/?next=%2Ftokens%2F"
    assert not ApiToken.objects.exists()


def test_the_page_lists_the_users_own_tokens(console, tenant):
    browser = console(Role.VIEWER)
    mine, _key = token_create(user=browser.user, name="airflow")
    theirs, _key = token_create(user=MembershipFactory(tenant=tenant).user, name="their-ci")

    page = browser.get("/tokens/").content.decode()

    assert "<h1>API tokens</h1>" in page
    assert "airflow" in page and f"{mine.prefix}…" in page
    assert "never" in page  # not used yet
    assert "their-ci" not in page and theirs.prefix not in page
    # The normal layout: the account menu with the tenant and the way back to this page.
    assert "Acme" in page and 'href="/tokens/"' in page
    assert not shown_keys(browser.get("/tokens/"))


def test_creating_a_token_shows_its_key_once(admin_console):
    response = admin_console.post("/tokens/", {"name": "nightly"})

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    (key,) = shown_keys(response)
    page = response.content.decode()
    assert "you will not see it again" in page
    assert f'curl -H "Authorization: Bearer {key}"' in page
    token = ApiToken.objects.get(user=admin_console.user)
    assert (token.name, token.key_digest) == ("nightly", key_digest(key))
    # A reload shows the token, never its key.
    again = admin_console.get("/tokens/")
    assert not shown_keys(again)
    assert "nightly" in again.content.decode()


def test_creating_a_token_by_htmx_answers_the_panel(admin_console):
    response = admin_console.post("/tokens/", {"name": "nightly"}, **hx("token-panel"))

    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith('<div id="token-panel">')
    assert "<html" not in page
    assert len(shown_keys(response)) == 1
    assert 'id="token-list"' in page  # the list shows the new token too


@pytest.mark.parametrize(
    ("name", "error"),
    [("ci", "You already have a token named “ci”."), ("   ", "This field is required.")],
)
def test_a_refused_name_is_shown_at_its_field(admin_console, name, error):
    token_create(user=admin_console.user, name="ci")

    response = admin_console.post("/tokens/", {"name": name}, **hx("token-panel"))

    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    page = response.content.decode()
    assert error in page
    assert 'aria-invalid="true"' in page
    assert not shown_keys(response)
    assert ApiToken.objects.filter(user=admin_console.user).count() == 1


def test_revoking_by_a_plain_post_goes_back_to_the_list(admin_console):
    token, _key = token_create(user=admin_console.user, name="old")

    response = admin_console.post(f"/tokens/{token.pk}/revoke/", follow=True)

    assert response.redirect_chain == [("/tokens/", 302)]
    assert "Token “old” revoked" in response.content.decode()
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_revoking_by_htmx_answers_the_list(admin_console):
    kept, _key = token_create(user=admin_console.user, name="kept")
    old, _key = token_create(user=admin_console.user, name="old")

    response = admin_console.post(f"/tokens/{old.pk}/revoke/", **hx("token-list"))

    page = response.content.decode()
    assert page.lstrip().startswith('<section id="token-list"')
    assert "Token “old” revoked" in page
    assert "kept" in page
    assert list(ApiToken.objects.filter(user=admin_console.user)) == [kept]


def test_revoking_needs_a_post(admin_console):
    token, _key = token_create(user=admin_console.user, name="ci")

    assert admin_console.get(f"/tokens/{token.pk}/revoke/").status_code == 405
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_another_users_token_cannot_be_revoked(console, tenant):
    token, _key = token_create(user=MembershipFactory(tenant=tenant).user, name="theirs")

    response = console(Role.ADMIN).post(f"/tokens/{token.pk}/revoke/")

    assert response.status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_posts_without_the_csrf_token_are_refused(tenant):
    user = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    token, _key = token_create(user=user, name="ci")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)

    assert browser.post("/tokens/", {"name": "sneaky"}).status_code == 403
    assert browser.post(f"/tokens/{token.pk}/revoke/").status_code == 403
    assert list(ApiToken.objects.filter(user=user)) == [token]


def test_creating_and_revoking_show_on_the_tenants_audit_page(admin_console):
    admin_console.post("/tokens/", {"name": "nightly"})
    token = ApiToken.objects.get(user=admin_console.user)
    admin_console.post(f"/tokens/{token.pk}/revoke/")

    page = admin_console.get("/audit/", {"operation": "token_created"}).content.decode()
    assert "Token created" in page
    assert admin_console.user.username in page
    page = admin_console.get("/audit/", {"operation": "token_revoked"}).content.decode()
    assert "Token revoked" in page
