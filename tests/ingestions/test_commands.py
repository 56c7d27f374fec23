"""Management commands: tenants, users, tokens and the demo, as an operator runs them."""

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from ingestions.demo import DEMO_INGESTIONS, DEMO_USERS
from ingestions.management.commands.seed_demo import DEFAULT_DEMO_PASSWORD
from ingestions.management.commands.serve import Command as ServeCommand
from ingestions.models import (
    ApiToken,
    Ingestion,
    Membership,
    Role,
    Run,
    RunStatus,
    RunTrigger,
    StorageLocation,
    Tenant,
)
from ingestions.tokens import key_digest

from ..factories import MembershipFactory, TenantFactory

pytestmark = pytest.mark.django_db


def run_command(*args) -> list[str]:
    """Call a management command; returns its output lines."""
    stdout = io.StringIO()
    call_command(*args, stdout=stdout)
    return stdout.getvalue().splitlines()


def api_client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def initech():
    return TenantFactory(slug="initech", name="Initech")


@pytest.fixture
def bob(initech):
    return MembershipFactory(tenant=initech, user__username="bob", role=Role.OPERATOR).user


# --- create_tenant ---------------------------------------------------------------------


def test_create_tenant_derives_the_slug_from_the_name():
    output = run_command("create_tenant", "Initech")

    tenant = Tenant.objects.get()
    assert (tenant.slug, tenant.name) == ("initech", "Initech")
    assert output == ["created: tenant initech"]


def test_create_tenant_is_idempotent():
    run_command("create_tenant", "Initech")

    output = run_command("create_tenant", "Initech")

    assert Tenant.objects.count() == 1
    assert output == ["exists: tenant initech"]


# --- create_user -----------------------------------------------------------------------


def test_create_user_makes_a_member_with_the_role_and_password(initech):
    run_command(
        "create_user", "bob", "--tenant", "initech", "--role", "operator", "--password", "pw-1"
    )

    user = get_user_model().objects.get(username="bob")
    assert user.check_password("pw-1")
    assert Membership.objects.get(user=user, tenant=initech).role == Role.OPERATOR


def test_create_user_accepts_the_tenant_name_as_well_as_its_slug(initech):
    run_command("create_user", "bob", "--tenant", "Initech", "--role", "viewer", "--password", "p")

    assert Membership.objects.get(user__username="bob").tenant == initech


def test_create_user_rerun_updates_the_role_and_keeps_the_password(initech):
    run_command(
        "create_user", "bob", "--tenant", "initech", "--role", "operator", "--password", "pw-1"
    )

    output = run_command("create_user", "bob", "--tenant", "initech", "--role", "admin")

    user = get_user_model().objects.get(username="bob")
    assert Membership.objects.filter(user=user).count() == 1
    assert Membership.objects.get(user=user).role == Role.ADMIN
    assert user.check_password("pw-1")
    assert output == ["updated: bob is admin of initech"]


def test_create_user_without_a_password_prints_a_generated_one_that_works(initech):
    output = run_command("create_user", "bob", "--tenant", "initech", "--role", "viewer")

    assert output[-1].startswith("password: ")
    password = output[-1].removeprefix("password: ")
    assert len(password) >= 12
    assert get_user_model().objects.get(username="bob").check_password(password)


def test_create_user_refuses_an_unknown_tenant():
    with pytest.raises(CommandError, match="create_tenant"):
        run_command("create_user", "bob", "--tenant", "nowhere", "--role", "viewer")

    assert not get_user_model().objects.filter(username="bob").exists()


def test_create_user_refuses_an_unknown_role(initech):
    with pytest.raises(CommandError):
        run_command("create_user", "bob", "--tenant", "initech", "--role", "superuser")


# --- create_token ----------------------------------------------------------------------


def test_create_token_prints_the_token_alone_on_the_last_line_and_it_works(bob):
    token = run_command("create_token", "bob")[-1]

    assert token.startswith("alc_")
    assert " " not in token
    response = api_client_with(token).get("/api/v1/ingestions")
    assert response.status_code == 200
    stored = ApiToken.objects.get(user=bob)
    assert (stored.name, stored.key_digest) == ("cli", key_digest(token))


def test_create_token_refuses_a_second_token_of_the_same_name(bob):
    run_command("create_token", "bob")

    with pytest.raises(CommandError, match="--rotate"):
        run_command("create_token", "bob")


def test_create_token_with_another_name_makes_a_second_token(bob):
    first = run_command("create_token", "bob")[-1]

    second = run_command("create_token", "bob", "--name", "airflow")[-1]

    assert second != first
    assert set(ApiToken.objects.filter(user=bob).values_list("name", flat=True)) == {
        "cli",
        "airflow",
    }
    assert api_client_with(first).get("/api/v1/ingestions").status_code == 200
    assert api_client_with(second).get("/api/v1/ingestions").status_code == 200


def test_create_token_rotate_replaces_the_token_and_the_old_one_stops_working(bob):
    old = run_command("create_token", "bob")[-1]

    new = run_command("create_token", "bob", "--rotate")[-1]

    assert new != old
    assert api_client_with(new).get("/api/v1/ingestions").status_code == 200
    refused = api_client_with(old).get("/api/v1/ingestions")
    assert refused.status_code == 401
    assert refused.json()["error_code"] == "AUTHENTICATION_FAILED"


def test_create_token_refuses_an_unknown_user():
    with pytest.raises(CommandError, match="nobody"):
        run_command("create_token", "nobody")


# --- seed_demo -------------------------------------------------------------------------


@pytest.fixture
def data_dir(settings, tmp_path):
    """A data dir and the demo's landing zone beside it, out of the repo's var/ (and out of
    the landing zone of the data dir the tests run with)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.AUTOLOADER_DEMO_LANDING_DIR = tmp_path / "data-landing"
    return settings.DATA_DIR


def demo_counts() -> dict[str, int]:
    return {
        "tenants": Tenant.objects.count(),
        "users": get_user_model().objects.count(),
        "memberships": Membership.objects.count(),
        "ingestions": Ingestion.objects.count(),
        "runs": Run.objects.count(),
    }


def test_seed_demo_creates_tenants_users_and_ingestions(data_dir):
    run_command("seed_demo", "--no-runs")

    assert set(Tenant.objects.values_list("slug", flat=True)) == {"acme", "globex"}
    assert set(Membership.objects.values_list("user__username", "tenant__slug", "role")) == {
        ("admin", "acme", Role.ADMIN),
        ("operator", "acme", Role.OPERATOR),
        ("viewer", "acme", Role.VIEWER),
        ("globex-admin", "globex", Role.ADMIN),
        ("consultant", "acme", Role.OPERATOR),
        ("consultant", "globex", Role.VIEWER),
    }
    auditor = get_user_model().objects.get(username="auditor")
    assert auditor.is_staff and not auditor.is_superuser and not auditor.memberships.exists()
    assert auditor.has_perm("auditlog.view_logentry")
    assert not auditor.has_perm("auditlog.delete_logentry")
    admin_site = Client()
    assert admin_site.login(username="auditor", password=DEFAULT_DEMO_PASSWORD)
    assert admin_site.get("/admin/auditlog/logentry/").status_code == 200
    assert admin_site.get("/admin/refresh/refreshoperation/").status_code == 200
    assert admin_site.get("/admin/ingestions/ingestion/").status_code == 403
    assert set(Ingestion.objects.values_list("tenant__slug", "public_id")) == {
        ("acme", "sales-daily"),
        ("acme", "web-events"),
        ("globex", "orders"),
    }
    assert not Run.objects.exists()


def test_seed_demo_writes_its_source_files_in_the_landing_zone_beside_the_data_dir(
    data_dir, settings
):
    run_command("seed_demo", "--no-runs")

    sources = settings.AUTOLOADER_DEMO_LANDING_DIR
    assert len(list((sources / "acme" / "sales").rglob("*.csv"))) == 12
    assert len(list((sources / "acme" / "events").glob("*.jsonl"))) == 8
    assert len(list((sources / "globex" / "orders").glob("*.parquet"))) == 5
    # No storage location may overlap the product's own files: nothing lands in the data dir.
    assert not [
        path for path in data_dir.rglob("*") if path.suffix in {".csv", ".jsonl", ".parquet"}
    ]
    for ingestion in Ingestion.objects.all():
        assert ingestion.source_uri.startswith((sources / ingestion.tenant.slug).as_uri() + "/")


def test_seed_demo_grants_each_tenant_its_own_landing_folder(data_dir, settings):
    run_command("seed_demo", "--no-runs")
    run_command("seed_demo", "--no-runs")

    sources = settings.AUTOLOADER_DEMO_LANDING_DIR
    assert set(StorageLocation.objects.values_list("tenant__slug", "uri")) == {
        ("acme", (sources / "acme").as_uri() + "/"),
        ("globex", (sources / "globex").as_uri() + "/"),
    }


def test_seed_demo_users_log_in_with_the_demo_password(data_dir, monkeypatch):
    monkeypatch.delenv("AUTOLOADER_DEMO_PASSWORD", raising=False)

    run_command("seed_demo", "--no-runs")

    for username, _tenant, _role in DEMO_USERS:
        assert get_user_model().objects.get(username=username).check_password(DEFAULT_DEMO_PASSWORD)


def test_seed_demo_twice_creates_nothing_new(data_dir):
    run_command("seed_demo", "--no-runs")
    counts = demo_counts()

    run_command("seed_demo", "--no-runs")

    assert demo_counts() == counts


def test_seed_demo_prints_the_admins_token_on_its_last_line(data_dir):
    token = run_command("seed_demo", "--no-runs")[-1]

    response = api_client_with(token).get("/api/v1/ingestions")
    assert response.status_code == 200
    # The token is acme's admin's: it sees acme's demo ingestions and not globex's.
    assert {item["id"] for item in response.json()["results"]} == {"sales-daily", "web-events"}
    assert run_command("seed_demo", "--no-runs")[-1] == token


def test_seed_demo_keeps_the_demo_key_in_the_data_dir_readable_by_its_owner_only(data_dir):
    token = run_command("seed_demo", "--no-runs")[-1]

    key_file = data_dir / "demo-api-token"
    assert key_file.read_text().strip() == token
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    demo = ApiToken.objects.get(user__username="admin")
    assert (demo.name, demo.key_digest) == ("demo", key_digest(token))


def test_serve_prints_the_demo_key_while_its_token_exists(data_dir):
    token = run_command("seed_demo", "--no-runs")[-1]
    printed = io.StringIO()

    ServeCommand(stdout=printed)._banner("http://127.0.0.1:8000/")
    ApiToken.objects.all().delete()
    ServeCommand(stdout=printed)._banner("http://127.0.0.1:8000/")

    assert printed.getvalue().count(f"Authorization: Bearer {token}") == 1


def test_seed_demo_replaces_the_demo_token_when_its_key_file_is_gone(data_dir):
    old = run_command("seed_demo", "--no-runs")[-1]
    (data_dir / "demo-api-token").unlink()

    new = run_command("seed_demo", "--no-runs")[-1]

    assert new != old
    assert ApiToken.objects.filter(user__username="admin").count() == 1
    assert api_client_with(old).get("/api/v1/ingestions").status_code == 401
    assert api_client_with(new).get("/api/v1/ingestions").status_code == 200


def test_seed_demo_queues_one_first_run_per_demo_ingestion(data_dir):
    run_command("seed_demo")

    runs = Run.objects.all()
    assert sorted(run.ingestion.public_id for run in runs) == sorted(
        public_id for _tenant, public_id, *_rest in DEMO_INGESTIONS
    )
    assert {(run.status, run.trigger) for run in runs} == {(RunStatus.QUEUED, RunTrigger.MANUAL)}


def test_seed_demo_a_second_time_queues_no_more_runs(data_dir):
    run_command("seed_demo")
    first_runs = set(Run.objects.values_list("public_id", flat=True))

    run_command("seed_demo")

    assert set(Run.objects.values_list("public_id", flat=True)) == first_runs
