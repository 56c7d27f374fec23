"""One form for a local source's URI: the API accepts a bare path or file:///, stores and
returns file:///abs/path (what the console shows); S3 keeps its scheme."""

import importlib

import pytest

from ingestions.locations import parse_storage_uri
from ingestions.models import Ingestion

from ..factories import IngestionFactory


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("/data/landing/sales", "file:///data/landing/sales"),
        ("/data//landing/./sales/", "file:///data/landing/sales"),
        ("file:///data/landing/sales", "file:///data/landing/sales"),
        ("FILE:///data/landing/a b", "file:///data/landing/a%20b"),
        ("s3://bucket/sales", "s3://bucket/sales"),
        ("s3a://bucket/sales", "s3a://bucket/sales"),
    ],
)
def test_a_source_has_one_form(given, stored):
    assert parse_storage_uri(given).as_uri() == stored


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", ["bare", "uri"])
def test_the_api_accepts_both_and_returns_the_uri(spelling, admin_client, source_dir):
    given = str(source_dir) if spelling == "bare" else source_dir.as_uri()
    body = {
        "name": "Sales",
        "source": {"uri": given, "format": "csv"},
        "destination": {"table": "raw.sales"},
    }

    created = admin_client.post("/api/v1/ingestions", body, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["source"]["uri"] == source_dir.as_uri()
    shown = admin_client.get(f"/api/v1/ingestions/{created.json()['id']}").json()
    assert shown["source"]["uri"] == source_dir.as_uri()
    moved = admin_client.patch(
        f"/api/v1/ingestions/{created.json()['id']}",
        {"source": {"uri": str(source_dir / "sub")}},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    assert moved.json()["source"]["uri"] == (source_dir / "sub").as_uri()


@pytest.mark.django_db
def test_the_migration_gives_stored_bare_paths_the_one_form(tenant, source_dir):
    from django.apps import apps

    bare = IngestionFactory(tenant=tenant, public_id="bare", source_uri=str(source_dir / "a b"))
    uri = IngestionFactory(tenant=tenant, public_id="uri", source_uri="s3://bucket/x")
    migration = importlib.import_module("ingestions.migrations.0014_source_uri_one_form")

    migration.to_file_uri(apps, None)

    assert Ingestion.objects.get(pk=bare.pk).source_uri == (source_dir / "a b").as_uri()
    assert Ingestion.objects.get(pk=uri.pk).source_uri == "s3://bucket/x"
