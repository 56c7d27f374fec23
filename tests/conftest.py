"""Shared fixtures: an isolated Iceberg catalog per test, members with tokens, source files."""

import csv
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from ingestions.models import Role
from ingestions.secrets import new_secrets_key
from ingestions.tokens import token_create

from .factories import (
    IngestionFactory,
    MembershipFactory,
    TenantFactory,
    UserFactory,
    grant_location,
)

TEST_SECRETS_KEY = new_secrets_key()


@pytest.fixture(autouse=True)
def isolated_catalog(settings, tmp_path):
    """Every test gets its own Iceberg SQL catalog and warehouse under tmp_path."""
    settings.AUTOLOADER_CATALOG_URI = f"sqlite:///{tmp_path / 'catalog.db'}"
    settings.AUTOLOADER_WAREHOUSE = (tmp_path / "warehouse").as_uri()
    settings.AUTOLOADER_CATALOG_NAME = "test"
    # Tests run with DEBUG off, where location secrets need a configured key.
    settings.AUTOLOADER_SECRETS_KEY = TEST_SECRETS_KEY
    return settings


@pytest.fixture
def tenant(db):
    return TenantFactory(slug="acme", name="Acme")


@pytest.fixture
def other_tenant(db):
    return TenantFactory(slug="globex", name="Globex")


@pytest.fixture
def member(db, tenant):
    """`member(role, tenant=...)` -> an APIClient authenticated with a Bearer token
    (`client.token_key`)."""

    def make(role: str = Role.ADMIN, tenant_obj=None):
        user = UserFactory()
        # Made before the membership, so it leaves no entry in the tenant's audit.
        _token, key = token_create(user=user, name="tests")
        membership = MembershipFactory(user=user, tenant=tenant_obj or tenant, role=role)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        client.user = membership.user
        client.token_key = key
        return client

    return make


@pytest.fixture
def admin_client(member):
    return member(Role.ADMIN)


def open_table(table_name: str):
    """Open a table from outside the product, with plain pyiceberg, as a user would."""
    from django.conf import settings
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        settings.AUTOLOADER_CATALOG_NAME,
        uri=settings.AUTOLOADER_CATALOG_URI,
        warehouse=settings.AUTOLOADER_WAREHOUSE,
    )
    return catalog.load_table(table_name)


def write_csv_files(folder: Path, *, files: int, rows: int, start: int = 0) -> list[Path]:
    """Write `files` CSV files of `rows` rows each; ids are unique across files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + files):
        path = folder / f"part-{index:04d}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "amount"])
            for row in range(rows):
                writer.writerow([index * 100000 + row, f"name-{index}-{row}", row * 1.5])
        paths.append(path)
    return paths


@pytest.fixture
def source_dir(tmp_path, request):
    """An empty source folder; in database tests it is granted to `tenant` as a location."""
    folder = tmp_path / "source"
    folder.mkdir()
    uses_db = request.node.get_closest_marker("django_db") or {
        "db",
        "transactional_db",
    } & set(request.fixturenames)
    if uses_db:
        grant_location(request.getfixturevalue("tenant"), str(folder))
    return folder


@pytest.fixture
def landing(tmp_path, tenant, other_tenant) -> dict:
    """A landing folder for each of `tenant` and `other_tenant`, granted to it as its storage
    location: {slug: folder}."""
    from ingestions.locations import location_grant

    folders = {}
    for owner in (tenant, other_tenant):
        folder = tmp_path / "landing" / owner.slug
        folder.mkdir(parents=True)
        location_grant(tenant=owner, uri=str(folder))
        folders[owner.slug] = folder
    return folders


@pytest.fixture
def open_source(tenant, source_dir):
    """`open_source(uri=None)` -> the checked handle (`ingestions.locations.source_open`) that
    listing and reading take: `source_dir` by default, opened as `tenant`, whose location it is.
    """
    from ingestions.locations import source_open

    def open_as_tenant(uri: str | None = None):
        return source_open(tenant=tenant, uri=str(source_dir) if uri is None else uri)

    return open_as_tenant


@pytest.fixture
def csv_ingestion(tenant, source_dir):
    return IngestionFactory(
        tenant=tenant,
        public_id="sales",
        source_uri=str(source_dir),
        source_format="csv",
        destination_table="raw.sales",
    )
