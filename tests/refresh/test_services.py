"""Refresh services: each operation does exactly its steps, records each, and refuses unsafely."""

from datetime import timedelta

import pytest
from auditlog.models import LogEntry
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import (
    EngineError,
    EngineUnavailableError,
    PermissionDeniedError,
    RefreshInProgressError,
    RunInProgressError,
)
from ingestions.models import ProcessedFile, Role, Run, RunStatus
from ingestions.runs import run_request
from refresh.errors import (
    ConfirmationRequiredError,
    DryRunRequiredError,
    OperationNotResumableError,
    PlanStaleError,
    TableProtectedError,
)
from refresh.models import OperationStatus, RefreshOperation, RefreshPlan, StepStatus
from refresh.preview import refresh_preview
from refresh.services import refresh_execute, refresh_resume

from ..helpers import FaultingEngine, drain_queue, failing_sql, open_table, write_csv_files

pytestmark = pytest.mark.django_db(transaction=True)


def ids_in_table(table_name: str) -> list[int]:
    return open_table(table_name).scan(selected_fields=("id",)).to_arrow()["id"].to_pylist()


def steps_of(operation) -> list[tuple[str, str]]:
    return [(step.name, step.status) for step in operation.steps.all()]


def test_full_refresh_drop_first_drops_clears_and_reloads_every_file_exactly_once(
    loaded, admin_user
):
    before = load_engine().describe_table(loaded.table_identifier)

    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True, mode="drop_first"
    )

    assert operation.status == OperationStatus.ACCEPTED
    assert steps_of(operation) == [
        ("table_dropped", "success"),
        ("processed_files_cleared", "success"),
        ("run_triggered", "success"),
    ]
    dropped, cleared, triggered = operation.steps.all()
    assert dropped.details["row_count"] == before.row_count == 100
    assert dropped.details["table_existed"] is True
    assert cleared.details == {
        "files_cleared": 4,
        "oldest_file": "part-0000.csv",
        "newest_file": "part-0003.csv",
    }
    assert triggered.details["run_id"] == operation.run.public_id
    assert operation.run.trigger == "full_refresh"
    assert not load_engine().table_exists(loaded.table_identifier)

    drain_queue()
    operation.run.refresh_from_db()
    assert operation.run.status == RunStatus.SUCCESS
    ids = ids_in_table(loaded.table_identifier)
    assert len(ids) == len(set(ids)) == 100
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4


def test_fresh_start_keeps_history_and_loads_only_new_files(loaded, admin_user, source_dir):
    write_csv_files(source_dir, files=2, rows=10, start=10)

    plan = refresh_preview(ingestion=loaded, kind="fresh_start", actor=admin_user)
    assert (plan.impact.files_to_process, plan.impact.files_skipped) == (2, 4)

    operation = refresh_execute(
        ingestion=loaded, kind="fresh_start", actor=admin_user, confirm=True
    )
    assert steps_of(operation) == [("table_dropped", "success"), ("run_triggered", "success")]
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    drain_queue()

    assert sorted(ids_in_table(loaded.table_identifier)) == sorted(
        [10 * 100000 + row for row in range(10)] + [11 * 100000 + row for row in range(10)]
    )
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 6


def test_drop_table_is_idempotent_and_touches_nothing_else(loaded, admin_user):
    first = refresh_execute(ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True)
    second = refresh_execute(ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True)

    assert first.status == second.status == OperationStatus.SUCCESS
    assert first.steps.get().details["table_existed"] is True
    assert second.steps.get().details == {"table_name": "raw.sales", "table_existed": False}
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    assert Run.objects.filter(ingestion=loaded).count() == 1


def test_auto_run_false_skips_the_run_step(loaded, admin_user):
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True, auto_run=False
    )
    assert operation.status == OperationStatus.SUCCESS
    assert steps_of(operation)[-1] == ("run_triggered", "skipped")
    assert operation.run is None
    assert Run.objects.filter(ingestion=loaded).count() == 1


@pytest.mark.parametrize(
    "kind", ["full_refresh", "fresh_start", "drop_table", "clear_processed_files"]
)
def test_a_dry_run_changes_nothing(loaded, admin_user, kind, source_dir):
    write_csv_files(source_dir, files=1, rows=5, start=20)
    snapshot = load_engine().describe_table(loaded.table_identifier).snapshot_id

    plan = refresh_preview(ingestion=loaded, kind=kind, actor=admin_user)

    assert plan.plan_id.startswith("plan-")
    assert load_engine().describe_table(loaded.table_identifier).snapshot_id == snapshot
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    assert Run.objects.filter(ingestion=loaded).count() == 1
    assert not RefreshOperation.objects.exists()


def test_impact_is_measured_from_the_listing_history_and_past_runs(loaded, admin_user, source_dir):
    size = sum(path.stat().st_size for path in source_dir.glob("*.csv"))
    loaded.cost_per_gb_usd = 1000
    loaded.save()

    plan = refresh_preview(ingestion=loaded, kind="full_refresh", actor=admin_user)

    assert plan.impact.files_to_process == 4
    assert plan.impact.bytes_to_process == size
    assert plan.impact.estimated_cost_usd == round(size / 1e9 * 1000, 2)
    assert plan.impact.throughput_source == "measured"
    assert plan.impact.estimated_duration_minutes == 1
    assert plan.would_perform[0]["details"]["current_row_count"] == 100


@pytest.mark.parametrize("confirm", [False, None, "true", 1, "yes"])
def test_anything_but_true_is_not_a_confirmation(loaded, admin_user, confirm):
    with pytest.raises(ConfirmationRequiredError):
        refresh_execute(ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=confirm)
    assert load_engine().table_exists(loaded.table_identifier)
    assert not RefreshOperation.objects.exists()


def test_protected_ingestion_is_refused_and_the_refusal_audited(loaded, admin_user):
    loaded.protected = True
    loaded.save()
    with pytest.raises(TableProtectedError):
        refresh_execute(ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True)
    assert load_engine().table_exists(loaded.table_identifier)
    entry = LogEntry.objects.get(additional_data__outcome="refused")
    assert entry.actor == admin_user
    assert entry.additional_data["reason"] == "TABLE_PROTECTED"


@pytest.mark.parametrize(
    ("role", "kind", "allowed"),
    [
        (Role.VIEWER, "fresh_start", False),
        (Role.OPERATOR, "fresh_start", True),
        (Role.OPERATOR, "full_refresh", False),
        (Role.OPERATOR, "drop_table", False),
        (Role.OPERATOR, "clear_processed_files", False),
        (Role.ADMIN, "clear_processed_files", True),
    ],
)
def test_permissions_per_operation(loaded, member, role, kind, allowed):
    user = member(role).user
    if allowed:
        refresh_execute(ingestion=loaded, kind=kind, actor=user, confirm=True)
        return
    with pytest.raises(PermissionDeniedError):
        refresh_execute(ingestion=loaded, kind=kind, actor=user, confirm=True)
    refusal = LogEntry.objects.get(additional_data__outcome="refused")
    assert (refusal.actor, refusal.additional_data["reason"]) == (user, "INSUFFICIENT_PERMISSIONS")
    assert load_engine().table_exists(loaded.table_identifier)


def test_viewer_may_preview(loaded, member):
    plan = refresh_preview(ingestion=loaded, kind="full_refresh", actor=member(Role.VIEWER).user)
    assert plan.impact.files_to_process == 4


def test_refused_while_a_run_is_active(loaded, admin_user):
    run = run_request(ingestion=loaded)
    with pytest.raises(RunInProgressError) as refused:
        refresh_execute(ingestion=loaded, kind="fresh_start", actor=admin_user, confirm=True)
    assert refused.value.current_run_id == run.public_id
    assert load_engine().table_exists(loaded.table_identifier)


def test_refused_while_another_refresh_is_in_flight_and_runs_wait_too(loaded, admin_user):
    in_flight = RefreshOperation.objects.create(
        tenant=loaded.tenant,
        ingestion=loaded,
        ingestion_public_id=loaded.public_id,
        table_name=loaded.destination_table,
        kind="drop_table",
    )
    with pytest.raises(RefreshInProgressError) as refused:
        refresh_execute(ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True)
    assert refused.value.current_operation_id == in_flight.public_id
    with pytest.raises(RefreshInProgressError):
        run_request(ingestion=loaded)


def test_an_operation_in_progress_blocks_until_it_goes_stale(settings, loaded, admin_user):
    settings.REFRESH_STALE_SECONDS = 60
    RefreshOperation.objects.create(
        tenant=loaded.tenant,
        ingestion=loaded,
        ingestion_public_id=loaded.public_id,
        table_name=loaded.destination_table,
        kind="drop_table",
    )
    with pytest.raises(RefreshInProgressError):
        refresh_execute(ingestion=loaded, kind="fresh_start", actor=admin_user, confirm=True)
    RefreshOperation.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    operation = refresh_execute(
        ingestion=loaded, kind="fresh_start", actor=admin_user, confirm=True
    )
    assert operation.status == OperationStatus.ACCEPTED
    assert RefreshOperation.objects.filter(error_code="INTERRUPTED").count() == 1


def test_an_interrupted_operation_is_expired_and_resumable(settings, loaded, admin_user):
    settings.REFRESH_STALE_SECONDS = 60
    interrupted = RefreshOperation.objects.create(
        tenant=loaded.tenant,
        ingestion=loaded,
        ingestion_public_id=loaded.public_id,
        table_name=loaded.destination_table,
        kind="drop_table",
        request={"confirm": True, "auto_run": True},
    )
    interrupted.steps.create(position=1, name="table_dropped", started_at=timezone.now())
    RefreshOperation.objects.filter(pk=interrupted.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    # Resuming finds the operation's process dead, records it as interrupted, and finishes it.
    operation = refresh_resume(operation=interrupted, actor=admin_user)
    assert operation.status == OperationStatus.SUCCESS
    assert operation.attempts == 2
    assert not load_engine().table_exists(loaded.table_identifier)


# --- every step made to fail in turn -----------------------------------------------------


def test_drop_failure_stops_everything_with_the_prd_error_code(loaded, admin_user):
    locked = EngineError("metadata locked")
    engine = FaultingEngine({"drop_table": locked, "retire": locked})
    operation = refresh_execute(
        ingestion=loaded,
        kind="full_refresh",
        actor=admin_user,
        confirm=True,
        engine=engine,
        mode="drop_first",
    )
    assert operation.status == OperationStatus.FAILED
    assert operation.error_code == "SPARK_ERROR"
    assert steps_of(operation) == [
        ("table_dropped", "failed"),
        ("processed_files_cleared", "pending"),
        ("run_triggered", "pending"),
    ]
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4

    resumed = refresh_resume(operation=operation, actor=admin_user)
    assert resumed.status == OperationStatus.ACCEPTED
    assert not ProcessedFile.objects.filter(ingestion=loaded).exists()


def test_engine_unreachable_on_drop_is_cluster_unavailable(loaded, admin_user):
    down = EngineUnavailableError("catalog down")
    engine = FaultingEngine({"drop_table": down, "retire": down})
    operation = refresh_execute(
        ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True, engine=engine
    )
    assert (operation.status, operation.error_code) == ("failed", "CLUSTER_UNAVAILABLE")
    assert load_engine().table_exists(loaded.table_identifier)


def test_history_clear_failure_is_a_partial_failure_that_resume_finishes(loaded, admin_user):
    with failing_sql('SET "history_generation"'):  # clearing archives the history
        operation = refresh_execute(
            ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True, mode="drop_first"
        )
    assert operation.status == OperationStatus.PARTIAL_FAILURE
    assert steps_of(operation) == [
        ("table_dropped", "success"),
        ("processed_files_cleared", "failed"),
        ("run_triggered", "pending"),
    ]
    assert ProcessedFile.objects.filter(ingestion=loaded).count() == 4
    assert not Run.objects.filter(status=RunStatus.QUEUED).exists()

    resumed = refresh_resume(operation=operation, actor=admin_user)
    assert resumed.status == OperationStatus.ACCEPTED
    assert [status for _, status in steps_of(resumed)] == ["success"] * 3
    drain_queue()
    ids = ids_in_table(loaded.table_identifier)
    assert len(ids) == len(set(ids)) == 100


def test_run_trigger_failure_leaves_a_record_and_resume_triggers_it(loaded, admin_user):
    down = FaultingEngine({"ping": EngineUnavailableError("cluster not available")})
    operation = refresh_execute(
        ingestion=loaded,
        kind="full_refresh",
        actor=admin_user,
        confirm=True,
        engine=down,
        mode="drop_first",
    )
    assert operation.status == OperationStatus.PARTIAL_FAILURE
    failed = operation.steps.get(status=StepStatus.FAILED)
    assert (failed.name, failed.error_code) == ("run_triggered", "CLUSTER_UNAVAILABLE")
    assert not load_engine().table_exists(loaded.table_identifier)
    assert not ProcessedFile.objects.filter(ingestion=loaded).exists()

    resumed = refresh_resume(operation=operation, actor=admin_user)
    assert resumed.status == OperationStatus.ACCEPTED
    assert resumed.run is not None
    with pytest.raises(OperationNotResumableError):
        refresh_resume(operation=resumed, actor=admin_user)


def test_a_resume_is_audited_under_the_user_who_resumed(loaded, admin_user, member):
    down = FaultingEngine({"ping": EngineUnavailableError("down")})
    operation = refresh_execute(
        ingestion=loaded,
        kind="full_refresh",
        actor=admin_user,
        confirm=True,
        engine=down,
        mode="drop_first",
    )
    other_admin = member(Role.ADMIN).user
    refresh_resume(operation=operation, actor=other_admin)
    entries = LogEntry.objects.filter(additional_data__operation_id=operation.public_id)
    assert [(e.actor, e.additional_data["outcome"]) for e in entries.order_by("id")] == [
        (admin_user, "partial_failure"),
        (other_admin, "accepted"),
    ]


def test_an_interrupted_operation_stops_blocking_runs(settings, loaded, admin_user):
    settings.REFRESH_STALE_SECONDS = 60
    RefreshOperation.objects.create(
        tenant=loaded.tenant,
        ingestion=loaded,
        ingestion_public_id=loaded.public_id,
        table_name=loaded.destination_table,
        kind="drop_table",
    )
    with pytest.raises(RefreshInProgressError):
        run_request(ingestion=loaded)
    RefreshOperation.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    assert run_request(ingestion=loaded).status == RunStatus.QUEUED


def test_a_newer_operation_supersedes_an_older_partial_failure(loaded, admin_user):
    down = FaultingEngine({"ping": EngineUnavailableError("down")})
    old = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True, engine=down
    )
    refresh_execute(ingestion=loaded, kind="drop_table", actor=admin_user, confirm=True)
    with pytest.raises(OperationNotResumableError):
        refresh_resume(operation=old, actor=admin_user)


# --- plan, then apply --------------------------------------------------------------------


@pytest.fixture
def expensive(settings, loaded):
    """Make the loaded ingestion's full refresh cost more than the plan threshold."""
    settings.REFRESH_PLAN_REQUIRED_ABOVE_USD = 0.01
    loaded.cost_per_gb_usd = 100_000
    loaded.save()
    return loaded


def test_above_the_threshold_a_plan_is_required(expensive, admin_user):
    with pytest.raises(DryRunRequiredError):
        refresh_execute(ingestion=expensive, kind="full_refresh", actor=admin_user, confirm=True)
    assert load_engine().table_exists(expensive.table_identifier)

    plan = refresh_preview(ingestion=expensive, kind="full_refresh", actor=admin_user)
    assert plan.plan_required
    operation = refresh_execute(
        ingestion=expensive,
        kind="full_refresh",
        actor=admin_user,
        confirm=True,
        plan_id=plan.plan_id,
    )
    assert operation.status == OperationStatus.ACCEPTED
    assert operation.plan.public_id == plan.plan_id


def test_a_plan_is_single_use_and_for_its_own_operation(expensive, admin_user):
    other_kind = refresh_preview(ingestion=expensive, kind="fresh_start", actor=admin_user)
    with pytest.raises(DryRunRequiredError):
        refresh_execute(
            ingestion=expensive, kind="full_refresh", actor=admin_user, confirm=True,
            plan_id=other_kind.plan_id, auto_run=False,
        )  # fmt: skip
    plan = refresh_preview(ingestion=expensive, kind="full_refresh", actor=admin_user)
    refresh_execute(
        ingestion=expensive, kind="full_refresh", actor=admin_user, confirm=True,
        plan_id=plan.plan_id, auto_run=False,
    )  # fmt: skip
    with pytest.raises(DryRunRequiredError):
        refresh_execute(
            ingestion=expensive, kind="full_refresh", actor=admin_user, confirm=True,
            plan_id=plan.plan_id, auto_run=False,
        )  # fmt: skip


def test_an_expired_plan_is_refused(expensive, admin_user):
    plan = refresh_preview(ingestion=expensive, kind="full_refresh", actor=admin_user)
    RefreshPlan.objects.filter(public_id=plan.plan_id).update(
        created_at=timezone.now() - timedelta(minutes=16)
    )
    with pytest.raises(DryRunRequiredError):
        refresh_execute(
            ingestion=expensive,
            kind="full_refresh",
            actor=admin_user,
            confirm=True,
            plan_id=plan.plan_id,
        )


def test_a_plan_whose_impact_grew_is_stale(expensive, admin_user, source_dir):
    plan = refresh_preview(ingestion=expensive, kind="full_refresh", actor=admin_user)
    write_csv_files(source_dir, files=1, rows=25, start=50)  # 4 -> 5 files: +25 %
    with pytest.raises(PlanStaleError):
        refresh_execute(
            ingestion=expensive,
            kind="full_refresh",
            actor=admin_user,
            confirm=True,
            plan_id=plan.plan_id,
        )
    assert load_engine().table_exists(expensive.table_identifier)


# --- audit -------------------------------------------------------------------------------


def test_every_executed_operation_is_audited_with_actor_tenant_impact_and_outcome(
    loaded, admin_user
):
    operation = refresh_execute(
        ingestion=loaded, kind="full_refresh", actor=admin_user, confirm=True
    )
    entry = LogEntry.objects.get(additional_data__operation_id=operation.public_id)
    assert entry.actor == admin_user
    assert entry.additional_data["tenant"] == "acme"
    assert entry.additional_data["operation"] == "full_refresh"
    assert entry.additional_data["outcome"] == "accepted"
    assert entry.additional_data["impact"]["files_to_process"] == 4
    assert entry.additional_data["run_id"] == operation.run.public_id
