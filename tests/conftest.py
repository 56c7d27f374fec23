"""Shared fixtures: an isolated Iceberg catalog per test, members with tokens, source files."""

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
from .helpers import (
    ANONYMOUS,
    BAD_TOKEN,
    OTHER_TENANTS_ADMIN,
    drain_queue,
    write_csv_files,
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


@pytest.fixture
def client_as(member, tenant, other_tenant, landing):
    """`client_as(role)` -> an API client; `client.landing` is its tenant's landing folder
    (the `landing` fixture)."""

    def make(role: str) -> APIClient:
        if role == ANONYMOUS:
            client = APIClient()
        elif role == BAD_TOKEN:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {'0' * 40}")
        elif role == OTHER_TENANTS_ADMIN:
            client = member(Role.ADMIN, tenant_obj=other_tenant)
        else:
            client = member(role)
        owner = other_tenant if role == OTHER_TENANTS_ADMIN else tenant
        client.landing = landing[owner.slug]
        return client

    return make


# --- loaded ingestions (refresh, batches, console, webhooks) ---------------------------


@pytest.fixture
def loaded(csv_ingestion, source_dir):
    """The csv ingestion after one successful run of 4 files x 25 rows."""
    from ingestions.runs import run_request

    write_csv_files(source_dir, files=4, rows=25)
    run_request(ingestion=csv_ingestion)
    drain_queue()
    return csv_ingestion


@pytest.fixture
def admin_user(member):
    return member(Role.ADMIN).user


@pytest.fixture
def three(tenant, tmp_path):
    """For batch refresh: three loaded ingestions (4, 3 and 2 files of 10 rows), each with a
    new file since."""
    from ingestions.locations import location_grant
    from ingestions.models import Ingestion
    from ingestions.runs import run_request

    ingestions = []
    for index, (name, files) in enumerate((("orders", 4), ("users", 3), ("items", 2))):
        folder = tmp_path / "landing" / name
        write_csv_files(folder, files=files, rows=10)
        if index == 0:
            location_grant(tenant=tenant, uri=str(tmp_path / "landing"))
        ingestion = IngestionFactory(
            tenant=tenant,
            public_id=name,
            source_uri=str(folder),
            source_format="csv",
            destination_table=f"raw.{name}",
        )
        run_request(ingestion=ingestion)
        drain_queue()
        write_csv_files(folder, files=1, rows=5, start=files)
        ingestions.append(Ingestion.objects.get(pk=ingestion.pk))
    return ingestions
