"""The folder field takes a full path or URI inside the chosen location and makes it the
relative folder; one outside (plainly, through "..", or through a symlink) stays refused."""

import os

import pytest

from ingestions.locations import location_folder, location_list
from ingestions.models import Ingestion
from ingestions.sources import preview

from ..helpers import write_csv_files
from .conftest import HX
from .test_ingestion_forms import CHECK, NEW, form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def location(tenant, source_dir):
    return location_list(tenant=tenant).get()


@pytest.fixture
def sales(source_dir):
    folder = source_dir / "sales" / "daily"
    write_csv_files(folder, files=2, rows=5)
    return folder


@pytest.fixture
def never_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a refused source was listed or read")

    monkeypatch.setattr(preview, "list_source_entries", refuse)
    monkeypatch.setattr(preview, "read_source_file", refuse)


@pytest.mark.parametrize(
    "spelling", ["{path}", "{path}/", "{uri}", "{uri}/", "{root}/sales/./x/../daily"]
)
def test_a_full_path_inside_the_location_becomes_the_folder(
    spelling, location, sales, source_dir, admin_console
):
    typed = spelling.format(path=sales, uri=sales.as_uri(), root=source_dir)

    response = admin_console.post(NEW, form_data(location, sub_path=typed))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Ingestion.objects.get().source_uri == sales.as_uri()


def test_check_source_reads_a_full_path_inside_the_location(location, sales, admin_console):
    response = admin_console.post(CHECK, form_data(location, sub_path=str(sales)), **HX)

    assert response.status_code == 200
    assert 'data-stat="file-count">2<' in response.content.decode()


def test_the_location_itself_is_the_empty_folder(location, source_dir):
    assert location_folder(location=location, path=str(source_dir)) == ""
    assert location_folder(location=location, path=source_dir.as_uri() + "/") == ""


def test_a_dotdot_out_of_the_location_is_refused(
    location, source_dir, landing, admin_console, never_read
):
    (landing["globex"] / "secret.csv").write_text("id,password\n1,hunter2\n")
    escape = f"{source_dir}/sales/../../landing/globex"  # both sit in tmp_path

    response = admin_console.post(CHECK, form_data(location, sub_path=escape), **HX)

    assert response.status_code == 400
    page = response.content.decode()
    assert "is not inside the location" in page
    assert "hunter2" not in page and "secret.csv" not in page


def test_a_symlink_inside_pointing_out_is_refused(
    location, source_dir, landing, admin_console, never_read
):
    """A link inside the location that leads to another tenant's folder looks inside by
    its name; it is judged by where it leads."""
    (landing["globex"] / "secret.csv").write_text("id,password\n1,hunter2\n")
    os.symlink(landing["globex"], source_dir / "shortcut")

    for typed in (f"{source_dir}/shortcut", (source_dir / "shortcut").as_uri()):
        response = admin_console.post(NEW, form_data(location, sub_path=typed))
        assert "is not inside the location" in response.content.decode()
    # And as a relative folder, the service's own check refuses it too.
    response = admin_console.post(NEW, form_data(location, sub_path="shortcut"))
    assert "outside your tenant" in response.content.decode()
    assert not Ingestion.objects.exists()


def test_another_location_of_the_tenant_is_not_inside_the_chosen_one(
    location, tenant, tmp_path, admin_console
):
    from ingestions.locations import location_grant

    other = tmp_path / "second"
    other.mkdir()
    location_grant(tenant=tenant, uri=str(other))

    response = admin_console.post(NEW, form_data(location, sub_path=str(other)))

    assert f"is not inside the location {location.uri}" in response.content.decode()
    assert not Ingestion.objects.exists()
