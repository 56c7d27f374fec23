"""The PRD's response shapes, built from plans and operation records (API and console)."""

from datetime import timedelta

from django.utils import timezone

from ingestions.formats import counted, size, thousands
from ingestions.models import ACTIVE_RUN_STATUSES, PublishState

from .models import (
    OperationKind,
    OperationStatus,
    RefreshMode,
    RefreshOperation,
    Retention,
    StepName,
    StepStatus,
)
from .planning import Plan, public_estimate, public_impact
from .specs import STEPS, spec_of


def endpoint(kind: str, ingestion_id: str) -> str:
    return spec_of(kind).endpoint(ingestion_id)


def preview_payload(plan: Plan) -> dict:
    ingestion_id = plan.ingestion.public_id
    body = {
        "status": "dry_run",
        "message": "Preview of operations (not executed)",
        "ingestion_id": ingestion_id,
        "plan_id": plan.plan_id,
        "plan_required": plan.plan_required,
        "timestamp": timezone.now(),
        "would_perform": plan.would_perform,
        "impact": plan.impact.as_response(),
        "estimate": public_estimate(plan.as_record()),
        "warnings": plan.warnings,
        "notes": plan.notes,
        "retention": _planned_retention(plan),
        # Where the caller stands against this kind's rate: what is left and when it refills.
        "quota": None if plan.quota is None else plan.quota.as_response(),
        **({"scope": plan.scope} if plan.scope is not None else {}),
        # What the table holds once it is done (`refresh.end_state`), beside the PRD's fields.
        "end_state": plan.end_state,
        "next_steps": {
            "to_proceed": f"{endpoint(plan.kind, ingestion_id)} with confirm=true"
            + (f' and plan_id="{plan.plan_id}"' if plan.plan_required else ""),
            "to_cancel": "No action needed",
        },
    }
    return body


def _planned_retention(plan: Plan) -> dict:
    """How long the operation would stay undoable, and the storage held meanwhile: the
    table it replaces or drops (a history clear holds no table files)."""
    kept = plan.retain_days > 0 and spec_of(plan.kind).changes_table and plan.table["exists"]
    return {
        "retain_days": plan.retain_days,
        "undoable": plan.retain_days > 0,
        "kept_until": timezone.now() + timedelta(days=plan.retain_days)
        if plan.retain_days
        else None,
        "storage_kept_bytes": plan.table["size_bytes"] if kept else 0,
    }


def step_payload(step) -> dict:
    return {
        "operation": step.name,
        "status": step.status,
        "timestamp": step.finished_at or step.started_at,
        "details": step.details,
        "error": step.error or None,
        "error_code": step.error_code or None,
    }


def operation_payload(operation: RefreshOperation) -> dict:
    """The response of an executed (or resumed, or fetched) operation."""
    steps = list(operation.steps.all())
    body = {
        "status": operation.status,
        "message": _message(operation, steps),
        "operation_id": operation.public_id,
        "operation_type": operation.kind,
        "label": operation.label,
        "ingestion_id": operation.ingestion_public_id,
        "run_id": operation.run.public_id if operation.run_id else None,
        "timestamp": operation.finished_at or operation.updated_at,
        "operations": [step_payload(step) for step in steps if step.status != StepStatus.PENDING],
        "impact": public_impact(operation.impact),
        "estimate": public_estimate(operation.impact),
        "warnings": operation.warnings,
        "notes": operation.notes,
    }
    body["phase"] = operation_phase(operation)
    if operation.run_id:
        body["run"] = _run_summary(operation.run)
    body["retention"] = retention_payload(operation)
    if operation.undo:
        body["undo"] = operation.undo
    if operation.kind == OperationKind.DROP_TABLE and steps and steps[0].details:
        body["details"] = steps[0].details  # the PRD's drop-table shape
    staged = is_staged(operation)
    if operation.request.get("scope"):
        body["scope"] = operation.request["scope"]
    if staged:
        body["mode"] = operation.request.get("mode", "atomic")
        body["publish"] = _publish_payload(operation)
    if staged and operation.status in (OperationStatus.FAILED, OperationStatus.CANCELLED):
        body["detail"] = body["message"]
        body["error_code"] = operation.error_code or "RUN_FAILED"
        body["error_message"] = operation.error
        body["recovery"] = {
            "message": "Nothing was published: the table and its history are as they were",
            "action": "Fix the cause, then run the operation again: "
            + endpoint(operation.kind, operation.ingestion_public_id),
            "state": "Table and history unchanged",
            "remaining_steps": [],
        }
    elif operation.status in (OperationStatus.PARTIAL_FAILURE, OperationStatus.FAILED):
        failed = next((step for step in steps if step.status == StepStatus.FAILED), None)
        body["detail"] = body["message"]
        body["error_code"] = (
            "PARTIAL_FAILURE"
            if operation.status == OperationStatus.PARTIAL_FAILURE
            else (operation.error_code or "INTERNAL_ERROR")
        )
        body["error_message"] = operation.error
        body["recovery"] = _recovery(operation, steps, failed)
    return body


def operation_phase(operation: RefreshOperation) -> str:
    """Where the work stands, beyond the PRD's synchronous "accepted": the run's state while
    it loads (queued, running, publishing), then the operation's outcome."""
    run = operation.run if operation.run_id else None
    if operation.status == OperationStatus.IN_PROGRESS:
        return "undoing" if operation.retention == Retention.RESTORING else "in_progress"
    if operation.status == OperationStatus.ACCEPTED and run is not None:
        if run.publish_state == PublishState.PUBLISHING:
            return "publishing"
        if run.status in ACTIVE_RUN_STATUSES:
            return run.status.lower()  # "queued", "running"
        return f"run_{run.status.lower()}"  # drop_first: the run ended ("run_failed"...)
    return operation.status


def _run_summary(run) -> dict:
    return {
        "id": run.public_id,
        "status": run.status,
        "files_loaded": run.files_loaded,
        "files_failed": run.files_failed,
        "rows_written": run.rows_written,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "url": f"/api/v1/runs/{run.public_id}",
    }


def retention_payload(operation: RefreshOperation) -> dict:
    """What the operation keeps for undo, until when, and the call that undoes it."""
    payload = {
        "state": operation.retention,
        "retain_days": operation.retain_days,
        "retained_until": operation.retained_until,
        "retained_bytes": operation.retained_bytes,
    }
    if operation.retention == Retention.KEPT:
        base = f"/api/v1/refresh-operations/{operation.public_id}/undo"
        payload["actions"] = {
            "preview": f'POST {base} {{"dry_run": true}}',
            "undo": f'POST {base} {{"confirm": true}}',
        }
    return payload


def is_staged(operation: RefreshOperation) -> bool:
    """Whether the operation has a run building a new version to publish (zero-downtime)."""
    return operation.zero_downtime and operation.run_id is not None


def _publish_payload(operation: RefreshOperation) -> dict:
    """Where a zero-downtime operation's new version is, and what can be done with it."""
    run = operation.run
    payload = {"state": run.publish_state or "staging", "published_at": run.published_at}
    if operation.status == OperationStatus.AWAITING_DECISION:
        base = f"/api/v1/refresh-operations/{operation.public_id}"
        payload["actions"] = {
            "publish": f'POST {base}/publish {{"confirm": true}}',
            "discard": f'POST {base}/discard {{"confirm": true}}',
        }
        payload["failed_files"] = run.failed_files
    return payload


STAGED_MESSAGES = {
    OperationStatus.PUBLISHED: "Published: the new version of the table is live",
    OperationStatus.AWAITING_DECISION: (
        "Some files failed to load: publish what loaded, or discard it (the table is unchanged "
        "until then)"
    ),
    OperationStatus.DISCARDED: "Discarded: the table and its history are as they were",
    OperationStatus.CANCELLED: "Cancelled: nothing was published; the table is unchanged",
    OperationStatus.UNDONE: "Undone: the table and its file history are back as they were before",
}


def _message(operation: RefreshOperation, steps) -> str:
    if operation.status in STAGED_MESSAGES:
        return STAGED_MESSAGES[operation.status]
    if operation.status == OperationStatus.FAILED and operation.error_code == "RUN_FAILED":
        return "The run failed; nothing was published: the table is unchanged"
    if operation.status == OperationStatus.ACCEPTED and is_staged(operation):
        return (
            f"{operation.label} accepted: run {operation.run.public_id} "
            "builds the new version beside the live table, published when it ends"
        )
    if operation.status in (OperationStatus.ACCEPTED, OperationStatus.SUCCESS):
        dropped_nothing = steps and steps[0].details.get("table_existed") is False
        if operation.kind == OperationKind.DROP_TABLE and dropped_nothing:
            return "Table did not exist"
        return spec_of(operation.kind).success_message
    if operation.status == OperationStatus.IN_PROGRESS:
        return "Operation in progress"
    if operation.status == OperationStatus.FAILED:
        if operation.kind == OperationKind.DROP_TABLE:
            return "Failed to drop table"
        return "Operation failed; nothing was changed"
    return "Some operations failed"


def _recovery(operation: RefreshOperation, steps, failed) -> dict:
    done = [step for step in steps if step.status == StepStatus.SUCCESS]
    not_done = [step for step in steps if step.status in (StepStatus.FAILED, StepStatus.PENDING)]
    state_parts = [STEPS[step.name].done for step in done] + [
        STEPS[step.name].not_done for step in not_done
    ]
    state = ", ".join(state_parts)
    state = state[:1].upper() + state[1:]
    resume = f"POST /api/v1/refresh-operations/{operation.public_id}/resume"
    failed_what = STEPS[failed.name].failing if failed else "a step"
    if done:
        message = (
            f"{', '.join(STEPS[s.name].done for s in done)}, but {failed_what} failed"
            f" ({operation.error_code or 'error'}: {operation.error})"
        )
    else:
        message = f"Nothing was changed: {failed_what} failed ({operation.error})"
    return {
        "message": message[:1].upper() + message[1:],
        "action": f"Finish the remaining steps: {resume}",
        "state": state,
        "remaining_steps": [step.name for step in not_done],
    }


def batch_payload(batch, operations: dict, plans: list | None = None) -> dict:
    """A batch refresh: its status, totals and each member's operation (or plan)."""
    from .batches import IMPACT_SUMS

    members = []
    for position, member in enumerate(batch.members):
        item = {"ingestion_id": member["ingestion_id"]}
        operation = operations.get(member.get("operation_id"))
        if plans is not None:
            plan = plans[position]
            item.update(
                plan_id=plan.plan_id,
                plan_required=plan.plan_required,
                impact=plan.impact.as_response(),
                warnings=plan.warnings,
                end_state=plan.end_state,
            )
        elif operation is not None:
            item.update(
                operation_id=operation.public_id,
                status=operation.status,
                run_id=operation.run.public_id if operation.run_id else None,
                run_status=operation.run.status if operation.run_id else None,
                impact=public_impact(operation.impact),
            )
        members.append(item)
    totals = {key: batch.impact.get(key) for key in IMPACT_SUMS if key in batch.impact}
    body = {
        "batch_id": batch.public_id,
        "operation": batch.kind,
        "status": "dry_run" if plans is not None else batch.status,
        "members": members,
        "totals": {"tables": len(members), **totals},
        "created_at": batch.created_at,
        "finished_at": batch.finished_at,
    }
    if plans is not None:
        body["plan_id"] = batch.public_id
        # What the caller's rate limit leaves for this batch (`refresh.batches._quota`).
        if "quota" in batch.impact:
            body["quota"] = batch.impact["quota"]
        body["warnings"] = list(batch.impact.get("warnings", []))
        body["next_steps"] = {
            "to_proceed": "POST /api/v1/refresh-batches with the same ingestion_ids and "
            f'operation, confirm=true and plan_id="{batch.public_id}"',
            "to_cancel": "No action needed",
        }
    if batch.error:
        body.update(
            detail=batch.error,
            error_code=batch.error_code,
            failed_ingestion_id=batch.failed_ingestion_id,
            recovery="Nothing was published: every table and history is as it was.",
        )
    return body


# --- what a preview says it will do, in words (the console's preview reads these) ------


def step_description(item: dict, plan) -> str:
    """One line of a preview's "would perform" entry, with its numbers.

    Sizes are the plan's bytes in readable units: the same quantities as the API's
    rounded GB figures, without rounding a small table down to "0.0 GB".
    """
    step, details = item["operation"], item["details"]
    if getattr(plan, "scope", None) is not None and step != StepName.RUN_TRIGGERED:
        return _scoped_step_description(step, details, plan)
    if step == StepName.TABLE_DROPPED and getattr(plan, "mode", "") == RefreshMode.ATOMIC:
        if not details["table_exists"]:
            return f"Create table {details['table_name']} when the new version is published"
        return (
            f"Replace table {details['table_name']} ({thousands(details['current_row_count'])} "
            f"rows, {size(plan.table['size_bytes'])}) when the new version is published; "
            "readers keep the current rows until then"
        )
    if step == StepName.TABLE_DROPPED:
        if not details["table_exists"]:
            return f"Drop table {details['table_name']}: it does not exist, nothing to drop"
        return (
            f"Drop table {details['table_name']} ({thousands(details['current_row_count'])} "
            f"rows, {size(plan.table['size_bytes'])})"
        )
    if step == StepName.PROCESSED_FILES_CLEARED:
        count = details["files_to_clear"]
        if not count:
            return "Clear the processed-file history: it is empty"
        span = ""
        if details.get("oldest_file"):
            span = f": {details['oldest_file']} … {details['newest_file']}"
        return f"Clear the history of {counted(count, 'processed file')}{span}"
    files = counted(details["files_to_process"], "file")
    new_files = counted(details["files_to_process"], "new file")
    data = size(plan.impact.bytes_to_process)
    if details.get("new_files_only"):
        return f"Trigger a run that loads the {new_files} ({data})"
    return f"Trigger a run that loads {files} ({data})"


def _scoped_step_description(step: str, details: dict, plan) -> str:
    """A selective refresh's step: it replaces the rows and history entries of its files."""
    if step == StepName.TABLE_DROPPED:
        return (
            f"Replace the {counted(details['rows_replaced'], 'row')} of {details['scope']} in "
            f"{details['table_name']} when the new version is published; the "
            f"{thousands(details['rows_kept'])} other rows stay as they are"
        )
    return (
        f"Replace the history entries of those files ({thousands(details['files_to_clear'])} "
        "now) at publish; every other entry stays"
    )


def blast_radius(plan) -> dict:
    """What a planned operation deletes and what it keeps, each as plain sentences."""
    if getattr(plan, "scope", None) is not None:
        return _scoped_blast_radius(plan)
    lost, kept = [], []
    table, history = plan.table, plan.history
    table_name = table["table_name"]
    if StepName.TABLE_DROPPED in plan.steps:
        if table["exists"] and getattr(plan, "mode", "") == RefreshMode.ATOMIC:
            lost.append(
                f"Table {table_name}, {counted(table['row_count'], 'row')}, "
                f"{size(table['size_bytes'])} will be replaced when the run ends (readers keep "
                "these rows until then; a failed run replaces nothing)"
            )
        elif table["exists"]:
            lost.append(
                f"Table {table_name}, {counted(table['row_count'], 'row')}, "
                f"{size(table['size_bytes'])} will be deleted"
            )
        else:
            kept.append(f"Table {table_name} does not exist: there is nothing to delete")
    elif table["exists"]:
        kept.append(
            f"Table {table_name} ({counted(table['row_count'], 'row')}, "
            f"{size(table['size_bytes'])}) is not touched"
        )
    count = history["count"]
    if StepName.PROCESSED_FILES_CLEARED in plan.steps:
        if count:
            again = "the next run loads every source file again"
            if StepName.TABLE_DROPPED not in plan.steps and table["exists"] and table["row_count"]:
                again += (
                    f" and replaces each one's rows among the {thousands(table['row_count'])} "
                    "rows kept: no row is there twice"
                )
            lost.append(
                f"History of {thousands(count)} processed files ({size(history['total_bytes'])}) "
                f"will be cleared: {again}"
            )
        else:
            kept.append("The processed-file history is already empty")
    else:
        kept.append(
            f"History of {counted(count, 'file')} is kept: those files are not loaded again"
        )
    kept.append("Source files are never touched; past runs and operations stay on record")
    days = getattr(plan, "retain_days", 0)
    if days:
        kept.append(
            f"It can be undone for {days} day{'s' if days != 1 else ''}: "
            f"{spec_of(plan.kind).kept_for_undo}"
        )
    return {"lost": lost, "kept": kept}


def _scoped_blast_radius(plan) -> dict:
    """A selective refresh loses only the rows of the files in its scope."""
    scope, table = plan.scope, plan.table
    rows_now = table["row_count"] or 0
    lost = []
    if scope["rows_replaced"]:
        files = counted(scope["history_files_in_scope"], "file")
        hold = "that file holds" if scope["history_files_in_scope"] == 1 else "those files hold"
        lost.append(
            f"{counted(scope['rows_replaced'], 'row')} of {files} in scope "
            f"({scope['description']}) will be replaced when the run ends by what {hold} "
            "now (readers keep the current rows until then; a failed run replaces nothing)"
        )
    if gone := scope["files_gone_from_source"]:
        lost.append(
            f"The rows of {counted(gone, 'file')} in scope that {'is' if gone == 1 else 'are'} "
            "no longer in the source are removed, with their history entries"
        )
    kept = [
        f"{counted(max(0, rows_now - scope['rows_replaced']), 'row')} of the files out of the "
        f"scope in {table['table_name']}, and their history entries, are not touched",
        "Source files are never touched; past runs and operations stay on record",
    ]
    days = getattr(plan, "retain_days", 0)
    if days:
        kept.append(
            f"It can be undone for {days} day{'s' if days != 1 else ''}: "
            f"{spec_of(plan.kind).kept_for_undo}"
        )
    return {"lost": lost, "kept": kept}
