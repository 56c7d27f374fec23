"""Named API tokens: shown once, stored as a digest, authenticated, revoked, audited."""

import importlib
import json
from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token as DrfToken
from rest_framework.test import APIClient

from ingestions.models import ApiToken, Role
from ingestions.tokens import (
    TokenNotFoundError,
    key_digest,
    token_authenticate,
    token_create,
    token_revoke,
)

from ..factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/ingestions"


@pytest.fixture
def alice(tenant, other_tenant):
    """A member of two tenants."""
    user = MembershipFactory(tenant=tenant, role=Role.OPERATOR, user__username="alice").user
    MembershipFactory(tenant=other_tenant, user=user, role=Role.VIEWER)
    return user


def bearer(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def token_entries(token: ApiToken):
    return LogEntry.objects.filter(additional_data__token=token.name, object_pk=str(token.pk))


def test_the_key_is_returned_once_and_only_its_digest_is_stored(alice):
    token, key = token_create(user=alice, name="airflow")

    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert stored["key_digest"] == key_digest(key)
    assert key not in json.dumps(stored, default=str)
    assert key.startswith("alc_")
    assert stored["prefix"] == key[:12]
    entries = list(token_entries(token).values())
    assert entries
    assert key not in json.dumps(entries, default=str)


def test_create_and_revoke_write_one_audit_entry_per_tenant_of_the_user(alice):
    token, _key = token_create(user=alice, name="airflow")
    token_revoke(user=alice, token_id=token.pk)

    entries = LogEntry.objects.filter(additional_data__token="airflow")
    assert sorted(
        (entry.additional_data["tenant"], entry.additional_data["operation"]) for entry in entries
    ) == [
        ("acme", "token_created"),
        ("acme", "token_revoked"),
        ("globex", "token_created"),
        ("globex", "token_revoked"),
    ]
    assert {entry.actor for entry in entries} == {alice}
    assert {entry.additional_data["prefix"] for entry in entries} == {token.prefix}


def test_a_created_token_authenticates_against_the_api(alice):
    _token, key = token_create(user=alice, name="ci")

    response = bearer(f"Bearer {key}").get(API)

    assert response.status_code == 200


def test_a_revoked_token_is_refused_with_a_json_401(alice):
    token, key = token_create(user=alice, name="ci")

    token_revoke(user=alice, token_id=token.pk)

    response = bearer(f"Bearer {key}").get(API)
    assert response.status_code == 401
    assert response.json()["error_code"] == "AUTHENTICATION_FAILED"
    assert response.json()["detail"] == "Invalid or revoked token."
    assert response["WWW-Authenticate"] == "Bearer"
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_another_users_token_cannot_be_revoked(alice, tenant):
    mallory = MembershipFactory(tenant=tenant, role=Role.ADMIN).user
    token, key = token_create(user=alice, name="ci")

    with pytest.raises(TokenNotFoundError):
        token_revoke(user=mallory, token_id=token.pk)

    assert ApiToken.objects.filter(pk=token.pk).exists()
    assert bearer(f"Bearer {key}").get(API).status_code == 200


def test_last_used_is_set_on_use_and_not_rewritten_within_a_minute(alice):
    token, key = token_create(user=alice, name="ci")
    assert token.last_used_at is None

    bearer(f"Bearer {key}").get(API)
    token.refresh_from_db()
    first_use = token.last_used_at
    assert first_use is not None

    with CaptureQueriesContext(connection) as queries:
        assert token_authenticate(key) is not None
    assert not [query for query in queries if query["sql"].lstrip().upper().startswith("UPDATE")]
    token.refresh_from_db()
    assert token.last_used_at == first_use

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first_use - timedelta(minutes=2))
    token_authenticate(key)
    token.refresh_from_db()
    assert token.last_used_at > first_use - timedelta(seconds=1)


def test_a_duplicate_name_is_refused_with_a_validation_error(alice):
    token_create(user=alice, name="ci")

    with pytest.raises(ValidationError) as refused:
        token_create(user=alice, name="  ci ")

    assert refused.value.message_dict == {"name": ["You already have a token named “ci”."]}
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_two_users_may_use_the_same_name(alice, tenant):
    bob = MembershipFactory(tenant=tenant).user
    token_create(user=alice, name="ci")

    token, _key = token_create(user=bob, name="ci")

    assert token.name == "ci"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_an_empty_or_too_long_name_is_refused(alice, name):
    with pytest.raises(ValidationError) as refused:
        token_create(user=alice, name=name)

    assert list(refused.value.message_dict) == ["name"]
    assert not ApiToken.objects.exists()


def test_the_name_is_stripped(alice):
    token, _key = token_create(user=alice, name="  nightly load  ")

    assert token.name == "nightly load"


@pytest.mark.parametrize(
    ("header", "error_code"),
    [
        ("Bearer", "AUTHENTICATION_FAILED"),
        ("Bearer ", "AUTHENTICATION_FAILED"),
        ("Bearer a b", "AUTHENTICATION_FAILED"),
        ("Bearer alc_unknown", "AUTHENTICATION_FAILED"),
        ("bearer alc_unknown", "AUTHENTICATION_FAILED"),
        ("Token x", "NOT_AUTHENTICATED"),  # not ours: no credentials were given
        ("Basic Zm9vOmJhcg==", "NOT_AUTHENTICATED"),
    ],
)
def test_a_malformed_or_unknown_authorization_is_a_json_401(header, error_code):
    response = bearer(header).get(API)

    assert response.status_code == 401
    body = response.json()
    assert body["error_code"] == error_code
    assert response["WWW-Authenticate"] == "Bearer"
    assert "unknown" not in body["detail"]  # the key is never echoed


def test_a_header_that_is_not_utf8_is_a_json_401():
    # WSGI hands headers over as latin-1: this is the byte 0xff, no UTF-8 text.
    response = bearer("Bearer \xff").get(API)

    assert response.status_code == 401
    assert response.json()["error_code"] == "AUTHENTICATION_FAILED"


def test_an_inactive_users_token_is_refused(alice):
    _token, key = token_create(user=alice, name="ci")
    alice.is_active = False
    alice.save()

    response = bearer(f"Bearer {key}").get(API)

    assert response.status_code == 401
    assert response.json()["error_code"] == "AUTHENTICATION_FAILED"
    assert token_authenticate(key) is None


def test_the_data_migration_turns_a_drf_token_into_a_default_api_token(alice):
    drf_token = DrfToken.objects.create(user=alice)
    without = UserFactory()
    migration = importlib.import_module("ingestions.migrations.0008_drf_tokens_to_api_tokens")

    migration.drf_tokens_to_api_tokens(apps, None)

    converted = ApiToken.objects.get(user=alice)
    assert (converted.name, converted.prefix) == ("default", drf_token.key[:8])
    assert converted.key_digest == key_digest(drf_token.key)
    assert converted.created_at == drf_token.created
    assert not DrfToken.objects.exists()  # no key in clear is left behind
    assert not ApiToken.objects.filter(user=without).exists()
    # The automation that used the DRF token keeps working with the same key.
    assert bearer(f"Bearer {drf_token.key}").get(API).status_code == 200


def test_the_data_migration_keeps_a_token_named_default(alice):
    token_create(user=alice, name="default")
    drf_token = DrfToken.objects.create(user=alice)
    migration = importlib.import_module("ingestions.migrations.0008_drf_tokens_to_api_tokens")

    migration.drf_tokens_to_api_tokens(apps, None)

    assert ApiToken.objects.get(key_digest=key_digest(drf_token.key)).name == "default-2"


def test_the_admin_offers_no_drf_tokens():
    from django.contrib import admin
    from rest_framework.authtoken.models import TokenProxy

    assert not admin.site.is_registered(TokenProxy)
    assert not admin.site.is_registered(DrfToken)
