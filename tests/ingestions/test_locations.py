"""Storage locations: URI normalization, containment, overlaps, encrypted keys, the command."""

import os

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from ingestions.errors import SourceNotAllowedError
from ingestions.locations import (
    location_grant,
    parse_storage_uri,
    source_open,
    source_resolve,
)
from ingestions.models import StorageLocation

from ..factories import TenantFactory


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("/data//acme/./in/", "file:///data/acme/in"),  # a bare path: the one form
        ("/data/acme/in/../out", "file:///data/acme/out"),
        ("FILE:///data/acme", "file:///data/acme"),
        ("file://localhost/data/a%20b", "file:///data/a%20b"),
        ("s3://bucket//in///2025/", "s3://bucket/in/2025"),
        ("S3A://bucket/in", "s3a://bucket/in"),
    ],
)
def test_uris_are_normalized_before_any_check(uri, normalized):
    assert parse_storage_uri(uri).as_uri() == normalized


@pytest.mark.parametrize(
    "uri",
    [
        "relative/path",
        "gs://bucket/x",
        "hdfs://namenode/x",
        "abfs://container@account.dfs.core.windows.net/x",
        "http://169.254.169.254/latest",
        "s3://bucket/x?endpoint_override=169.254.169.254",
        "file:///data/x#frag",
        "s3://user:secret@bucket/x",
        "s3://bucket:9000/x",
        "file://otherhost/data",
        "s3://bucket/in/../other",
        "/data/\x00x",
        "s3://B/x",
    ],
)
def test_anything_but_plain_file_and_s3_uris_is_refused(uri):
    with pytest.raises(ValueError):
        parse_storage_uri(uri)


@pytest.mark.django_db
def test_a_source_must_lie_inside_one_of_the_tenants_locations(tmp_path):
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    (tmp_path / "acme" / "in").mkdir(parents=True)
    (tmp_path / "globex").mkdir()
    location_grant(tenant=acme, uri=str(tmp_path / "acme"))
    location_grant(tenant=globex, uri=(tmp_path / "globex").as_uri())

    uri, location = source_resolve(tenant=acme, uri=f"{tmp_path}/acme//in/")
    assert uri == f"file://{tmp_path}/acme/in" and location.tenant == acme  # the one form
    for outside in [
        str(tmp_path / "globex"),
        f"{tmp_path}/acme/../globex",
        f"{tmp_path}/acme-other",  # a shared prefix is not containment
        "/etc",
    ]:
        with pytest.raises(SourceNotAllowedError) as refused:
            source_resolve(tenant=acme, uri=outside)
        assert refused.value.extra["allowed_locations"] == [f"file://{tmp_path}/acme/"]


@pytest.mark.django_db
def test_a_symlink_that_leaves_the_location_is_outside_it(tmp_path):
    acme = TenantFactory(slug="acme")
    (tmp_path / "acme").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "acme" / "escape").symlink_to(tmp_path / "elsewhere")
    location_grant(tenant=acme, uri=str(tmp_path / "acme"))

    with pytest.raises(SourceNotAllowedError):
        source_open(tenant=acme, uri=str(tmp_path / "acme" / "escape"))


@pytest.mark.django_db
def test_locations_never_overlap_each_other_or_the_products_files(tmp_path, settings):
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    location_grant(tenant=acme, uri=str(tmp_path / "acme"))
    for tenant, uri in [
        (globex, str(tmp_path / "acme" / "inner")),
        (globex, str(tmp_path)),
        (acme, str(tmp_path / "acme")),
        (globex, str(settings.DATA_DIR)),
        (globex, str(settings.DATA_DIR.parent)),
        (globex, settings.AUTOLOADER_WAREHOUSE),
        (globex, "/"),
    ]:
        with pytest.raises(ValidationError):
            location_grant(tenant=tenant, uri=uri)
    assert StorageLocation.objects.count() == 1


@pytest.mark.django_db
def test_a_linked_location_is_stored_resolved_so_its_target_cannot_be_granted_twice(tmp_path):
    acme, globex = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    location = location_grant(tenant=acme, uri=str(tmp_path / "alias"))
    assert location.uri == f"file://{tmp_path}/real/"
    with pytest.raises(ValidationError):
        location_grant(tenant=globex, uri=str(tmp_path / "real"))


@pytest.mark.django_db
def test_s3_secret_keys_are_stored_encrypted_and_never_in_clear(settings):
    acme = TenantFactory(slug="acme")
    location = location_grant(
        tenant=acme,
        uri="s3://acme-landing/in/",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_access_key_id="AKIAACME",
        s3_secret_access_key="acme-very-secret",
    )
    stored = StorageLocation.objects.values().get(pk=location.pk)
    assert "acme-very-secret" not in str(stored)
    assert location.has_secret


@pytest.mark.django_db
def test_half_a_key_pair_or_s3_settings_on_a_local_location_are_refused(tmp_path):
    acme = TenantFactory(slug="acme")
    with pytest.raises(ValidationError):
        location_grant(tenant=acme, uri="s3://acme-landing/in/", s3_access_key_id="AKIA")
    with pytest.raises(ValidationError):
        location_grant(tenant=acme, uri=str(tmp_path), s3_region="eu-west-1")


@pytest.mark.django_db
def test_the_grant_command_grants_lists_and_revokes(tmp_path, capsys):
    TenantFactory(slug="acme")
    folder = tmp_path / "landing"
    call_command("grant_location", "acme", folder.as_uri())
    call_command("grant_location", "--list")
    assert f"file://{folder}/" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("grant_location", "acme", str(folder / "inner"))
    call_command("grant_location", "--revoke", str(folder))
    assert not StorageLocation.objects.exists()


@pytest.mark.django_db
def test_the_grant_command_reads_the_secret_from_the_environment_only(monkeypatch):
    TenantFactory(slug="acme")
    monkeypatch.setenv("ACME_SECRET", "from-the-environment")
    call_command(
        "grant_location",
        "acme",
        "s3://acme-landing/in/",
        "--access-key-id",
        "AKIAACME",
        "--secret-access-key-env",
        "ACME_SECRET",
    )
    assert StorageLocation.objects.get().has_secret
    with pytest.raises(CommandError):
        call_command(
            "grant_location", "acme", "s3://acme-other/in/", "--secret-access-key-env", "UNSET_X"
        )
    assert os.environ["ACME_SECRET"] == "from-the-environment"
