"""Creating, editing, protecting and deleting an ingestion in the console, and "Check source"."""

from decimal import Decimal

import pytest
from auditlog.models import LogEntry
from django.test import Client

from ingestions.engines import load_engine
from ingestions.locations import location_list
from ingestions.models import Ingestion, Role
from ingestions.sources import preview

from ..factories import IngestionFactory, ProcessedFileFactory, RunFactory
from ..helpers import write_csv_files
from .conftest import HX

# A real run loads the table (`loaded`): the worker needs committed rows.
LOADS_A_TABLE = pytest.mark.django_db(transaction=True)
NEW = "/ingestions/new/"
CHECK = "/ingestions/check-source/"


@pytest.fixture
def location(tenant, source_dir):
    """`source_dir`, granted to `tenant`: the location the form offers."""
    return location_list(tenant=tenant).get()


def form_data(location, **overrides) -> dict:
    """What the create form posts when filled in for a CSV folder of `location`."""
    data = {
        "name": "Daily sales",
        "public_id": "sales-daily",
        "location": str(location.pk),
        "sub_path": "sales",
        "source_format": "csv",
        "source_pattern": "*.csv",
        "destination_table": "raw.sales",
        "engine": "iceberg",
        "cost_per_gb_usd": "",
        "retain_days": "",
        "snapshot_retention_hours": "",
        "maintenance_enabled": "on",
        "csv_header": "on",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def audit_entries(action: str):
    return LogEntry.objects.filter(additional_data__operation=action)


@pytest.fixture
def sales(source_dir):
    folder = source_dir / "sales"
    write_csv_files(folder, files=3, rows=30)
    return folder


# --- create ---------------------------------------------------------------------------


def test_the_form_offers_the_tenants_locations_with_their_uri(location, admin_console):
    response = admin_console.get(NEW)
    assert response.status_code == 200
    page = response.content.decode()
    assert f'value="{location.pk}"' in page
    assert location.uri in page
    assert 'data-format="csv"' in page and 'name="csv_delimiter"' in page


def test_an_admin_creates_an_ingestion_from_a_location(location, sales, admin_console):
    response = admin_console.post(NEW, form_data(location))
    assert response.status_code == 302
    assert response["Location"] == "/ingestions/sales-daily/"
    ingestion = Ingestion.objects.get(public_id="sales-daily")
    assert ingestion.source_uri == f"file://{sales}"
    assert ingestion.destination_table == "raw.sales"
    assert ingestion.source_options == {}  # blank options and defaults are not sent
    assert ingestion.cost_per_gb_usd == Decimal("0.25")
    entry = audit_entries("ingestion_created").get()
    assert entry.actor == admin_console.user
    page = admin_console.get(response["Location"]).content.decode()
    assert "Ingestion sales-daily created." in page


def test_reader_options_land_in_source_options_and_other_formats_are_ignored(
    location, sales, admin_console
):
    data = form_data(
        location,
        csv_delimiter=";",
        csv_header=None,  # unticked
        csv_quote_char="'",
        csv_encoding="latin-1",
        csv_skip_rows="2",
        csv_null_values="NA, NULL,",
        csv_newlines_in_values="on",
        csv_column_names="id, name, amount",
    )
    response = admin_console.post(NEW, data)
    assert response.status_code == 302
    assert Ingestion.objects.get().source_options == {
        "delimiter": ";",
        "header": False,
        "column_names": ["id", "name", "amount"],
        "skip_rows": 2,
        "quote_char": "'",
        "encoding": "latin-1",
        "null_values": ["NA", "NULL"],
        "newlines_in_values": True,
    }


def test_options_of_another_format_are_ignored(location, sales, admin_console):
    data = form_data(location, source_format="json", csv_delimiter=";", csv_header=None)
    assert admin_console.post(NEW, data).status_code == 302
    ingestion = Ingestion.objects.get()
    assert (ingestion.source_format, ingestion.source_options) == ("json", {})


def test_a_tab_delimiter_is_written_as_backslash_t(location, sales, admin_console):
    assert admin_console.post(NEW, form_data(location, csv_delimiter="\\t")).status_code == 302
    assert Ingestion.objects.get().source_options == {"delimiter": "\t"}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"destination_table": "Sales"}, "destination_table", "namespace.table"),
        ({"destination_table": "raw.9sales"}, "destination_table", "lowercase letters"),
        ({"public_id": "Bad Id"}, "public_id", "Use 2-63 lowercase letters"),
        ({"csv_delimiter": ";;"}, "csv_delimiter", "must be a single character"),
        ({"csv_encoding": "klingon"}, "csv_encoding", "Unknown encoding"),
        ({"name": ""}, "name", "This field is required"),
    ],
)
def test_an_invalid_field_is_shown_inline_and_nothing_is_saved(
    overrides, field, message, location, sales, admin_console
):
    response = admin_console.post(NEW, form_data(location, **overrides))
    assert response.status_code == 400
    page = response.content.decode()
    assert f'id="id_{field}_error"' in page
    error = page.split(f'id="id_{field}_error"', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert "Nothing was saved" in page
    assert not Ingestion.objects.exists()
    assert not audit_entries("ingestion_created").exists()


def test_a_duplicate_table_is_refused_on_the_table_field(location, sales, tenant, admin_console):
    IngestionFactory(tenant=tenant, destination_table="raw.sales", source_uri=str(sales))
    response = admin_console.post(NEW, form_data(location))
    assert response.status_code == 400
    error = response.content.decode().split('id="id_destination_table_error"', 1)[1]
    assert "Another ingestion already loads into &#x27;raw.sales&#x27;" in error.split("</p>")[0]
    assert Ingestion.objects.count() == 1


def test_a_taken_id_is_refused_on_the_id_field(location, sales, tenant, admin_console):
    IngestionFactory(tenant=tenant, public_id="sales-daily", source_uri=str(sales))
    response = admin_console.post(NEW, form_data(location))
    assert response.status_code == 400
    assert 'id="id_public_id_error"' in response.content.decode()


@LOADS_A_TABLE
def test_an_existing_table_asks_adopt_or_replace(loaded, location, admin_console):
    admin_console.post("/ingestions/sales/delete/", {"typed_name": "raw.sales"})  # table kept
    assert not Ingestion.objects.exists()
    data = form_data(location, sub_path="")

    refused = admin_console.post(NEW, data)
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "already exists and no ingestion owns it" in page
    assert 'name="existing_table" value="adopt"' in page
    assert 'name="existing_table" value="replace"' in page
    assert not Ingestion.objects.exists()

    adopted = admin_console.post(NEW, {**data, "existing_table": "adopt"})
    assert adopted.status_code == 302
    assert Ingestion.objects.get().processed_files.count() == 4  # nothing loads twice


def test_a_source_outside_the_locations_is_refused_on_the_folder_field(
    location, sales, admin_console
):
    response = admin_console.post(NEW, form_data(location, sub_path="../../.."))
    assert response.status_code == 400
    error = response.content.decode().split('id="id_sub_path_error"', 1)[1].split("</p>")[0]
    assert "outside your tenant&#x27;s storage locations" in error
    assert not Ingestion.objects.exists()


# --- permissions ----------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_an_admin_may_create_as_in_the_api(role, location, sales, console):
    client = console(role)
    assert "New ingestion" not in client.get("/ingestions/").content.decode()
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, form_data(location)).status_code == 403
    assert client.post(CHECK, form_data(location), **HX).status_code == 403
    assert not Ingestion.objects.exists()


def test_the_empty_list_offers_new_ingestion_to_an_admin(tenant, admin_console):
    page = admin_console.get("/ingestions/").content.decode()
    assert 'href="/ingestions/new/"' in page
    assert "curl" not in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_viewers_and_operators_see_no_buttons_and_are_refused(role, csv_ingestion, console):
    client = console(role)
    url = f"/ingestions/{csv_ingestion.public_id}/"
    page = client.get(url).content.decode()
    for button in ("/edit/", "/delete/", "/protect/"):
        assert f"{url}{button[1:]}" not in page
    assert client.get(f"{url}edit/").status_code == 403
    assert client.post(f"{url}edit/", {"name": "Renamed"}).status_code == 403
    assert client.get(f"{url}delete/").status_code == 403
    assert client.post(f"{url}delete/", {"typed_name": "raw.sales"}).status_code == 403
    assert client.post(f"{url}protect/", {"protected": "true"}).status_code == 403
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.name != "Renamed" and not csv_ingestion.protected
    assert Ingestion.objects.filter(pk=csv_ingestion.pk).exists()
    assert not audit_entries("ingestion_updated").exists()


def test_an_admin_sees_edit_protect_and_delete(csv_ingestion, admin_console):
    page = admin_console.get("/ingestions/sales/").content.decode()
    assert 'href="/ingestions/sales/edit/"' in page
    assert 'href="/ingestions/sales/delete/"' in page
    assert 'action="/ingestions/sales/protect/"' in page and ">Protect</button>" in page


def test_another_tenants_ingestion_is_not_found(other_tenant, console, tmp_path):
    theirs = IngestionFactory(tenant=other_tenant, public_id="theirs", source_uri=str(tmp_path))
    client = console(Role.ADMIN)
    for path in ("edit/", "delete/"):
        assert client.get(f"/ingestions/theirs/{path}").status_code == 404
    delete = client.post("/ingestions/theirs/delete/", {"typed_name": theirs.destination_table})
    assert delete.status_code == 404
    assert client.post("/ingestions/theirs/protect/", {"protected": "true"}).status_code == 404
    assert client.post(CHECK, {"ingestion": "theirs"}, **HX).status_code == 404
    theirs.refresh_from_db()
    assert not theirs.protected


def test_csrf_is_enforced(location, sales, csv_ingestion, console):
    admin = console(Role.ADMIN)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin.user)
    assert client.post(NEW, form_data(location)).status_code == 403
    assert client.post("/ingestions/sales/protect/", {"protected": "true"}).status_code == 403
    assert client.post("/ingestions/sales/delete/", {"typed_name": "raw.sales"}).status_code == 403
    assert client.post(CHECK, form_data(location), **HX).status_code == 403
    assert Ingestion.objects.filter(public_id="sales", protected=False).exists()
    assert not Ingestion.objects.filter(public_id="sales-daily").exists()


# --- edit and protect ------------------------------------------------------------------


def edit_data(ingestion, **overrides) -> dict:
    location = location_list(tenant=ingestion.tenant).get()
    data = {
        "name": ingestion.name,
        "location": str(location.pk),
        "sub_path": "",
        "source_format": ingestion.source_format,
        "source_pattern": ingestion.source_pattern,
        "cost_per_gb_usd": str(ingestion.cost_per_gb_usd),
        "retain_days": "",
        "snapshot_retention_hours": "",
        "maintenance_enabled": "on",
        "csv_header": "on",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_the_edit_form_shows_the_ingestion_and_keeps_table_and_engine_fixed(
    csv_ingestion, admin_console
):
    page = admin_console.get("/ingestions/sales/edit/").content.decode()
    assert f'value="{csv_ingestion.name}"' in page
    assert 'name="destination_table"' not in page
    assert 'name="engine"' not in page
    assert "raw.sales" in page  # shown, read-only


def test_saving_an_unchanged_form_changes_nothing(csv_ingestion, admin_console):
    csv_ingestion.refresh_from_db()
    response = admin_console.post("/ingestions/sales/edit/", edit_data(csv_ingestion))
    assert response.status_code == 302
    assert not audit_entries("ingestion_updated").exists()


def test_the_edit_form_shows_the_options_as_typed_and_saves_them_unchanged(
    csv_ingestion, admin_console
):
    csv_ingestion.source_options = {"delimiter": "\t", "header": True, "null_values": ["NA", "-"]}
    csv_ingestion.save()
    page = admin_console.get("/ingestions/sales/edit/").content.decode()
    assert 'name="csv_delimiter" value="\\t"' in page
    assert 'name="csv_null_values" value="NA, -"' in page
    data = edit_data(csv_ingestion, csv_delimiter="\\t", csv_null_values="NA, -")
    assert admin_console.post("/ingestions/sales/edit/", data).status_code == 302
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.source_options["header"] is True  # stated, so kept
    assert not audit_entries("ingestion_updated").exists()


def test_edit_changes_fields_and_audits_them(csv_ingestion, source_dir, admin_console):
    (source_dir / "new").mkdir()
    csv_ingestion.refresh_from_db()
    data = edit_data(
        csv_ingestion, name="Sales (new)", sub_path="new", csv_delimiter="|", retain_days="3"
    )
    response = admin_console.post("/ingestions/sales/edit/", data)
    assert response.status_code == 302
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.name == "Sales (new)"
    assert csv_ingestion.source_uri == f"file://{source_dir}/new"
    assert csv_ingestion.source_options == {"delimiter": "|"}
    assert csv_ingestion.retain_days == 3
    assert csv_ingestion.destination_table == "raw.sales"
    entry = audit_entries("ingestion_updated").get()
    assert set(entry.changes) == {"name", "source_uri", "source_options", "retain_days"}
    assert entry.actor == admin_console.user
    assert "Saved:" in admin_console.get("/ingestions/sales/").content.decode()


def test_an_invalid_edit_is_shown_inline_and_nothing_is_saved(csv_ingestion, admin_console):
    csv_ingestion.refresh_from_db()
    data = edit_data(csv_ingestion, name="Renamed", snapshot_retention_hours="-1")
    response = admin_console.post("/ingestions/sales/edit/", data)
    assert response.status_code == 400
    assert 'id="id_snapshot_retention_hours_error"' in response.content.decode()
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.name != "Renamed"
    assert not audit_entries("ingestion_updated").exists()


def test_protect_and_unprotect_are_audited_changes(csv_ingestion, admin_console):
    response = admin_console.post("/ingestions/sales/protect/", {"protected": "true"})
    assert response.status_code == 302
    csv_ingestion.refresh_from_db()
    assert csv_ingestion.protected
    page = admin_console.get("/ingestions/sales/").content.decode()
    assert ">Unprotect</button>" in page

    admin_console.post("/ingestions/sales/protect/", {"protected": "false"})
    csv_ingestion.refresh_from_db()
    assert not csv_ingestion.protected
    changes = [entry.changes for entry in audit_entries("ingestion_updated").order_by("pk")]
    assert changes == [{"protected": ["False", "True"]}, {"protected": ["True", "False"]}]


def test_protecting_twice_is_one_change(csv_ingestion, admin_console):
    for _ in range(2):
        admin_console.post("/ingestions/sales/protect/", {"protected": "true"})
    assert audit_entries("ingestion_updated").count() == 1


# --- delete ----------------------------------------------------------------------------


def test_the_delete_page_says_what_happens_to_table_history_and_runs(csv_ingestion, admin_console):
    ProcessedFileFactory.create_batch(3, ingestion=csv_ingestion)
    RunFactory(ingestion=csv_ingestion, status="SUCCESS")
    page = admin_console.get("/ingestions/sales/delete/").content.decode()
    assert "history of 3 processed files" in page
    assert "1 run," in page
    assert "The table <code>raw.sales</code>" in page and "with its rows" in page
    assert "adopt it" in page
    assert 'data-expected="raw.sales"' in page
    assert 'name="drop_table"' in page


@pytest.mark.parametrize("typed", ["", "raw.sale", "RAW.SALES", "raw.sales "])
def test_a_wrong_name_deletes_nothing(typed, csv_ingestion, admin_console):
    response = admin_console.post("/ingestions/sales/delete/", {"typed_name": typed})
    assert response.status_code == 400
    assert "The table name does not match" in response.content.decode()
    assert Ingestion.objects.filter(pk=csv_ingestion.pk).exists()
    assert not audit_entries("ingestion_deleted").exists()


@LOADS_A_TABLE
def test_the_right_name_deletes_and_keeps_the_table(loaded, admin_console):
    csv_ingestion, engine = loaded, load_engine()
    response = admin_console.post("/ingestions/sales/delete/", {"typed_name": "raw.sales"})
    assert response.status_code == 302
    assert response["Location"] == "/ingestions/"
    assert not Ingestion.objects.filter(pk=csv_ingestion.pk).exists()
    assert engine.table_exists(csv_ingestion.table_identifier)
    entry = audit_entries("ingestion_deleted").get()
    assert entry.additional_data["table_action"] == "kept"
    assert "is kept with its rows" in admin_console.get("/ingestions/").content.decode()


@LOADS_A_TABLE
def test_deleting_with_drop_table_drops_it(loaded, admin_console):
    csv_ingestion, engine = loaded, load_engine()
    data = {"typed_name": "raw.sales", "drop_table": "on"}
    response = admin_console.post("/ingestions/sales/delete/", data, **HX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/ingestions/"
    assert not engine.table_exists(csv_ingestion.table_identifier)


def test_a_protected_ingestion_is_not_deleted(csv_ingestion, admin_console):
    csv_ingestion.protected = True
    csv_ingestion.save()
    page = admin_console.get("/ingestions/sales/delete/").content.decode()
    assert "This ingestion is protected: deleting it is refused." in page
    assert 'name="typed_name"' not in page
    response = admin_console.post("/ingestions/sales/delete/", {"typed_name": "raw.sales"}, **HX)
    assert response.status_code == 423
    assert "lift the protection to delete it" in response.content.decode()
    assert Ingestion.objects.filter(pk=csv_ingestion.pk).exists()


# --- check source ----------------------------------------------------------------------


def test_check_source_lists_samples_and_infers_a_schema(location, sales, admin_console):
    (sales / "notes.txt").write_text("not matched")
    response = admin_console.post(CHECK, form_data(location), **HX)
    assert response.status_code == 200
    page = response.content.decode()
    assert page.lstrip().startswith('<section id="source-check"')  # the fragment
    assert 'data-stat="file-count">3<' in page
    for index in range(3):
        assert f"part-{index:04d}.csv" in page
    assert "notes.txt" not in page
    schema = page.split('data-table="check-schema"', 1)[1].split("</table>")[0]
    for column, kind in (("id", "long"), ("name", "string"), ("amount", "double")):  # Iceberg
        assert f"<code>{column}</code></td><td><code>{kind}</code>" in schema
    sample = page.split('data-table="check-sample"', 1)[1].split("</table>")[0]
    assert sample.count("<tr>") == 1 + 20  # header and the first 20 rows
    assert "name-0-0" in sample and "name-0-20" not in sample
    assert not Ingestion.objects.exists()


def test_check_source_bounds_the_names_it_shows(location, source_dir, admin_console):
    write_csv_files(source_dir / "sales", files=25, rows=1)
    page = admin_console.post(CHECK, form_data(location), **HX).content.decode()
    assert 'data-stat="file-count">25<' in page
    assert "part-0019.csv" in page and "part-0020.csv" not in page
    assert "and 5 more" in page


def test_check_source_reads_with_the_forms_reader_options(location, source_dir, admin_console):
    folder = source_dir / "sales"
    folder.mkdir()
    (folder / "semi.csv").write_text("id;city\n1;Paris\n2;Lyon\n")
    page = admin_console.post(CHECK, form_data(location, csv_delimiter=";"), **HX)
    schema = page.content.decode().split('data-table="check-schema"', 1)[1]
    assert "<code>city</code>" in schema


@pytest.mark.parametrize(
    ("content", "options", "reason"),
    [
        (b"id,name\n1,caf\xe9\n", {}, "not valid UTF-8 text; set the &#x27;encoding&#x27;"),
        (b"id,name\n1,2,3\n", {}, "Expected 2 columns, got 3"),
    ],
)
def test_a_file_that_does_not_read_is_a_clear_message(
    content, options, reason, location, source_dir, admin_console
):
    folder = source_dir / "sales"
    folder.mkdir()
    (folder / "bad.csv").write_bytes(content)
    response = admin_console.post(CHECK, form_data(location, **options), **HX)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-check="read-error"' in page
    assert reason in page
    assert "caf" not in page  # the reason never quotes the file


def test_the_right_encoding_reads_what_utf8_could_not(location, source_dir, admin_console):
    folder = source_dir / "sales"
    folder.mkdir()
    (folder / "latin.csv").write_bytes(b"id,name\n1,caf\xe9\n")
    page = admin_console.post(CHECK, form_data(location, csv_encoding="latin-1"), **HX)
    assert "café" in page.content.decode()


def test_check_source_without_javascript_is_the_form_page(location, sales, admin_console):
    response = admin_console.post(CHECK, form_data(location))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>New ingestion</h1>" in page
    assert 'data-table="check-schema"' in page
    assert 'value="Daily sales"' in page  # the form keeps what was typed
    assert not Ingestion.objects.exists()


@pytest.fixture
def never_read(monkeypatch):
    """Fail the test if a refused check lists or reads anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("a refused source was listed or read")

    monkeypatch.setattr(preview, "list_source_entries", refuse)
    monkeypatch.setattr(preview, "read_source_file", refuse)


def test_check_source_refuses_a_folder_outside_the_location(
    location, landing, admin_console, never_read
):
    secret = landing["globex"] / "secret.csv"
    secret.write_text("id,password\n1,hunter2\n")
    escape = "../landing/globex"  # source_dir and landing/ both sit in tmp_path
    response = admin_console.post(CHECK, form_data(location, sub_path=escape), **HX)
    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    page = response.content.decode()
    assert 'data-check-error="SOURCE_NOT_ALLOWED"' in page
    assert "outside your tenant&#x27;s storage locations" in page
    assert "hunter2" not in page and "secret.csv" not in page


@pytest.mark.parametrize("sub_path", ["file:///etc", "/etc", "s3://bucket/key"])
def test_check_source_refuses_a_path_or_uri_outside_the_location(
    sub_path, location, admin_console, never_read
):
    response = admin_console.post(CHECK, form_data(location, sub_path=sub_path), **HX)
    assert response.status_code == 400
    assert f"is not inside the location {location.uri}" in response.content.decode()
    assert "passwd" not in response.content.decode()


def test_check_source_refuses_another_tenants_location(
    location, landing, other_tenant, admin_console, never_read
):
    theirs = location_list(tenant=other_tenant).get()
    (landing["globex"] / "secret.csv").write_text("id,password\n1,hunter2\n")
    response = admin_console.post(CHECK, {**form_data(location), "location": str(theirs.pk)}, **HX)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Choose one of your tenant&#x27;s storage locations." in page
    assert "hunter2" not in page


@pytest.mark.parametrize(
    "uri",
    ["file:///etc", "/etc/passwd", "{source}/../../..", "{other}", "{source}/../landing/globex"],
)
def test_the_service_refuses_sources_outside_the_locations(
    uri, tenant, source_dir, landing, never_read
):
    from ingestions.errors import SourceNotAllowedError

    uri = uri.format(source=source_dir, other=landing["globex"].as_uri())
    with pytest.raises(SourceNotAllowedError):
        preview.source_check(tenant=tenant, actor=None, uri=uri, file_format="csv")
