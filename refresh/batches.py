"""Batch refresh: several ingestions of a tenant refreshed in one request, published together.

A batch is previewed like one operation (each member's plan, and the totals), confirmed
once, and executed as one zero-downtime operation per member, each recorded, audited,
permission-checked, protection-checked and rate-limited as if requested alone, and linked
to the batch. Every member's run builds its new version and then waits (its run's
`publish_hold`); when every member has loaded, the batch publishes them, one commit per
table, one after the other; if one fails, is cancelled or loads only part of its files,
none is published and the batch says which member failed. Publishing is resumable: a
batch left `publishing` by a dead process is finished by the worker's reaper.

The batch is all or nothing at the door too: its execution takes the rate limit slots of
every member at once before any starts (`refresh.limits.rate_limit_slots`), or refuses
with 429 having taken none; its dry-run says what the caller's rate leaves (`quota`).

Reading a batch (`batch_get`, `batch_operations`) writes nothing: the worker moves it on
when a member's run ends (`run_ended_sync`) and on every reaper pass (`batches_sync_due`),
through `batch_sync`, which is single-flight (see there).
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ingestions.engines import load_engine
from ingestions.errors import (
    AutoloaderError,
    IngestionNotFoundError,
    RateLimitedError,
    RunNotCancellableError,
)
from ingestions.models import ACTIVE_RUN_STATUSES, Ingestion, PublishState, Run, RunStatus, Tenant
from ingestions.ratelimits import preview_rate, rate_give_back
from ingestions.runs import run_cancel
from ingestions.staging import BATCH_WAIT_NOTE, staged_discard, staged_publish

from .errors import BatchNotFoundError, ConfirmationRequiredError, DryRunRequiredError
from .limits import WARNING, batch_quota, rate_limit_slots
from .models import (
    BatchStatus,
    OperationKind,
    OperationStatus,
    RefreshBatch,
    RefreshMode,
    RefreshOperation,
)
from .planning import Plan
from .preview import refresh_check, refresh_preview
from .services import refresh_execute
from .sync import operation_as_of_run, operation_of_run_sync, operation_sync

logger = logging.getLogger(__name__)

BATCH_KINDS = (OperationKind.FULL_REFRESH, OperationKind.FRESH_START)
MAX_BATCH_MEMBERS = 50
IMPACT_SUMS = (
    "files_to_process",
    "files_skipped",
    "bytes_to_process",
    "estimated_data_size_gb",
    "estimated_cost_usd",
    "estimated_duration_seconds",
)
# A member whose operation ends so fails the batch.
FAILED_OPERATION = (
    OperationStatus.FAILED,
    OperationStatus.PARTIAL_FAILURE,
    OperationStatus.CANCELLED,
    OperationStatus.DISCARDED,
    OperationStatus.AWAITING_DECISION,
)


def batch_preview(
    *, tenant: Tenant, ingestion_ids: list[str], kind: str, actor
) -> tuple[RefreshBatch, list[Plan]]:
    """Dry-run every member; record the batch's plan (its members' plan ids) to execute.

    Raises:
        ValidationError: the kind or the id list is not allowed.
        IngestionNotFoundError: an id names no ingestion of the tenant.
        PermissionDeniedError: the actor cannot view one of them.
        RateLimitedError: the actor's or the tenant's previews are used up (a batch counts
            once), or the tenant's listings are all busy.
    """
    ingestions = _members(tenant=tenant, ingestion_ids=ingestion_ids, kind=kind)
    # One request, one preview against the rates; each member's listing takes a slot.
    taken = preview_rate(tenant=tenant, actor=actor)
    try:
        plans = [
            refresh_preview(
                ingestion=ingestion,
                kind=kind,
                actor=actor,
                mode=RefreshMode.ATOMIC,
                gate="listing",
            )
            for ingestion in ingestions
        ]
    except RateLimitedError:
        for key in taken:
            rate_give_back(key)
        raise
    for plan in plans:  # the batch's quota warnings (`_quota`) stand for its members'
        plan.warnings = [warning for warning in plan.warnings if not warning.startswith(WARNING)]
    batch = RefreshBatch.objects.create(
        tenant=tenant,
        kind=kind,
        status=BatchStatus.PLANNED,
        members=[
            {"ingestion_id": plan.ingestion.public_id, "plan_id": plan.plan_id} for plan in plans
        ],
        # Where the caller's rate stood at the dry-run, kept with the plan it was shown with.
        impact={**_totals(plans), **_quota(actor=actor, kind=kind, ingestions=ingestions)},
        requested_by=_user(actor),
    )
    return batch, plans


def _quota(*, actor, kind: str, ingestions: list[Ingestion]) -> dict:
    """{"quota": {kind: {limit, used, remaining, ..., members_startable}}, "warnings": [...]}
    when the kind is rate-limited (`refresh.limits.batch_quota`), with a warning for each
    limit that would refuse the batch."""
    quota, warnings = batch_quota(actor=actor, kind=kind, ingestions=ingestions)
    if not quota:
        return {}
    return {"quota": {kind: quota}, "warnings": warnings}


def batch_execute(
    *,
    tenant: Tenant,
    ingestion_ids: list[str],
    kind: str,
    actor,
    confirm,
    plan_id: str | None = None,
) -> RefreshBatch:
    """Start one zero-downtime operation per member; the batch publishes them together.

    Every member's rules are checked before any starts, and the rate limit slots of every
    member are taken at once (or none is, and nothing starts). A member refused while
    starting (a plan needed, a run that began meanwhile) fails the batch: the members
    started are cancelled, nothing is published, and the slots not used are given back.

    Raises:
        ConfirmationRequiredError: `confirm` is not exactly True.
        DryRunRequiredError: `plan_id` names no plan of this tenant, kind and ingestions.
        IngestionNotFoundError, ValidationError: as `batch_preview`.
        RateLimitedError: the caller's rate cannot cover every member; nothing started.
        AutoloaderError: a member's refusal, with `batch_id` and `ingestion_id` in `extra`.
    """
    ingestions = _members(tenant=tenant, ingestion_ids=ingestion_ids, kind=kind)
    if confirm is not True:
        raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
    plans = _planned(tenant=tenant, kind=kind, plan_id=plan_id, ingestions=ingestions)
    for ingestion in ingestions:
        try:
            refresh_check(ingestion=ingestion, kind=kind, actor=actor)
        except AutoloaderError as exc:
            raise _naming(exc, ingestion=ingestion, batch=None) from None
    with rate_limit_slots(actor=actor, kind=kind, ingestions=ingestions) as slots:
        batch = _start_members(
            tenant=tenant, kind=kind, actor=actor, ingestions=ingestions, plans=plans, slots=slots
        )
    if batch.status == BatchStatus.FAILED:
        return batch
    logger.info("batch %s (%s) of %d ingestions started", batch.public_id, kind, len(ingestions))
    return batch_sync(batch=batch)


def _start_members(*, tenant, kind: str, actor, ingestions, plans, slots) -> RefreshBatch:
    """Record the batch and start its members one by one, each with a reserved slot."""
    batch = RefreshBatch.objects.create(
        tenant=tenant,
        kind=kind,
        status=BatchStatus.LOADING,
        members=[{"ingestion_id": ingestion.public_id} for ingestion in ingestions],
        requested_by=_user(actor),
    )
    operations: list[RefreshOperation] = []
    for ingestion, member in zip(ingestions, batch.members, strict=True):
        try:
            operation = refresh_execute(
                ingestion=ingestion,
                kind=kind,
                actor=actor,
                confirm=True,
                plan_id=plans.get(ingestion.public_id),
                mode=RefreshMode.ATOMIC,
                batch_id=batch.public_id,
                reserved_slots=slots,
            )
        except AutoloaderError as exc:
            _fail(batch, operations, ingestion_id=ingestion.public_id, exc=exc)
            raise _naming(exc, ingestion=ingestion, batch=batch) from None
        member["operation_id"] = operation.public_id
        operations.append(operation)
        # Recorded at once: a member's run may end (and sync the batch) before the next starts.
        RefreshBatch.objects.filter(pk=batch.pk).update(
            members=batch.members, updated_at=timezone.now()
        )
        if operation.status != OperationStatus.ACCEPTED:  # a step failed: nothing runs
            error = AutoloaderError(operation.error or "The refresh could not start.")
            error.error_code = operation.error_code or "PARTIAL_FAILURE"
            _fail(batch, operations, ingestion_id=ingestion.public_id, exc=error)
            return batch
    batch.impact = {
        key: round(sum(operation.impact.get(key, 0) or 0 for operation in operations), 4)
        for key in IMPACT_SUMS
    }
    RefreshBatch.objects.filter(pk=batch.pk).update(impact=batch.impact)
    return batch


def batch_get(*, tenant: Tenant, batch_id: str) -> RefreshBatch:
    """A batch of the tenant, as recorded. Reads only: the worker moves batches on."""
    batch = RefreshBatch.objects.filter(tenant=tenant, public_id=batch_id).first()
    if batch is None or batch.status == BatchStatus.PLANNED:
        raise BatchNotFoundError("No such batch refresh in your tenant.")
    return batch


def batch_operations(batch: RefreshBatch) -> dict[str, RefreshOperation]:
    """The members' operations, each as its run's outcome makes it (`operation_as_of_run`),
    so that a member's state always agrees with its operation's. Reads only."""
    return {
        public_id: operation_as_of_run(operation=operation)
        for public_id, operation in _operations(batch).items()
    }


def _operations(batch: RefreshBatch) -> dict[str, RefreshOperation]:
    ids = [member["operation_id"] for member in batch.members if member.get("operation_id")]
    operations = RefreshOperation.objects.filter(public_id__in=ids).select_related(
        "run", "ingestion"
    )
    return {operation.public_id: operation for operation in operations}


def batch_sync(*, batch: RefreshBatch) -> RefreshBatch:
    """Move a batch on: fail it (and discard every member) as soon as one member failed,
    publish every member once all have loaded. Idempotent; called by the worker when a
    member's run ends and by its reaper, and once by the request that starts the batch.

    Single-flight: each transition is claimed under the batch's row lock. The caller that
    moves it from `loading` to `failed` discards the members; the one that moves it to
    `publishing` publishes them, touching the batch's `updated_at` before each member as
    its heartbeat. Another caller finding it `publishing` leaves it alone unless that
    heartbeat stopped for REFRESH_STALE_SECONDS (its publisher died): then it takes the
    publishing over (publishing a member is idempotent and resumable).
    """
    if batch.status not in (BatchStatus.LOADING, BatchStatus.PUBLISHING):
        return batch
    operations = _operations(batch)
    stale_before = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
    with transaction.atomic():
        batch = RefreshBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status == BatchStatus.LOADING:
            verdict = _verdict(batch, operations)
            if verdict is None:
                return batch  # still loading
            if verdict == BatchStatus.PUBLISHING:
                batch.status = BatchStatus.PUBLISHING
                batch.save(update_fields=["status", "updated_at"])  # the claim
            else:
                ingestion_id, error = verdict
                _mark_failed(batch, ingestion_id=ingestion_id, error=error, code="MEMBER_FAILED")
        elif batch.status == BatchStatus.PUBLISHING and batch.updated_at < stale_before:
            logger.warning("batch %s was left publishing: taking it over", batch.public_id)
            batch.save(update_fields=["updated_at"])  # the claim: a fresh heartbeat
        else:
            return batch  # settled, or being published by a live caller
    if batch.status == BatchStatus.FAILED:
        _discard_members(operations.values())
    else:
        _publish_members(batch, operations.values())
    return batch


def batches_sync_due() -> list[str]:
    """The reaper's pass: every batch still loading or publishing, moved on."""
    moved = []
    for batch in RefreshBatch.objects.filter(
        status__in=(BatchStatus.LOADING, BatchStatus.PUBLISHING)
    ):
        status = batch.status
        if batch_sync(batch=batch).status != status:
            moved.append(batch.public_id)
    return moved


def run_ended_sync(run) -> None:
    """After a refresh's staged run ended (the worker): record its operation's outcome and
    move its batch on, if any (the last member to load publishes them all)."""
    operation = operation_of_run_sync(run)
    batch_id = operation.request.get("batch_id") if operation else None
    batch = RefreshBatch.objects.filter(public_id=batch_id).first() if batch_id else None
    if batch is not None:
        batch_sync(batch=batch)


# --- helpers ---------------------------------------------------------------------------


def _members(*, tenant: Tenant, ingestion_ids, kind: str) -> list[Ingestion]:
    if kind not in BATCH_KINDS:
        raise ValidationError({"operation": ["A batch is a full_refresh or a fresh_start."]})
    if (
        not isinstance(ingestion_ids, list)
        or not 1 <= len(ingestion_ids) <= MAX_BATCH_MEMBERS
        or not all(isinstance(value, str) and value for value in ingestion_ids)
    ):
        raise ValidationError(
            {"ingestion_ids": [f"A list of 1 to {MAX_BATCH_MEMBERS} ingestion ids."]}
        )
    if len(set(ingestion_ids)) != len(ingestion_ids):
        raise ValidationError({"ingestion_ids": ["Each ingestion at most once."]})
    found = {
        ingestion.public_id: ingestion
        for ingestion in Ingestion.objects.filter(tenant=tenant, public_id__in=ingestion_ids)
    }
    missing = [value for value in ingestion_ids if value not in found]
    if missing:
        # Another tenant's ingestion looks exactly like one that does not exist.
        raise IngestionNotFoundError(f"No ingestion {missing[0]!r} in your tenant.")
    return [found[value] for value in ingestion_ids]


def _planned(*, tenant, kind: str, plan_id: str | None, ingestions) -> dict[str, str]:
    """The members' plan ids recorded by the batch dry-run `plan_id` (none without one)."""
    if not plan_id:
        return {}
    planned = RefreshBatch.objects.filter(
        tenant=tenant, public_id=plan_id, status=BatchStatus.PLANNED, kind=kind
    ).first()
    ids = [ingestion.public_id for ingestion in ingestions]
    if planned is None or [member["ingestion_id"] for member in planned.members] != ids:
        raise DryRunRequiredError(
            f"plan_id {plan_id!r} is not a dry-run of this batch (same operation and "
            "ingestions, in the same order)."
        )
    return {member["ingestion_id"]: member["plan_id"] for member in planned.members}


def _verdict(batch: RefreshBatch, operations: dict[str, RefreshOperation]):
    """None (loading), PUBLISHING (every member loaded), or (ingestion_id, why) failed."""
    loaded = 0
    for member in batch.members:
        operation = operations.get(member.get("operation_id"))
        if operation is None:
            # Still being started by the request, unless that request died long ago.
            started_before = timezone.now() - timedelta(seconds=settings.REFRESH_STALE_SECONDS)
            if batch.updated_at < started_before:
                return member["ingestion_id"], "Its refresh did not start."
            return None
        run = operation.run
        if operation.status in FAILED_OPERATION:
            return member["ingestion_id"], operation.error or f"Its refresh {operation.status}."
        if run is None:
            return member["ingestion_id"], "Its refresh triggered no run."
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PARTIAL_SUCCESS):
            return member[
                "ingestion_id"
            ], f"Its run {run.public_id} ended {run.status}: {run.error}"
        if run.status == RunStatus.SUCCESS and run.publish_state in (
            PublishState.AWAITING_BATCH,
            PublishState.PUBLISHING,
            PublishState.PUBLISHED,
        ):
            loaded += 1
    return BatchStatus.PUBLISHING if loaded == len(batch.members) else None


def _mark_failed(batch: RefreshBatch, *, ingestion_id: str, error: str, code: str) -> None:
    batch.status = BatchStatus.FAILED
    batch.failed_ingestion_id = ingestion_id
    batch.error = f"{ingestion_id}: {error}"[:4000]
    batch.error_code = code
    batch.finished_at = timezone.now()
    batch.save(
        update_fields=[
            "status",
            "failed_ingestion_id",
            "error",
            "error_code",
            "finished_at",
            "updated_at",
        ]
    )
    logger.info("batch %s failed: %s", batch.public_id, batch.error)


def _fail(batch: RefreshBatch, operations, *, ingestion_id: str, exc: AutoloaderError) -> None:
    """A member could not start: the batch fails and the members started are discarded."""
    RefreshBatch.objects.filter(pk=batch.pk).update(members=batch.members)
    _mark_failed(batch, ingestion_id=ingestion_id, error=exc.detail, code=exc.error_code)
    _discard_members(operations)


def _discard_members(operations) -> None:
    """Cancel the members still loading and discard the versions that wait: none is live."""
    for operation in operations:
        run = operation.run
        if run is None:
            continue
        run.refresh_from_db()
        if run.status in ACTIVE_RUN_STATUSES:
            try:
                run_cancel(run=run)  # its executor discards the version when it stops
            except RunNotCancellableError:
                run.refresh_from_db()
        if run.publish_state == PublishState.AWAITING_BATCH:
            staged_discard(run=run, engine=load_engine(run.ingestion.engine))
            Run.objects.filter(pk=run.pk).update(
                error=run.error.replace(BATCH_WAIT_NOTE, "Discarded with its batch.").strip()
            )
        operation_sync(operation=operation)


def _publish_members(batch: RefreshBatch, operations) -> None:
    """Publish every member (each one commit); a failure leaves the batch `publishing` for
    the reaper to finish: publishing is idempotent, and no member is ever discarded now."""
    for operation in operations:
        # The publisher's heartbeat: another caller takes over only once it stops.
        RefreshBatch.objects.filter(pk=batch.pk, status=BatchStatus.PUBLISHING).update(
            updated_at=timezone.now()
        )
        run = operation.run
        run.refresh_from_db()
        if run.publish_state != PublishState.PUBLISHED:
            staged_publish(run=run, engine=load_engine(run.ingestion.engine))
            Run.objects.filter(pk=run.pk).update(
                error=run.error.replace(BATCH_WAIT_NOTE, "").strip()
            )
        operation_sync(operation=operation)
    RefreshBatch.objects.filter(pk=batch.pk, status=BatchStatus.PUBLISHING).update(
        status=BatchStatus.PUBLISHED, finished_at=timezone.now(), updated_at=timezone.now()
    )
    batch.refresh_from_db()
    logger.info("batch %s published %d tables", batch.public_id, len(batch.members))


def _naming(exc: AutoloaderError, *, ingestion: Ingestion, batch: RefreshBatch | None):
    exc.extra = {
        **exc.extra,
        "ingestion_id": ingestion.public_id,
        **({"batch_id": batch.public_id} if batch is not None else {}),
    }
    exc.args = (f"{ingestion.public_id}: {exc.detail}",)
    return exc


def _totals(plans: list[Plan]) -> dict:
    impacts = [plan.as_record() for plan in plans]
    return {
        key: round(sum(impact.get(key, 0) or 0 for impact in impacts), 4) for key in IMPACT_SUMS
    }


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None
