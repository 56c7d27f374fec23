"""The actions panel: previews with the API's numbers, the typed-name confirmation, results,
refusals as messages (403, 409, 423, 429, 400), partial failures and resume, Run now."""

import re

import pytest
from auditlog.models import LogEntry

from ingestions.engines import load_engine
from ingestions.models import ProcessedFile, Role, Run, RunStatus
from ingestions.runs import run_request
from refresh.models import OperationStatus, RefreshOperation, RefreshPlan

from ..helpers import failing_sql
from .conftest import hx

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/ingestions/sales/"
API_BY_ACTION = {
    "full-refresh": ("post", "/api/v1/ingestions/sales/full-refresh"),
    "fresh-start": ("post", "/api/v1/ingestions/sales/fresh-start"),
    "drop-table": ("delete", "/api/v1/ingestions/sales/table"),
    "clear-history": ("delete", "/api/v1/ingestions/sales/processed-files"),
}
PANEL = hx("operation-panel")


def shown_impact(html: str) -> dict:
    """The impact figures of a preview fragment, as numbers."""
    figures = dict(re.findall(r'data-impact="(\w+)">([^<]*)<', html))
    return {key: float(re.sub(r"[^0-9.]", "", value)) for key, value in figures.items()}


def confirm(client, action: str, typed: str = "raw.sales", **data):
    return client.post(f"{PAGE}{action}/", {"typed_name": typed, **data}, **PANEL)


def unchanged(loaded) -> bool:
    return (
        load_engine().table_exists(loaded.table_identifier)
        and ProcessedFile.objects.filter(ingestion=loaded).count() == 4
        and not RefreshOperation.objects.exists()
    )


@pytest.mark.parametrize("action", list(API_BY_ACTION))
def test_the_preview_shows_the_numbers_of_the_api_dry_run_and_changes_nothing(
    action, loaded, admin_console, admin_client, source_dir
):
    method, url = API_BY_ACTION[action]
    (source_dir / "part-0009.csv").write_text("id,name,amount\n9,new,1.0\n")  # one new file
    api = getattr(admin_client, method)(url, {"dry_run": True}, format="json").json()

    response = admin_console.get(f"{PAGE}{action}/", **PANEL)
    assert response.status_code == 200
    html = response.content.decode()
    assert shown_impact(html) == pytest.approx(api["impact"])
    for warning in api["warnings"]:
        assert warning.replace("'", "&#x27;") in html
    assert "Preview · nothing has been executed" in html
    assert "<html" not in html
    assert unchanged(loaded)


def test_the_preview_names_what_is_lost_and_what_is_kept(loaded, admin_console):
    full = admin_console.get(f"{PAGE}full-refresh/", **PANEL).content.decode()
    lost = full.split("What is lost", 1)[1].split("What is kept", 1)[0]
    assert "Table raw.sales, 100 rows," in lost and "will be replaced when the run ends" in lost
    assert "History of 4 processed files" in lost

    fresh = admin_console.get(f"{PAGE}fresh-start/", **PANEL).content.decode()
    kept = fresh.split("What is kept", 1)[1]
    assert "History of 4 files is kept" in kept

    clear = admin_console.get(f"{PAGE}clear-history/", **PANEL).content.decode()
    kept = clear.split("What is kept", 1)[1]
    assert "Table raw.sales (100 rows," in kept and "is not touched" in kept

    steps = re.findall(r"<li>(Replace table|Clear the history|Trigger a run)", full)
    assert steps == ["Replace table", "Clear the history", "Trigger a run"]


def test_the_preview_opens_a_confirmation_dialog_that_asks_for_the_table_name(
    loaded, admin_console
):
    html = admin_console.get(f"{PAGE}drop-table/", **PANEL).content.decode()
    dialog = html.split("<dialog", 1)[1].split("</dialog>", 1)[0]
    assert 'data-expected="raw.sales"' in dialog
    assert re.search(r"data-confirm-button disabled>Drop table raw.sales<", dialog)
    assert 'hx-post="/ingestions/sales/drop-table/"' in dialog
    assert "csrfmiddlewaretoken" in dialog
    assert "<noscript>" not in html  # htmx would show it: whole pages only


def test_without_javascript_the_preview_is_a_page_with_an_inline_form(loaded, admin_console):
    response = admin_console.get(f"{PAGE}drop-table/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html and 'id="operation-panel"' in html
    noscript = html.split("<noscript>", 1)[1].split("</noscript>", 1)[0]
    assert 'method="post" action="/ingestions/sales/drop-table/"' in noscript
    assert "data-confirm-button disabled" not in noscript  # the server checks the name

    done = admin_console.post(f"{PAGE}drop-table/", {"typed_name": "raw.sales"})
    operation = RefreshOperation.objects.get()
    assert done.status_code == 302
    assert done["Location"] == f"/operations/{operation.public_id}/"
    record = admin_console.get(done["Location"]).content.decode()
    assert "Table dropped successfully" in record and "<html" in record


@pytest.mark.parametrize("typed", ["", "raw.sale", "RAW.SALES", " raw.sales", "raw.sales "])
def test_a_wrong_name_changes_nothing_and_says_why(typed, loaded, admin_console):
    response = confirm(admin_console, "full-refresh", typed)
    assert response.status_code == 400
    html = response.content.decode()
    assert "The table name does not match" in html
    assert "nothing was changed" in html
    assert response["X-Console-Fragment"] == "error"
    assert unchanged(loaded)


def test_the_right_name_executes_and_shows_every_step(loaded, admin_console):
    response = confirm(admin_console, "full-refresh")
    assert response.status_code == 200
    html = response.content.decode()
    operation = RefreshOperation.objects.get()
    assert operation.status == OperationStatus.ACCEPTED
    assert f"Full refresh accepted: run {operation.run.public_id} builds" in html
    assert html.count('<span class="badge badge-ok">Success</span>') == 3
    assert "raw.sales keeps its 100 rows until the new version is published" in html
    assert "4 files replaced in the history at publish" in html
    assert f'href="/runs/{operation.run.public_id}/"' in html
    assert "ingestion-changed" in response["HX-Trigger-After-Settle"]
    assert load_engine().describe_table(loaded.table_identifier).row_count == 100  # until published


def test_refusals_are_messages_with_what_to_do_next(settings, loaded, console):
    admin = console(Role.ADMIN)
    run = run_request(ingestion=loaded)
    busy = confirm(admin, "full-refresh")
    assert busy.status_code == 409
    html = busy.content.decode()
    assert "A run is in progress" in html and f"/runs/{run.public_id}/" in html
    assert "cancel it" in html
    Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)

    loaded.protected = True
    loaded.save()
    locked = confirm(admin, "drop-table")
    assert locked.status_code == 423
    assert "This ingestion is protected" in locked.content.decode()
    assert "protected" in admin.get(f"{PAGE}drop-table/", **PANEL).content.decode()
    loaded.protected = False
    loaded.save()

    settings.REFRESH_RATE_LIMITS = {**settings.REFRESH_RATE_LIMITS, "clear_processed_files": "1/h"}
    assert confirm(admin, "clear-history").status_code == 200
    limited = confirm(admin, "clear-history")
    assert limited.status_code == 429
    assert "Too many operations" in limited.content.decode()
    assert "You can try again in" in limited.content.decode()

    for response in (busy, locked, limited):
        assert response["X-Console-Fragment"] == "error"
        assert "nothing was changed" in response.content.decode()
    assert load_engine().table_exists(loaded.table_identifier)


@pytest.mark.parametrize(
    ("role", "action"),
    [(Role.VIEWER, "fresh-start"), (Role.OPERATOR, "full-refresh"), (Role.OPERATOR, "drop-table")],
)
def test_a_forced_post_beyond_the_role_is_refused_and_audited(role, action, loaded, console):
    response = confirm(console(role), action)
    assert response.status_code == 403
    assert "Your role does not allow this" in response.content.decode()
    assert unchanged(loaded)
    refusal = LogEntry.objects.get(additional_data__outcome="refused")
    assert refusal.additional_data["reason"] == "INSUFFICIENT_PERMISSIONS"


def test_a_viewer_may_preview_but_is_not_offered_to_confirm(loaded, console):
    html = console(Role.VIEWER).get(f"{PAGE}full-refresh/", **PANEL).content.decode()
    assert "Files to load" in html
    assert "<dialog" not in html and "Continue" not in html
    assert "Your role does not allow full refresh" in html


def test_above_the_threshold_the_preview_plan_travels_with_the_confirmation(
    settings, loaded, admin_console
):
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0.1
    loaded.cost_per_gb_usd = 100_000  # 2.2 KB -> $0.22
    loaded.save()
    html = admin_console.get(f"{PAGE}full-refresh/", **PANEL).content.decode()
    plan = RefreshPlan.objects.get()
    assert f'<input type="hidden" name="plan_id" value="{plan.public_id}">' in html

    without_plan = confirm(admin_console, "full-refresh")
    assert without_plan.status_code == 400
    assert "A recent preview is required" in without_plan.content.decode()
    assert load_engine().table_exists(loaded.table_identifier)

    with_plan = confirm(admin_console, "full-refresh", plan_id=plan.public_id)
    assert with_plan.status_code == 200
    assert RefreshOperation.objects.get().plan == plan


def test_below_the_threshold_no_plan_is_sent(loaded, admin_console):
    html = admin_console.get(f"{PAGE}full-refresh/", **PANEL).content.decode()
    assert 'name="plan_id"' not in html


def test_a_partial_failure_shows_recovery_and_resume_finishes(loaded, admin_console, settings):
    settings.REFRESH_DEFAULT_MODE = "drop_first"  # only dropping first can fail half-way
    with failing_sql('INSERT INTO "ingestions_run"'):
        response = confirm(admin_console, "full-refresh")
    assert response.status_code == 200
    html = response.content.decode()
    operation = RefreshOperation.objects.get()
    assert operation.status == OperationStatus.PARTIAL_FAILURE
    assert "Some operations failed" in html
    assert "Table dropped, file history cleared, no run triggered" in html
    assert f'hx-post="/operations/{operation.public_id}/resume/"' in html
    assert "Resume full refresh" in html
    # The ingestion page offers the same resume in its operations list.
    operations = admin_console.get(PAGE, **hx("operation-list")).content.decode()
    assert "Resume full refresh" in operations

    resumed = admin_console.post(f"/operations/{operation.public_id}/resume/", **PANEL)
    assert resumed.status_code == 200
    assert "Full refresh completed successfully" in resumed.content.decode()
    operation.refresh_from_db()
    assert operation.status == OperationStatus.ACCEPTED and operation.run is not None

    again = admin_console.post(f"/operations/{operation.public_id}/resume/", **PANEL)
    assert again.status_code == 409
    assert "Nothing to resume" in again.content.decode()


def test_resume_without_javascript_returns_to_the_operation_page(loaded, admin_console):
    with failing_sql('INSERT INTO "ingestions_run"'):
        confirm(admin_console, "full-refresh")
    operation = RefreshOperation.objects.get()
    page = admin_console.get(f"/operations/{operation.public_id}/").content.decode()
    assert "Resume full refresh" in page and "<html" in page
    response = admin_console.post(f"/operations/{operation.public_id}/resume/")
    assert response.status_code == 302
    assert response["Location"] == f"/operations/{operation.public_id}/"


def test_run_now_queues_a_run_and_refuses_a_second_one(loaded, console):
    operator = console(Role.OPERATOR)
    response = operator.post(f"{PAGE}run/", **PANEL)
    run = Run.objects.get(status=RunStatus.QUEUED)
    assert response.status_code == 200
    assert f"Run <code>{run.public_id}</code> queued" in response.content.decode()
    assert run.trigger == "manual" and run.requested_by == operator.user
    assert "ingestion-changed" in response["HX-Trigger-After-Settle"]

    second = operator.post(f"{PAGE}run/", **PANEL)
    assert second.status_code == 409
    assert f"/runs/{run.public_id}/" in second.content.decode()

    viewer = console(Role.VIEWER).post(f"{PAGE}run/", **PANEL)
    assert viewer.status_code == 403
    assert Run.objects.filter(status=RunStatus.QUEUED).count() == 1


def test_run_now_without_javascript_comes_back_with_a_message(loaded, console):
    response = console(Role.OPERATOR).post(f"{PAGE}run/", follow=True)
    run = Run.objects.get(status=RunStatus.QUEUED)
    assert response.redirect_chain == [(PAGE, 302)]
    assert f"Run {run.public_id} queued." in response.content.decode()


def test_forms_need_the_csrf_token(loaded, tenant):
    from django.test import Client

    from ..factories import MembershipFactory

    client = Client(enforce_csrf_checks=True)
    client.force_login(MembershipFactory(tenant=tenant, role=Role.ADMIN).user)
    assert client.post(f"{PAGE}drop-table/", {"typed_name": "raw.sales"}).status_code == 403
    assert client.post(f"{PAGE}run/").status_code == 403
    assert unchanged(loaded)


def test_an_unknown_action_is_not_found(loaded, admin_console):
    assert admin_console.get(f"{PAGE}explode/").status_code == 404
    assert admin_console.post(f"{PAGE}explode/", {"typed_name": "raw.sales"}).status_code == 404


def test_a_spark_preview_says_it_includes_the_start_of_spark(loaded, admin_console, settings):
    settings.REFRESH_SPARK_STARTUP_SECONDS = 40
    loaded.engine = "spark"
    loaded.save(update_fields=["engine"])
    Run.objects.filter(ingestion=loaded).delete()  # its one run was not a spark run

    html = admin_console.get(f"{PAGE}full-refresh/", **PANEL).content.decode()

    duration = html[html.index("Estimated duration") :].split("</div>")[0]
    assert "the engine's calibrated speed, no past run yet; includes ~40 s to start Spark" in (
        duration
    )
