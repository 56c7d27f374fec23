"""The operation page: it follows a zero-downtime refresh live until its run publishes, asks
for the publish-or-discard decision when files failed, and undoes an operation while what it
replaced is kept; every action confirmed by the table's name, every refusal a message."""

import pytest

from ingestions.engines import load_engine
from ingestions.models import ProcessedFile, Role
from refresh.models import OperationStatus, RefreshOperation
from refresh.services import refresh_execute
from refresh.sync import operation_sync

from ..helpers import drain_queue, write_csv_files
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/ingestions/sales/"
PANEL = hx("operation-panel")
RESULT = hx("operation-result")
MALFORMED_CSV = b"id,name,amount\n1,a\n2,b,3,4\n"


def rows_of(ingestion) -> int:
    return load_engine().describe_table(ingestion.table_identifier).row_count


def history_count(ingestion) -> int:
    return ProcessedFile.objects.filter(ingestion=ingestion).count()


def status_of(operation) -> str:
    """The status as any read shows it: brought up to its run's outcome."""
    return operation_sync(operation=RefreshOperation.objects.get(pk=operation.pk)).status


def operation_url(operation, action: str = "") -> str:
    return f"/operations/{operation.public_id}/" + (f"{action}/" if action else "")


@pytest.fixture
def refreshed(loaded, source_dir, admin_console):
    """A full refresh of the loaded ingestion (4 files, 100 rows) with a fifth file of 25
    rows new in the source; accepted, its run not executed yet."""
    write_csv_files(source_dir, files=1, rows=25, start=4)
    return refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_console.user, confirm=True
    )


@pytest.fixture
def published(refreshed):
    drain_queue()
    return refreshed


@pytest.fixture
def awaiting(loaded, source_dir, refreshed):
    """The refresh after its run: the malformed sixth file failed, the five others loaded."""
    (source_dir / "part-9999.csv").write_bytes(MALFORMED_CSV)
    drain_queue()
    return refreshed


# --- following the run live ------------------------------------------------------------


def test_the_page_polls_its_record_until_the_run_has_published(refreshed, admin_console):
    page = admin_console.get(operation_url(refreshed)).content.decode()
    assert "<html" in page and 'id="operation-result"' in page
    assert 'hx-trigger="every 2s"' in page and 'data-polling="true"' in page
    assert f'hx-get="{operation_url(refreshed)}?polling=1"' in page
    assert "builds the new version beside the live table" in page

    still = admin_console.get(f"{operation_url(refreshed)}?polling=1", **RESULT)
    assert still.status_code == 200
    assert "<html" not in still.content.decode()  # the fragment, not the page
    assert 'hx-trigger="every 2s"' in still.content.decode()
    assert "HX-Trigger-After-Settle" not in still

    drain_queue()
    stored = RefreshOperation.objects.get(pk=refreshed.pk)
    assert stored.status == OperationStatus.PUBLISHED  # the worker recorded the run's end
    ended = admin_console.get(f"{operation_url(refreshed)}?polling=1", **RESULT)
    html = ended.content.decode()
    assert RefreshOperation.objects.get(pk=refreshed.pk).updated_at == stored.updated_at
    assert "Published: the new version of the table is live" in html
    assert '<span class="badge badge-ok">Published</span>' in html
    assert "every 2s" not in html and "data-polling" not in html  # polling stops
    assert "ingestion-changed" in ended["HX-Trigger-After-Settle"]  # the cards follow
    assert "125 rows" in html and "Published</dt>" in html  # the run and the timeline


def test_a_finished_operation_does_not_poll(published, admin_console):
    page = admin_console.get(operation_url(published)).content.decode()
    assert "every 2s" not in page
    again = admin_console.get(operation_url(published), **RESULT)
    assert "HX-Trigger-After-Settle" not in again  # only a poll that saw it end says so


def test_the_ingestion_page_shows_the_new_statuses(awaiting, admin_console):
    operations = admin_console.get(PAGE, **hx("operation-list")).content.decode()
    assert '<span class="badge badge-warn">Awaiting decision</span>' in operations
    assert f'href="{operation_url(awaiting)}">Publish or discard…' in operations


# --- publish or discard ----------------------------------------------------------------


def test_a_refresh_awaiting_a_decision_says_why_and_offers_publish_and_discard(
    awaiting, admin_console
):
    html = admin_console.get(operation_url(awaiting)).content.decode()
    assert '<span class="badge badge-warn">Awaiting decision</span>' in html
    assert (
        "1 of 6 files failed to load" in html and "Publish what loaded (5 files, 125 rows)" in html
    )
    assert "part-9999.csv" in html
    assert "every 2s" not in html  # a decision is a person's: nothing to poll for
    for action, label in [("publish", "Publish what loaded"), ("discard", "Discard what loaded")]:
        dialog = html.split(f'<dialog id="{action}-dialog"', 1)[1].split("</dialog>", 1)[0]
        assert f'hx-post="{operation_url(awaiting, action)}"' in dialog
        assert 'data-expected="raw.sales"' in dialog
        assert f"data-confirm-button disabled>{label}<" in dialog
        assert "csrfmiddlewaretoken" in dialog
    assert "<noscript>" in html  # the whole page works without JavaScript too


def test_publish_with_the_table_name_publishes_what_loaded(awaiting, loaded, admin_console):
    response = admin_console.post(
        operation_url(awaiting, "publish"), {"typed_name": "raw.sales"}, **PANEL
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Published: the new version of the table is live" in html
    assert "ingestion-changed" in response["HX-Trigger-After-Settle"]
    assert status_of(awaiting) == OperationStatus.PUBLISHED
    assert rows_of(loaded) == 125 and history_count(loaded) == 5  # the malformed file left out


def test_discard_with_the_table_name_keeps_the_table_as_it_was(awaiting, loaded, admin_console):
    response = admin_console.post(
        operation_url(awaiting, "discard"), {"typed_name": "raw.sales"}, **PANEL
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Discarded: the table and its history are as they were" in html
    assert '<span class="badge badge-muted">Discarded</span>' in html
    assert status_of(awaiting) == OperationStatus.DISCARDED
    assert rows_of(loaded) == 100 and history_count(loaded) == 4


@pytest.mark.parametrize("action", ["publish", "discard"])
@pytest.mark.parametrize("typed", ["", "raw.sale", "RAW.SALES", "raw.sales "])
def test_a_wrong_name_decides_nothing_and_says_why(action, typed, awaiting, loaded, admin_console):
    response = admin_console.post(operation_url(awaiting, action), {"typed_name": typed}, **PANEL)
    assert response.status_code == 400
    assert response["X-Console-Fragment"] == "error"
    html = response.content.decode()
    assert "The table name does not match" in html and "nothing was changed" in html
    assert f'hx-get="{operation_url(awaiting)}"' in html  # back to the operation
    assert status_of(awaiting) == OperationStatus.AWAITING_DECISION
    assert rows_of(loaded) == 100


def test_refusals_of_a_decision_are_messages(awaiting, console, admin_console):
    viewer = console(Role.VIEWER)
    page = viewer.get(operation_url(awaiting)).content.decode()
    assert "publish-dialog" not in page and "Your role does not allow full refresh" in page
    refused = viewer.post(operation_url(awaiting, "publish"), {"typed_name": "raw.sales"}, **PANEL)
    assert refused.status_code == 403
    assert refused["X-Console-Fragment"] == "error"
    assert refused["HX-Retarget"] == "#operation-panel"
    assert "Your role does not allow this" in refused.content.decode()
    assert status_of(awaiting) == OperationStatus.AWAITING_DECISION

    admin_console.post(operation_url(awaiting, "discard"), {"typed_name": "raw.sales"}, **PANEL)
    again = admin_console.post(
        operation_url(awaiting, "publish"), {"typed_name": "raw.sales"}, **PANEL
    )
    assert again.status_code == 409
    html = again.content.decode()
    assert "Nothing to publish or discard" in html and "OPERATION_NOT_DECIDABLE" in html
    assert status_of(awaiting) == OperationStatus.DISCARDED


def test_a_decision_without_javascript_returns_to_the_operation_page(awaiting, admin_console):
    response = admin_console.post(operation_url(awaiting, "publish"), {"typed_name": "raw.sales"})
    assert response.status_code == 302
    assert response["Location"] == operation_url(awaiting)


# --- undo ------------------------------------------------------------------------------


def test_a_published_refresh_shows_its_retention_and_offers_undo(published, admin_console):
    html = admin_console.get(operation_url(published)).content.decode()
    published.refresh_from_db()
    assert published.retained_until is not None
    assert f'kept until <strong><time datetime="{published.retained_until:%Y-%m-%dT%H}' in html
    assert f'hx-get="{operation_url(published, "undo")}"' in html
    assert "Undo full refresh…" in html
    operations = admin_console.get(PAGE, **hx("operation-list")).content.decode()
    assert '<span class="badge badge-ok">Published</span>' in operations
    assert "undo possible until" in operations


def test_undo_previews_what_comes_back_then_undoes_with_the_table_name(
    published, loaded, admin_console
):
    assert rows_of(loaded) == 125 and history_count(loaded) == 5
    preview = admin_console.get(operation_url(published, "undo"), **PANEL)
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Undo preview · nothing has been executed" in html
    comes_back = html.split("What comes back", 1)[1].split("What is lost", 1)[0]
    assert "Table raw.sales as it was before: 100 rows" in comes_back
    assert "history of 4 processed files" in comes_back
    lost = html.split("What is lost", 1)[1].split("</ul>", 1)[0]
    assert "Table raw.sales as it is now: 125 rows" in lost
    assert "No run has loaded anything since" in lost
    dialog = html.split('<dialog id="undo-dialog"', 1)[1].split("</dialog>", 1)[0]
    assert f'hx-post="{operation_url(published, "undo")}"' in dialog
    assert 'data-expected="raw.sales"' in dialog
    assert rows_of(loaded) == 125  # a preview changes nothing

    wrong = admin_console.post(operation_url(published, "undo"), {"typed_name": "sales"}, **PANEL)
    assert wrong.status_code == 400
    assert "The table name does not match" in wrong.content.decode()
    assert status_of(published) == OperationStatus.PUBLISHED and rows_of(loaded) == 125

    undone = admin_console.post(
        operation_url(published, "undo"), {"typed_name": "raw.sales"}, **PANEL
    )
    assert undone.status_code == 200
    html = undone.content.decode()
    assert '<span class="badge badge-info">Undone</span>' in html
    assert "the table is back to 100 rows and the history to 4 files" in html
    assert "ingestion-changed" in undone["HX-Trigger-After-Settle"]
    assert status_of(published) == OperationStatus.UNDONE
    assert rows_of(loaded) == 100 and history_count(loaded) == 4

    page = admin_console.get(operation_url(published)).content.decode()
    assert "Undo full refresh…" not in page and "Undone</dt>" in page
    blocked = admin_console.get(operation_url(published, "undo"), **PANEL).content.decode()
    assert "It cannot be undone now." in blocked and "undo-dialog" not in blocked


def test_an_undo_blocked_by_a_later_operation_is_refused_with_why(published, admin_console):
    admin_console.post(f"{PAGE}drop-table/", {"typed_name": "raw.sales"}, **PANEL)
    preview = admin_console.get(operation_url(published, "undo"), **PANEL).content.decode()
    assert 'data-blocked-by="OPERATION_NOT_UNDOABLE"' in preview
    assert "undo it first" in preview and "undo-dialog" not in preview

    refused = admin_console.post(
        operation_url(published, "undo"), {"typed_name": "raw.sales"}, **PANEL
    )
    assert refused.status_code == 409
    assert refused["X-Console-Fragment"] == "error"
    assert "This operation cannot be undone" in refused.content.decode()
    assert status_of(published) == OperationStatus.PUBLISHED


def test_a_viewer_may_preview_an_undo_but_not_undo(published, console):
    viewer = console(Role.VIEWER)
    assert "Undo full refresh…" not in viewer.get(operation_url(published)).content.decode()
    preview = viewer.get(operation_url(published, "undo"), **PANEL).content.decode()
    assert "What comes back" in preview and "undo-dialog" not in preview
    refused = viewer.post(operation_url(published, "undo"), {"typed_name": "raw.sales"}, **PANEL)
    assert refused.status_code == 403
    assert status_of(published) == OperationStatus.PUBLISHED


def test_another_tenants_operation_is_not_found(published, console, other_tenant):
    stranger = console(Role.ADMIN, tenant_obj=other_tenant)
    assert stranger.get(operation_url(published)).status_code == 404
    assert stranger.get(operation_url(published, "undo")).status_code == 404
    for action in ("publish", "discard", "undo"):
        response = stranger.post(operation_url(published, action), {"typed_name": "raw.sales"})
        assert response.status_code == 404
    assert status_of(published) == OperationStatus.PUBLISHED


def test_the_preview_shows_the_quota_and_offers_no_confirmation_once_it_is_used(
    loaded, admin_console, settings
):
    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "full_refresh": "1/h"}
    page = admin_console.get("/ingestions/sales/full-refresh/").content.decode()
    assert 'data-quota="left"' in page
    assert "Rate limit: 1 of 1 full refresh operation of raw.sales per hour left" in page

    refresh_execute(ingestion=loaded, kind="full_refresh", actor=admin_console.user, confirm=True)
    page = admin_console.get("/ingestions/sales/full-refresh/").content.decode()
    assert 'data-quota="exhausted"' in page
    assert "data-open-dialog" not in page  # no way to start typing the name
