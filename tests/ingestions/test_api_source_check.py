"""POST /api/v1/ingestions/check-source: the console's "Check source", for API clients."""

import pytest

from ingestions.models import Ingestion, Role

from ..helpers import write_csv_files

URL = "/api/v1/ingestions/check-source"
pytestmark = pytest.mark.django_db


def test_it_lists_the_matches_and_reads_a_sample_with_its_schema(admin_client, source_dir):
    write_csv_files(source_dir, files=2, rows=30)
    (source_dir / "readme.txt").write_text("not matched")
    body = {"uri": str(source_dir), "format": "csv", "pattern": "*.csv"}
    response = admin_client.post(URL, body, format="json")
    assert response.status_code == 200
    result = response.json()
    assert result["files"]["count"] == 2
    assert result["files"]["names"] == ["part-0000.csv", "part-0001.csv"]
    assert result["sample"]["columns"] == [
        {"name": "id", "type": "long"},  # Iceberg's names, as on the table page
        {"name": "name", "type": "string"},
        {"name": "amount", "type": "double"},
    ]
    assert len(result["sample"]["rows"]) == 20
    assert not Ingestion.objects.exists()


@pytest.mark.parametrize("uri", ["file:///etc", "/etc", "{source}/../..", "{other}"])
def test_a_source_outside_the_tenants_locations_is_refused(uri, admin_client, source_dir, landing):
    uri = uri.format(source=source_dir, other=landing["globex"])
    response = admin_client.post(URL, {"uri": uri, "format": "csv"}, format="json")
    assert response.status_code == 400
    assert response.json()["error_code"] == "SOURCE_NOT_ALLOWED"


def test_bad_reader_options_are_a_validation_error(admin_client, source_dir):
    body = {"uri": str(source_dir), "format": "csv", "options": {"delimiter": ";;"}}
    response = admin_client.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["error_code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_who_may_create_may_check(role, member, source_dir):
    response = member(role).post(URL, {"uri": str(source_dir), "format": "csv"}, format="json")
    assert response.status_code == 403
