"""The ingestion page and its fragments: cards, runs (polling, progress, chart), audit."""

import re

import pytest

from ingestions.models import Role, RunStatus
from ingestions.runs import run_request

from ..factories import IngestionFactory, RunFactory
from ..helpers import drain_queue
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/ingestions/sales/"
FRAGMENTS = [
    "run-table",
    "run-chart",
    "table-card",
    "history-card",
    "operation-list",
    "audit-trail",
]


def test_the_page_shows_configuration_table_history_runs_operations_and_audit(
    loaded, admin_console
):
    admin_console.post(f"{PAGE}drop-table/", {"typed_name": "raw.sales"})
    page = admin_console.get(PAGE).content.decode()
    assert "<h1>Ingestion" in page and "raw.sales" in page
    assert loaded.source_uri in page and "CSV" in page  # configuration
    assert 'data-stat="table-missing"' in page  # the table card, after the drop
    assert 'data-stat="history-count">4<' in page  # the history card
    assert "part-0000.csv" in page and "part-0003.csv" in page  # oldest and newest file
    assert 'role="img" aria-labelledby="run-chart-title run-chart-desc"' in page
    assert ">100</td>" in page  # rows of the run in the runs table
    assert "Drop table" in page and "Table dropped" not in page  # operation with its steps
    assert re.search(r"Drop the table: <span class=\"step-status\">Success", page)
    audit = page.split('id="audit-trail"', 1)[1]
    assert "Drop table" in audit and 'badge-ok">Success' in audit  # the drop's audit entry


def test_the_table_card_tells_the_engine_metadata(loaded, admin_console):
    card = admin_console.get(PAGE, **hx("table-card")).content.decode()
    assert card.lstrip().startswith('<section id="table-card"')
    assert 'data-stat="table-rows">100<' in card
    assert "Snapshot" in card and "Last change" in card


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_each_fragment_is_served_alone_by_its_dom_id(fragment, loaded, admin_console):
    response = admin_console.get(PAGE, **hx(fragment))
    assert response.status_code == 200
    body = response.content.decode()
    assert f'id="{fragment}"' in body.split(">", 1)[0]
    assert "<html" not in body
    # Each one reloads itself when the ingestion changes.
    assert "ingestion-changed from:body" in body.split(">", 1)[0]
    if fragment in ("table-card", "history-card"):
        assert "run-progress from:body" in body.split(">", 1)[0]


def test_another_tenants_ingestion_is_not_found_page_fragment_and_action(
    console, other_tenant, tenant
):
    IngestionFactory(tenant=other_tenant, public_id="theirs", destination_table="raw.theirs")
    admin = console(Role.ADMIN)
    assert admin.get("/ingestions/theirs/").status_code == 404
    assert admin.get("/ingestions/theirs/", **hx("run-table")).status_code == 404
    assert admin.get("/ingestions/theirs/full-refresh/").status_code == 404
    assert admin.post("/ingestions/theirs/run/").status_code == 404
    page = admin.get("/ingestions/theirs/").content.decode()
    assert "Not found" in page and "theirs" not in page


def test_the_run_table_polls_while_a_run_is_active_and_stops_when_it_ends(
    loaded, admin_console, source_dir
):
    run = run_request(ingestion=loaded)
    active = admin_console.get(PAGE, **hx("run-table")).content.decode()
    head = active.split(">", 1)[0]
    assert "every 2s" in head and "?polling=1" in head
    assert "waiting for a worker" in active
    polled = admin_console.get(PAGE + "?polling=1", **hx("run-table"))
    # While it runs, the table and history cards follow (they listen to run-progress).
    assert "run-progress" in polled["HX-Trigger-After-Settle"]
    assert "ingestion-changed" not in polled["HX-Trigger-After-Settle"]

    drain_queue()
    ended = admin_console.get(PAGE + "?polling=1", **hx("run-table"))
    head = ended.content.decode().split(">", 1)[0]
    assert "every" not in head and "polling" not in head
    # The run being followed ended: the rest of the page is told to reload.
    assert "ingestion-changed" in ended["HX-Trigger-After-Settle"]
    run.refresh_from_db()
    assert f'id="run-{run.public_id}"' in ended.content.decode()


def test_the_running_run_has_a_progress_bar_of_files_loaded_over_found(loaded, admin_console):
    RunFactory(ingestion=loaded, status=RunStatus.RUNNING, files_found=10, files_loaded=4)
    fragment = admin_console.get(PAGE, **hx("run-table")).content.decode()
    assert "4 of 10 files loaded" in fragment
    assert re.search(r'<progress id="run-progress" max="10" value="4"', fragment)
    assert "Cancel run" in fragment


def test_the_chart_draws_the_last_30_runs_as_svg(loaded, admin_console):
    for index in range(34):
        RunFactory(ingestion=loaded, status=RunStatus.SUCCESS, rows_written=index * 10)
    chart = admin_console.get(PAGE, **hx("run-chart")).content.decode()
    assert chart.count('<rect class="bar') == 30
    assert "<svg" in chart and "<script" not in chart
    assert "30 runs, oldest left" in chart


def test_a_viewer_has_no_actions_an_operator_no_admin_ones(loaded, console):
    viewer = console(Role.VIEWER).get(PAGE).content.decode()
    assert "Danger zone" not in viewer and "Run now" not in viewer
    assert "lets you look at this ingestion, not change it" in viewer
    operator = console(Role.OPERATOR).get(PAGE).content.decode()
    assert "Run now" in operator and "Fresh start" in operator
    for admin_only in ("full-refresh/", "drop-table/", "clear-history/"):
        assert admin_only not in operator
    admin = console(Role.ADMIN).get(PAGE).content.decode()
    for slug in ("full-refresh/", "fresh-start/", "drop-table/", "clear-history/"):
        assert f'href="/ingestions/sales/{slug}"' in admin


def test_run_detail_page_shows_counts_and_failed_files(loaded, admin_console):
    run = RunFactory(
        ingestion=loaded,
        status=RunStatus.PARTIAL_SUCCESS,
        files_found=3,
        files_loaded=2,
        files_failed=1,
        failed_files=[{"path": "bad.csv", "error": "broken", "error_code": "FILE_READ_ERROR"}],
    )
    page = admin_console.get(f"/runs/{run.public_id}/").content.decode()
    assert "Partial success" in page and "bad.csv" in page and "FILE_READ_ERROR" in page
    other = IngestionFactory()  # another tenant's run
    assert admin_console.get(f"/runs/{RunFactory(ingestion=other).public_id}/").status_code == 404


def test_cancel_a_queued_run_from_the_run_table(loaded, console):
    run = run_request(ingestion=loaded)
    viewer = console(Role.VIEWER).post(f"/runs/{run.public_id}/cancel/", **hx("run-table"))
    assert viewer.status_code == 403
    assert viewer["HX-Retarget"] == "#operation-panel"  # refusals go to the operation panel
    assert viewer["X-Console-Fragment"] == "error"

    response = console(Role.OPERATOR).post(f"/runs/{run.public_id}/cancel/", **hx("run-table"))
    assert response.status_code == 200
    assert response.content.decode().lstrip().startswith('<div id="run-table"')
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED

    again = console(Role.OPERATOR).post(f"/runs/{run.public_id}/cancel/", **hx("run-table"))
    assert again.status_code == 409
    assert "already finished" in again.content.decode()


def test_cancel_without_javascript_comes_back_to_the_page(loaded, console):
    run = run_request(ingestion=loaded)
    response = console(Role.OPERATOR).post(f"/runs/{run.public_id}/cancel/", follow=True)
    assert response.redirect_chain[-1][0] == PAGE
    assert f"Cancellation of run {run.public_id} requested." in response.content.decode()


@pytest.mark.parametrize("history", [1, 30])
def test_the_page_issues_a_bounded_number_of_queries(
    history, loaded, admin_console, django_assert_max_num_queries
):
    for _ in range(history):
        RunFactory(ingestion=loaded, status=RunStatus.SUCCESS, requested_by=admin_console.user)
        admin_console.post(f"{PAGE}drop-table/", {"typed_name": "raw.sales"})
    # 14 today, for 1 or 30 runs and operations: session, user, tenant, ingestion, roles,
    # runs, history, failed files, operations and their steps, audit, the audit's
    # ingestion names (one query), the last verification, tenant menu.
    with django_assert_max_num_queries(15):
        assert admin_console.get(PAGE).status_code == 200


def test_a_preview_the_engine_or_source_cannot_answer_says_so(loaded, admin_console, source_dir):
    loaded.source_uri = str(source_dir / "gone")  # inside the location, but not there
    loaded.save()
    response = admin_console.get(f"{PAGE}full-refresh/", **hx("operation-panel"))
    assert response.status_code == 400  # SOURCE_UNAVAILABLE
    assert response["X-Console-Fragment"] == "error"  # swapped in: a message, not a crash
    assert "The source cannot be listed" in response.content.decode()


def test_a_preview_of_a_source_outside_the_tenants_locations_says_so(
    loaded, admin_console, tmp_path
):
    loaded.source_uri = str(tmp_path / "elsewhere")
    loaded.save()
    response = admin_console.get(f"{PAGE}full-refresh/", **hx("operation-panel"))
    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    html = response.content.decode()
    assert "is outside your tenant&#x27;s storage locations" in html
    assert "SOURCE_NOT_ALLOWED" in html and "nothing was changed" in html


def test_the_run_page_polls_its_summary_while_the_run_is_active(loaded, admin_console):
    run = run_request(ingestion=loaded)
    fragment = admin_console.get(f"/runs/{run.public_id}/", **hx("run-summary")).content.decode()
    head = fragment.lstrip().split(">", 1)[0]
    assert head.startswith('<section id="run-summary"') and "every 2s" in head
    assert "<html" not in fragment
    drain_queue()
    ended = admin_console.get(f"/runs/{run.public_id}/", **hx("run-summary")).content.decode()
    assert "every 2s" not in ended.split(">", 1)[0]
    assert "Success" in ended


def test_the_page_shows_what_the_worker_did_to_maintain_the_table(loaded, admin_console):
    from ingestions.maintenance import maintenance_run

    assert "Nothing yet." in admin_console.get(PAGE).content.decode()
    actions = maintenance_run(ingestion=loaded)
    html = admin_console.get(PAGE, **hx("maintenance-list")).content.decode()
    assert actions and all(f'data-maintenance="{item.action}"' in html for item in actions)


def test_the_table_page_shows_schema_snapshots_and_a_bounded_sample(loaded, console, settings):
    from ingestions.models import Run
    from ingestions.selectors import TABLE_SAMPLE_ROWS

    page = console(Role.VIEWER).get("/ingestions/sales/table/")

    assert page.status_code == 200
    text = page.content.decode()
    # The schema, the lineage columns marked.
    assert 'data-column="_source_file"' in text and ">lineage<" in text
    # The snapshot of the run that loaded the table, with a link to that run.
    run = Run.objects.get(ingestion=loaded)
    assert f'href="/runs/{run.public_id}/"' in text
    # A sample of at most 50 of the 100 rows.
    sample = text.split('data-table="sample"')[1]
    assert sample.count("<tr>") - 1 == TABLE_SAMPLE_ROWS
    assert "part-0000.csv" in sample
    # Linked from the ingestion page.
    assert (
        'href="/ingestions/sales/table/"'
        in console(Role.VIEWER).get("/ingestions/sales/").content.decode()
    )


def test_another_tenants_table_page_is_a_404(loaded, console, other_tenant):
    outsider = console(Role.ADMIN, tenant_obj=other_tenant)

    assert outsider.get("/ingestions/sales/table/").status_code == 404


def test_the_table_page_of_a_table_not_created_yet_says_so(csv_ingestion, console):
    text = console(Role.VIEWER).get(f"/ingestions/{csv_ingestion.public_id}/table/").content
    assert b"The table does not exist" in text


def test_the_history_page_walks_the_files_by_cursor_and_searches_by_path(
    csv_ingestion, console, monkeypatch, django_assert_max_num_queries
):
    from ingestions import selectors

    from ..factories import ProcessedFileFactory

    for month in ("2026-01", "2026-02"):
        for day in range(1, 4):
            ProcessedFileFactory(ingestion=csv_ingestion, path=f"{month}/day-{day:02d}.csv")
    monkeypatch.setattr(selectors, "HISTORY_PAGE_SIZE", 4)
    viewer = console(Role.VIEWER)
    url = f"/ingestions/{csv_ingestion.public_id}/history/"

    first = viewer.get(url).content.decode()
    paths = re.findall(r'data-path="([^"]+)"', first)
    assert paths == ["2026-01/day-01.csv", "2026-01/day-02.csv", "2026-01/day-03.csv",
                     "2026-02/day-01.csv"]  # fmt: skip
    next_link = re.search(r'href="\?([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    with django_assert_max_num_queries(9):  # the same few queries on every page
        second = viewer.get(f"{url}?{next_link}").content.decode()
    assert re.findall(r'data-path="([^"]+)"', second) == [
        "2026-02/day-02.csv",
        "2026-02/day-03.csv",
    ]
    assert "End of the history" in second
    # Search by the start of the path.
    found = viewer.get(url, {"path": "2026-02/"}).content.decode()
    assert re.findall(r'data-path="([^"]+)"', found)[0] == "2026-02/day-01.csv"
    assert "2026-01/" not in "".join(re.findall(r'data-path="([^"]+)"', found))
    assert (
        "No file of the history starts with" in viewer.get(url, {"path": "nope/"}).content.decode()
    )
    # A malformed query searches nothing special; another tenant sees no such ingestion.
    assert viewer.get(url, {"path": "x\x00y"}).status_code == 200


def test_another_tenants_history_page_is_a_404(loaded, console, other_tenant):
    outsider = console(Role.ADMIN, tenant_obj=other_tenant)

    assert outsider.get("/ingestions/sales/history/").status_code == 404


def test_verify_from_the_table_card_starts_a_job_whose_page_shows_the_report(admin_console, loaded):
    page = admin_console.get(f"/ingestions/{loaded.public_id}/")
    assert b"Verify against the source" in page.content

    started = admin_console.post(f"/ingestions/{loaded.public_id}/verify/")
    assert started.status_code == 302
    drain_queue()
    report = admin_console.get(started["Location"])

    assert report.status_code == 200
    assert b"The table holds exactly what the history says" in report.content
    card = admin_console.get(f"/ingestions/{loaded.public_id}/", **hx("table-card"))
    assert b'data-last-verify="SUCCESS"' in card.content
    assert started["Location"].encode() in card.content
    assert admin_console.get(f"/ingestions/{loaded.public_id}/verify/").status_code == 405
