"""Selective refresh in the console: choose a prefix, a time range or files of the history,
preview the files and rows it replaces and the table's end state, confirm by the table's name;
the same scope and services as the API. Bad or tampered input is a message, never a 500;
another tenant's ingestion is a 404; a role without the full refresh permission is refused."""

import html as html_lib
import json
import os
import re
from datetime import UTC, datetime

import pyarrow.compute as pc
import pytest

from ingestions.models import Ingestion, ProcessedFile, Role
from ingestions.runs import run_request
from refresh.models import OperationStatus, RefreshOperation, RefreshPlan
from refresh.sync import operation_sync

from ..factories import IngestionFactory
from ..helpers import drain_queue, open_table, write_csv_files
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/ingestions/sales/selective-refresh/"
API = "/api/v1/ingestions/sales/full-refresh"
PANEL = hx("operation-panel")
MAY = ["2025-05/part-0000.csv", "2025-05/part-0001.csv"]
JUNE = ["2025-06/part-0002.csv", "2025-06/part-0003.csv"]
MAY_TIME = datetime(2025, 5, 20, tzinfo=UTC)
JUNE_TIME = datetime(2025, 6, 20, tzinfo=UTC)
# Each kind of scope, as the chooser sends it, and the files it names.
SCOPES = {
    "prefix": ({"kind": "prefix", "prefix": "2025-06/"}, JUNE),
    "modified": (
        {"kind": "modified", "modified_after": "2025-06-01T00:00", "modified_before": ""},
        JUNE,
    ),
    "files": ({"kind": "files", "files": [MAY[1]]}, [MAY[1]]),
}


@pytest.fixture
def by_month(csv_ingestion, source_dir):
    """The csv ingestion loaded with two May and two June files of 10 rows each."""
    for folder, start, moment in (("2025-05", 0, MAY_TIME), ("2025-06", 2, JUNE_TIME)):
        for path in write_csv_files(source_dir / folder, files=2, rows=10, start=start):
            os.utime(path, (moment.timestamp(), moment.timestamp()))
    run_request(ingestion=csv_ingestion)
    drain_queue()
    return Ingestion.objects.get(pk=csv_ingestion.pk)


def rows_by_file(ingestion) -> dict[str, list]:
    """Each file's rows in the table: (name, _ingested_at), sorted."""
    data = open_table(ingestion.table_identifier).scan(
        selected_fields=("_source_file", "name", "_ingested_at")
    )
    table = data.to_arrow()
    result: dict[str, list] = {}
    for path in pc.unique(table["_source_file"]).to_pylist():
        part = table.filter(pc.equal(table["_source_file"], path))
        names, loaded_at = part["name"].to_pylist(), part["_ingested_at"].to_pylist()
        result[path] = sorted(zip(names, loaded_at, strict=True))
    return result


def preview(client, data: dict, **headers):
    return client.get(URL, {**data, "preview": "1"}, **(headers or PANEL))


def confirmation(html: str) -> dict:
    """The hidden fields the preview's confirmation form sends back."""
    form = html.split("<dialog", 1)[1].split("</dialog>", 1)[0]
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
    return {key: html_lib.unescape(value) for key, value in fields.items()}


def execute(client, fields: dict, typed: str = "raw.sales"):
    return client.post(URL, {**fields, "typed_name": typed}, **PANEL)


def nothing_happened(ingestion, before: dict) -> bool:
    return not RefreshOperation.objects.exists() and rows_by_file(ingestion) == before


# --- the action and the chooser -----------------------------------------------------------


def test_the_ingestion_page_offers_it_to_who_may_full_refresh_and_says_why_not_to_others(
    by_month, console
):
    admin = console(Role.ADMIN).get("/ingestions/sales/").content.decode()
    assert f'hx-get="{URL}"' in admin and "Selective refresh" in admin
    assert "selective-refused" not in admin

    operator = console(Role.OPERATOR).get("/ingestions/sales/").content.decode()
    assert f'href="{URL}"' not in operator
    button = re.search(r"<button[^>]*selective-refused[^>]*>Selective refresh</button>", operator)
    assert button and "disabled" in button.group(0)
    assert "needs the full refresh permission" in operator

    viewer = console(Role.VIEWER).get("/ingestions/sales/").content.decode()
    assert "Selective refresh" not in viewer


def test_the_chooser_lists_the_history_and_its_search_filters_it(by_month, admin_console):
    response = admin_console.get(URL, **PANEL)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Selective refresh of <code>raw.sales</code>" in page
    assert re.findall(r'name="files" value="([^"]+)"', page) == MAY + JUNE
    assert "The history holds 4 files" in page
    assert 'type="datetime-local"' in page and "(UTC)" in page

    found = admin_console.get(URL, {"q": "06/", "files": MAY[0]}, **hx("selective-files"))
    fragment = found.content.decode()
    assert '<div id="selective-files"' in fragment and "<section" not in fragment
    # The chosen file stays ticked above the matches, whatever the search.
    assert re.findall(r'name="files" value="([^"]+)"( checked)?', fragment) == [
        (MAY[0], " checked"),
        (JUNE[0], ""),
        (JUNE[1], ""),
    ]
    assert "2 files of the history match “06/”" in fragment
    assert "1 chosen" in fragment


def test_the_chooser_caps_the_list_and_says_how_many_match(by_month, admin_console, monkeypatch):
    monkeypatch.setattr("console.selective.FILES_SHOWN", 3)
    page = admin_console.get(URL, **PANEL).content.decode()
    assert len(re.findall(r'name="files" value=', page)) == 3
    assert "The history holds 4 files; the first 3 are listed" in page


# --- preview ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SCOPES))
def test_each_kind_previews_the_files_and_rows_of_the_api_dry_run(
    kind, by_month, admin_console, admin_client
):
    data, files = SCOPES[kind]
    before = rows_by_file(by_month)

    response = preview(admin_console, data)

    assert response.status_code == 200, response.content.decode()[:2000]
    page = response.content.decode()
    scope = confirmation(page)["scope"]
    api = admin_client.post(API, {"dry_run": True, "scope": json.loads(scope)}, format="json")
    expected = api.json()["scope"]
    assert expected["files_in_scope"] == len(files)
    assert re.findall(r'<tr data-path="([^"]+)"', page) == files
    assert f'data-scope-figure="rows_replaced">{expected["rows_replaced"]}<' in page
    assert expected["rows_replaced"] == 10 * len(files)
    kept = 40 - 10 * len(files)
    assert f"keeps the {kept} rows of the files out of the scope" in page
    assert api.json()["end_state"]["rows_kept"] == kept
    assert "Confirm selective refresh" in page
    assert re.search(r"data-confirm-button disabled>Selective refresh raw.sales<", page)
    assert nothing_happened(by_month, before)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"kind": "prefix", "prefix": ""}, "prefix", "Type the start of the paths"),
        ({"kind": "prefix", "prefix": "../globex/"}, "prefix", "must be relative"),
        ({"kind": "prefix", "prefix": "/etc/"}, "prefix", "must be relative"),
        ({"kind": "modified"}, "modified_after", "Give a start, an end, or both"),
        ({"kind": "modified", "modified_after": "yesterday"}, "modified_after", "valid date"),
        (
            {
                "kind": "modified",
                "modified_after": "2025-06-02T00:00",
                "modified_before": "2025-06-01T00:00",
            },
            "modified_after",
            "modified_after must be before modified_before",
        ),
        ({"kind": "files"}, "files", "Tick at least one file"),
        ({"kind": "files", "files": ["a/../../b.csv"]}, "files", "must be relative"),
        ({"kind": "sideways"}, "kind", "Select a valid choice"),
        ({}, "kind", "This field is required"),
    ],
)
def test_bad_input_is_a_message_on_the_chooser_not_a_500(
    data, field, message, by_month, admin_console
):
    response = preview(admin_console, data)
    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    page = html_lib.unescape(response.content.decode())
    assert message in page
    assert "Selective refresh of <code>raw.sales</code>" in page  # the chooser, to fix it
    assert not RefreshPlan.objects.exists()


def test_an_unknown_file_is_named_and_no_confirmation_is_offered(by_month, admin_console):
    response = preview(admin_console, {"kind": "files", "files": [MAY[0], "2025-07/x.csv"]})
    assert response.status_code == 200
    page = response.content.decode()
    assert "data-unknown-files" in page and "2025-07/x.csv" in page
    assert "data-scope-blocked" in page and "Executing would be refused" in page
    assert "<dialog" not in page


def test_a_scope_on_a_table_without_rows_is_refused_with_the_reason(
    csv_ingestion, source_dir, admin_console
):
    write_csv_files(source_dir, files=1, rows=5)
    response = preview(admin_console, {"kind": "prefix", "prefix": "part-"})
    assert response.status_code == 409
    assert "has no rows yet" in response.content.decode()


# --- execution ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SCOPES))
def test_each_kind_executes_and_replaces_only_the_rows_of_its_files(
    kind, by_month, admin_console, source_dir
):
    data, files = SCOPES[kind]
    before = rows_by_file(by_month)
    history_before = {
        entry.path: (entry.rows, entry.run_id) for entry in ProcessedFile.objects.all()
    }
    fields = confirmation(preview(admin_console, data).content.decode())

    response = execute(admin_console, fields)

    assert response.status_code == 200, response.content.decode()[:2000]
    operation = RefreshOperation.objects.get()
    label = f"Selective refresh · {len(files)} file{'s' if len(files) != 1 else ''}"
    assert operation.label == label
    assert label in response.content.decode()
    assert operation.request["scope"] == json.loads(fields["scope"])
    assert operation.plan.public_id == fields["plan_id"]
    drain_queue()
    operation = operation_sync(operation=operation)
    assert operation.status == OperationStatus.PUBLISHED

    after = rows_by_file(by_month)
    assert set(after) == set(before)
    for path in before:
        if path in files:  # reloaded: the same content, loaded again (a new load time)
            assert [name for name, _ in after[path]] == [name for name, _ in before[path]]
            assert after[path] != before[path]
        else:  # untouched: the very same rows
            assert after[path] == before[path]
    history = {entry.path: (entry.rows, entry.run_id) for entry in ProcessedFile.objects.all()}
    for path, entry in history_before.items():
        if path not in files:
            assert history[path] == entry
        else:
            assert history[path] == (10, operation.run_id)
    page = admin_console.get(f"/operations/{operation.public_id}/").content.decode()
    assert label in page


def test_without_javascript_the_chooser_and_preview_are_pages_and_execute_redirects(
    by_month, admin_console
):
    chooser = admin_console.get(URL)
    assert chooser.status_code == 200 and "<html" in chooser.content.decode()
    page = admin_console.get(URL, {"kind": "prefix", "prefix": "2025-06/", "preview": "1"})
    html = page.content.decode()
    assert "<html" in html and "<noscript>" in html
    fields = confirmation(html)
    done = admin_console.post(URL, {**fields, "typed_name": "raw.sales"})
    operation = RefreshOperation.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/operations/{operation.public_id}/"


def test_a_wrong_name_changes_nothing(by_month, admin_console):
    before = rows_by_file(by_month)
    fields = confirmation(preview(admin_console, SCOPES["prefix"][0]).content.decode())
    response = execute(admin_console, fields, typed="raw.sale")
    assert response.status_code == 400
    assert "The table name does not match" in response.content.decode()
    assert nothing_happened(by_month, before)


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ('{"prefix": "../globex/"}', "must be relative"),
        ('{"files": ["/etc/passwd"]}', "must be relative"),
        ('{"files": ["s3://globex/secret.csv"]}', "must be relative"),
        ('{"prefix": "2025-06/", "files": ["x.csv"]}', "Give exactly one of"),
        ("{not json", "not valid JSON"),
        ("[]", "An object"),
        ("", "This field is required"),
    ],
)
def test_a_tampered_scope_is_parsed_again_and_refused(scope, message, by_month, admin_console):
    before = rows_by_file(by_month)
    fields = confirmation(preview(admin_console, SCOPES["prefix"][0]).content.decode())

    response = execute(admin_console, {**fields, "scope": scope})

    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    assert message in html_lib.unescape(response.content.decode())
    assert nothing_happened(by_month, before)


def test_the_plan_vouches_for_its_own_scope_only(by_month, admin_console):
    """A valid scope other than the previewed one (a changed hidden field) is refused."""
    before = rows_by_file(by_month)
    fields = confirmation(preview(admin_console, SCOPES["prefix"][0]).content.decode())

    response = execute(admin_console, {**fields, "scope": json.dumps({"files": MAY})})

    assert response.status_code == 409
    page = html_lib.unescape(response.content.decode())
    assert "PLAN_STALE" in page and "not the scope of this call" in page
    assert nothing_happened(by_month, before)
    # Unused, the plan still confirms its own scope.
    assert execute(admin_console, fields).status_code == 200


def test_a_file_named_only_in_a_tampered_scope_is_refused(by_month, admin_console):
    before = rows_by_file(by_month)
    fields = confirmation(preview(admin_console, SCOPES["files"][0]).content.decode())
    fields.pop("plan_id")
    response = execute(admin_console, {**fields, "scope": json.dumps({"files": ["nope.csv"]})})
    assert response.status_code == 400
    assert "neither in the source nor in the history" in response.content.decode()
    assert nothing_happened(by_month, before)


def test_another_tenants_ingestion_is_a_404(by_month, other_tenant, console):
    outsider = console(Role.ADMIN, tenant_obj=other_tenant)
    IngestionFactory(tenant=other_tenant, public_id="theirs", destination_table="raw.theirs")
    before = rows_by_file(by_month)
    assert outsider.get(URL, **PANEL).status_code == 404
    assert preview(outsider, SCOPES["prefix"][0]).status_code == 404
    scope = json.dumps({"prefix": "2025-06/"})
    assert execute(outsider, {"scope": scope}).status_code == 404
    assert nothing_happened(by_month, before)


def test_a_role_without_the_full_refresh_permission_previews_but_is_refused(by_month, console):
    operator = console(Role.OPERATOR)
    before = rows_by_file(by_month)
    page = preview(operator, SCOPES["prefix"][0]).content.decode()
    assert "Your role does not allow selective refresh" in page
    assert "<dialog" not in page

    scope = json.dumps({"prefix": "2025-06/"})
    response = execute(operator, {"scope": scope})
    assert response.status_code == 403
    assert "Your role does not allow this" in response.content.decode()
    assert nothing_happened(by_month, before)


# --- the end state of every preview ---------------------------------------------------------


def test_a_fresh_start_without_new_files_says_the_table_will_be_empty(loaded, admin_console):
    page = admin_console.get("/ingestions/sales/fresh-start/", **PANEL).content.decode()
    end = re.search(r'<p class="end-state[^"]*" data-end-state="(\w+)">(.*?)</p>', page, re.S)
    assert end and end.group(1) == "empty"
    assert "raw.sales will be EMPTY" in end.group(2)
    assert "it holds 0 rows until new files arrive" in end.group(2)
    assert "its 100 current rows are replaced by nothing" in end.group(2)


def test_the_api_dry_run_carries_the_end_state_beside_the_prd_fields(
    loaded, admin_client, source_dir
):
    fresh = admin_client.post(
        "/api/v1/ingestions/sales/fresh-start", {"dry_run": True}, format="json"
    ).json()
    assert {key: fresh["end_state"][key] for key in ("rows", "rows_kept", "files", "empty")} == {
        "rows": 0,
        "rows_kept": 0,
        "files": 0,
        "empty": True,
    }
    assert "will be EMPTY" in fresh["end_state"]["sentence"]
    assert set(fresh["impact"]) == {
        "files_to_process",
        "files_skipped",
        "estimated_data_size_gb",
        "estimated_cost_usd",
        "estimated_duration_minutes",
    }

    (source_dir / "part-0009.csv").write_text("id,name,amount\n9,new,1.0\n")
    fresh = admin_client.post(
        "/api/v1/ingestions/sales/fresh-start", {"dry_run": True}, format="json"
    ).json()
    assert fresh["end_state"]["files"] == 1 and fresh["end_state"]["rows"] is None
    assert not fresh["end_state"]["empty"]
    full = admin_client.post(
        "/api/v1/ingestions/sales/full-refresh", {"dry_run": True}, format="json"
    ).json()
    assert full["end_state"]["files"] == 5
    assert "holds only the rows of the 5 source files" in full["end_state"]["sentence"]
    drop = admin_client.delete("/api/v1/ingestions/sales/table?dry_run=true").json()
    assert drop["end_state"]["table_exists"] is False and drop["end_state"]["empty"]
    clear = admin_client.delete("/api/v1/ingestions/sales/processed-files?dry_run=true").json()
    assert (clear["end_state"]["rows"], clear["end_state"]["history_files"]) == (100, 0)


@pytest.mark.parametrize("action", ["full-refresh", "fresh-start", "drop-table", "clear-history"])
def test_every_console_preview_states_the_end_state_of_the_api(
    action, loaded, admin_console, admin_client
):
    kind = {"drop-table": "table", "clear-history": "processed-files"}.get(action, action)
    method = "delete" if action in ("drop-table", "clear-history") else "post"
    url = f"/api/v1/ingestions/sales/{kind}"
    api = getattr(admin_client, method)(
        url + ("?dry_run=true" if method == "delete" else ""),
        {} if method == "delete" else {"dry_run": True},
        format="json",
    ).json()
    page = admin_console.get(f"/ingestions/sales/{action}/", **PANEL).content.decode()
    assert api["end_state"]["sentence"] in html_lib.unescape(page)
