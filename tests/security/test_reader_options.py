"""Reader options that would fail every run are refused when the ingestion is saved."""

import pytest

pytestmark = pytest.mark.django_db


def body(source_dir, options):
    return {
        "name": "Options",
        "source": {"uri": str(source_dir), "format": "csv", "options": options},
        "destination": {"table": "raw.options"},
    }


@pytest.mark.parametrize(
    "options",
    [
        {"skip_rows": 10**30},
        {"skip_rows": 2**31},
        {"skip_rows": -1},
        {"encoding": "rot13"},
        {"encoding": "base64"},
        {"encoding": "zlib_codec"},
        {"encoding": "no-such-encoding"},
        {"encoding": "x" * 10_000},
        {"null_values": ["NA"] * 100_000},
        {"column_names": ["c" * 10_000]},
    ],
)
def test_options_that_fail_every_run_are_a_400_at_create_and_update(
    options, admin_client, source_dir, csv_ingestion
):
    created = admin_client.post("/api/v1/ingestions", body(source_dir, options), format="json")
    assert created.status_code == 400, created.content
    assert created.json()["error_code"] == "VALIDATION_ERROR"

    updated = admin_client.patch(
        f"/api/v1/ingestions/{csv_ingestion.public_id}",
        {"source": {"options": options}},
        format="json",
    )
    assert updated.status_code == 400, updated.content
    assert updated.json()["error_code"] == "VALIDATION_ERROR"
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.source_options == {}


def test_a_real_text_encoding_is_accepted(admin_client, source_dir):
    response = admin_client.post(
        "/api/v1/ingestions", body(source_dir, {"encoding": "latin-1"}), format="json"
    )
    assert response.status_code == 201, response.content
