"""A client's mistake is never a 500: oversized and over-nested bodies, malformed paging,
over-long idempotency keys and refused sources answer 4xx with `{detail, error_code}`; the
OpenAPI schema says which request bodies refuse unknown fields."""

import json

import pytest
from django.conf import settings as django_settings

from ingestions.locations import location_grant

from ..factories import IngestionFactory, ProcessedFileFactory

pytestmark = pytest.mark.django_db

INGESTIONS = "/api/v1/ingestions"
FULL_REFRESH = "/api/v1/ingestions/sales/full-refresh"
OPERATIONS = "/api/v1/ingestions/sales/refresh-operations"
PROCESSED_FILES = "/api/v1/ingestions/sales/processed-files"


def post_json(client, url: str, text: str):
    return client.generic("POST", url, text, content_type="application/json")


def assert_error(response, status: int, error_code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["error_code"] == error_code
    assert body["detail"]
    return body


@pytest.mark.parametrize("url", [INGESTIONS, FULL_REFRESH])
def test_a_body_over_the_upload_limit_is_413_request_too_large(admin_client, csv_ingestion, url):
    eight_megabytes = json.dumps({"name": "x" * (8 * 1024 * 1024)})
    assert len(eight_megabytes) > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    body = assert_error(post_json(admin_client, url, eight_megabytes), 413, "REQUEST_TOO_LARGE")

    assert f"{django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes" in body["detail"]


@pytest.mark.parametrize("url", [INGESTIONS, FULL_REFRESH])
@pytest.mark.parametrize(
    "nested",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" * 100_000,  # never closed
        '{"name": ' + "[" * 65 + "]" * 65 + "}",
    ],
    ids=["arrays-100000", "objects-100000", "unclosed-100000", "arrays-65"],
)
def test_json_nested_deeper_than_64_levels_is_400_validation_error(
    admin_client, csv_ingestion, url, nested
):
    body = assert_error(post_json(admin_client, url, nested), 400, "VALIDATION_ERROR")

    assert body["detail"] == "JSON nested deeper than 64 levels."


def test_json_nested_64_levels_or_brackets_inside_strings_are_parsed(admin_client):
    for text in (
        '{"name": ' + "[" * 63 + "]" * 63 + "}",
        json.dumps({"name": "[" * 100_000 + '\\"{'}),
    ):
        body = assert_error(post_json(admin_client, INGESTIONS, text), 400, "VALIDATION_ERROR")
        assert "nested" not in body["detail"]  # refused by the serializer, not the parser
        assert "source" in body["errors"]


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (OPERATIONS, "offset=null"),
        (OPERATIONS, "limit=abc"),
        (OPERATIONS, "limit=-1"),
        (OPERATIONS, "limit=0"),
        (OPERATIONS, "offset=-5"),
        (OPERATIONS, "limit=%205"),
        (OPERATIONS, "limit=5_0"),
        (OPERATIONS, "limit="),
        (PROCESSED_FILES, "page_size=null"),
        (PROCESSED_FILES, "page_size=-5"),
        (PROCESSED_FILES, "page_size=0"),
        ("/api/v1/ingestions", "offset=null"),
        ("/api/v1/ingestions", "limit=abc"),
        ("/api/v1/ingestions/sales/runs", "limit=-1"),
    ],
)
def test_malformed_paging_parameters_are_400_validation_error(
    admin_client, csv_ingestion, url, query
):
    name = query.split("=", 1)[0]

    body = assert_error(admin_client.get(f"{url}?{query}"), 400, "VALIDATION_ERROR")

    assert name in body["errors"]


def test_well_formed_paging_parameters_still_page(admin_client, csv_ingestion):
    ProcessedFileFactory.create_batch(3, ingestion=csv_ingestion)

    page = admin_client.get(f"{PROCESSED_FILES}?page_size=2")
    operations = admin_client.get(f"{OPERATIONS}?limit=100000&offset=0")

    assert page.status_code == 200
    assert len(page.json()["results"]) == 2 and page.json()["next"]
    assert operations.status_code == 200  # above max_limit is capped, as before


def test_an_over_long_idempotency_key_is_refused_on_a_dry_run_too(admin_client, csv_ingestion):
    headers = {"HTTP_IDEMPOTENCY_KEY": "k" * 256}

    dry_run = admin_client.post(FULL_REFRESH, {"dry_run": True}, format="json", **headers)

    body = assert_error(dry_run, 400, "VALIDATION_ERROR")
    assert "Idempotency-Key" in body["errors"]


def test_a_source_outside_the_tenants_locations_is_400_source_not_allowed(admin_client, tmp_path):
    response = admin_client.post(
        INGESTIONS,
        {
            "name": "Elsewhere",
            "source": {"uri": str(tmp_path / "elsewhere"), "format": "csv"},
            "destination": {"table": "raw.elsewhere"},
        },
        format="json",
    )

    assert_error(response, 400, "SOURCE_NOT_ALLOWED")


def test_a_source_that_cannot_be_listed_is_400_source_unavailable(admin_client, tenant, tmp_path):
    location_grant(tenant=tenant, uri=str(tmp_path / "landing"))
    IngestionFactory(
        tenant=tenant,
        public_id="sales",
        source_uri=str(tmp_path / "landing" / "not-there"),
        destination_table="raw.sales",
    )

    dry_run = admin_client.post(FULL_REFRESH, {"dry_run": True}, format="json")

    assert_error(dry_run, 400, "SOURCE_UNAVAILABLE")


# --- the OpenAPI schema ------------------------------------------------------------------


@pytest.fixture
def schema(admin_client) -> dict:
    response = admin_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def request_component(schema: dict, path: str, method: str) -> tuple[str, dict]:
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    return name, schema["components"]["schemas"][name]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/ingestions", "post"),
        ("/api/v1/ingestions/{ingestion_id}", "patch"),
        ("/api/v1/ingestions/{ingestion_id}/full-refresh", "post"),
        ("/api/v1/ingestions/{ingestion_id}/fresh-start", "post"),
    ],
)
def test_request_bodies_of_strict_serializers_forbid_additional_properties(schema, path, method):
    name, component = request_component(schema, path, method)

    assert component["additionalProperties"] is False, name


def test_nested_strict_request_components_forbid_them_too_and_responses_are_untouched(schema):
    _, create = request_component(schema, "/api/v1/ingestions", "post")
    components = schema["components"]["schemas"]
    for field in ("source", "destination"):
        nested = create["properties"][field]
        name = (nested.get("$ref") or nested["allOf"][0]["$ref"]).rsplit("/", 1)[1]
        assert components[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in components["IngestionOutput"]


def test_paginated_lists_document_their_400(schema):
    for path in (
        "/api/v1/ingestions",
        "/api/v1/ingestions/{ingestion_id}/refresh-operations",
        "/api/v1/ingestions/{ingestion_id}/processed-files",
    ):
        assert "400" in schema["paths"][path]["get"]["responses"], path
