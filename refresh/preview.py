"""Refresh previews (dry-runs) and the checks an operation passes before it starts:
permission, protection, nothing else in flight, a fresh plan above the cost threshold, a
scope that names real files."""

import contextlib
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from ingestions import hooks
from ingestions.engines import load_engine
from ingestions.errors import (
    RefreshInProgressError,
    RunInProgressError,
)
from ingestions.models import Ingestion
from ingestions.ratelimits import expensive_read
from ingestions.scope import Scope
from ingestions.selectors import run_active

from . import audit
from .actors import _require, _user
from .errors import (
    DryRunRequiredError,
    PlanStaleError,
    ScopeNotApplicableError,
    TableProtectedError,
)
from .guards import refuse_while_awaiting_decision
from .limits import WARNING as RATE_WARNING
from .limits import rate_limit_quota
from .models import (
    OperationKind,
    OperationStatus,
    RefreshMode,
    RefreshOperation,
    RefreshPlan,
)
from .planning import Plan, gigabytes, plan_operation
from .specs import spec_of

PREVIEW_PERMISSION = "ingestions.view_ingestion"


def refresh_preview(
    *,
    ingestion: Ingestion,
    kind: str,
    actor,
    mode: str | None = None,
    auto_run: bool = True,
    retain_days: int | None = None,
    scope: dict | None = None,
    engine=None,
    gate: str | None = "request",
) -> Plan:
    """Dry-run: what `kind` would do, with its impact. Changes no table, history or run.

    It records the plan (impact and time) so that a large operation can present its
    `plan_id` when it executes.

    Raises:
        PermissionDeniedError: the actor cannot view the ingestion.
        RateLimitedError: the actor's or the tenant's previews are used up, or the tenant's
            listings are all busy (`ingestions.ratelimits.expensive_read`).
    """
    _require(actor, PREVIEW_PERMISSION, ingestion, kind=kind)
    engine = engine or load_engine(ingestion.engine)
    mode = effective_mode(kind=kind, mode=mode, auto_run=auto_run, engine=engine)
    parsed = scope_of(scope, kind=kind, mode=mode, ingestion=ingestion, engine=engine)
    # Listing the source is the expensive part, and anyone who can view may ask for it:
    # "request" counts the call against the preview rates and takes a listing slot;
    # "listing" (a batch member: the batch counted once) takes the slot only; None (the
    # worker's schedule firing) neither.
    gated = (
        expensive_read(tenant=ingestion.tenant, actor=actor, counted=gate == "request")
        if gate
        else contextlib.nullcontext()
    )
    with gated:
        plan = plan_operation(
            ingestion=ingestion, kind=kind, engine=engine, mode=mode, scope=parsed
        )
    with_retention(
        plan,
        retain_days=effective_retain_days(
            ingestion=ingestion, retain_days=retain_days, engine=engine
        ),
    )
    record = RefreshPlan.objects.create(
        ingestion=ingestion, kind=kind, impact=plan.as_record(), created_by=_user(actor)
    )
    plan.plan_id = record.public_id
    plan.allowed = actor.has_perm(spec_of(kind).permission, ingestion)
    plan.quota = rate_limit_quota(actor=actor, ingestion=ingestion, kind=kind)
    if plan.allowed and plan.quota is not None and not plan.quota.remaining:
        # Tell before they type: executing now would be refused (429).
        plan.warnings.append(
            f"{RATE_WARNING} the limit of {plan.quota.described} ({plan.quota.setting}) is "
            f"used up; the next is possible at {plan.quota.resets_at:%Y-%m-%d %H:%M} UTC"
        )
    if plan.allowed:  # a read-only caller's dry-runs send no webhooks (docs/webhooks.md)
        hooks.publish("refresh.previewed", ingestion=ingestion, kind=kind, plan=plan)
    plan.plan_required = plan.impact.estimated_cost_usd > settings.REFRESH_PLAN_REQUIRED_ABOVE_USD
    return plan


def refresh_check(*, ingestion: Ingestion, kind: str, actor) -> None:
    """The rules `refresh_execute` applies before anything starts (permission, protection,
    a run or refresh in progress), for callers that must check several ingestions first.

    Raises:
        PermissionDeniedError, TableProtectedError (both audited), RunInProgressError,
        RefreshInProgressError.
    """
    _require(actor, spec_of(kind).permission, ingestion, kind=kind)
    refuse_if_protected(ingestion, actor=actor, kind=kind, doing=spec_of(kind).label.lower())
    refuse_if_busy(ingestion)


def refuse_if_protected(ingestion: Ingestion, *, actor, kind: str, doing: str = "") -> None:
    """A protected ingestion refuses every refresh, resume and undo; the refusal is audited."""
    if ingestion.protected:
        audit.record_refusal(actor=actor, ingestion=ingestion, kind=kind, reason="TABLE_PROTECTED")
        refused = f": {doing} is refused." if doing else "."
        raise TableProtectedError(f"Ingestion {ingestion.public_id} is protected{refused}")


def refuse_if_busy(ingestion: Ingestion) -> None:
    active = run_active(ingestion=ingestion)
    if active is not None:
        raise RunInProgressError(
            "Cannot refresh while ingestion is running", current_run_id=active.public_id
        )
    refuse_while_awaiting_decision(ingestion)
    if RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS
    ).exists():
        raise in_flight_error(ingestion)


def in_flight_error(ingestion: Ingestion) -> RefreshInProgressError:
    current = RefreshOperation.objects.filter(
        ingestion=ingestion, status=OperationStatus.IN_PROGRESS
    ).first()
    return RefreshInProgressError(
        "Another refresh operation is in progress on this ingestion",
        current_operation_id=current.public_id if current else "",
    )


def check_plan(*, ingestion: Ingestion, kind: str, plan: Plan, plan_id: str | None):
    """Above the threshold, a recent unused dry-run of this same operation must be presented."""
    cost = plan.impact.estimated_cost_usd
    threshold = settings.REFRESH_PLAN_REQUIRED_ABOVE_USD
    if not plan_id:
        if cost > threshold:
            raise DryRunRequiredError(
                f"Operation estimated at ${cost:,.2f} (above ${threshold:,.0f}). Run with "
                "dry_run=true first to review, then send its plan_id with confirm=true."
            )
        return None
    fresh_after = timezone.now() - timedelta(seconds=settings.REFRESH_PLAN_TTL_SECONDS)
    record = RefreshPlan.objects.filter(
        public_id=plan_id, ingestion=ingestion, kind=kind, created_at__gte=fresh_after
    ).first()
    if record is None or record.used_at is not None:
        raise DryRunRequiredError(
            f"plan_id {plan_id!r} is not a dry-run of {kind} on {ingestion.public_id} made in "
            f"the last {settings.REFRESH_PLAN_TTL_SECONDS // 60} minutes (or it was used "
            "already). Run the dry-run again."
        )
    planned_scope = record.impact.get("scope")
    if planned_scope != (plan.scope["scope"] if plan.scope is not None else None):
        # A preview of one scope does not vouch for another (a changed form, a replayed id).
        raise PlanStaleError(
            f"plan_id {plan_id!r} previewed "
            + (f"the scope {planned_scope}" if planned_scope else "no scope")
            + ", not the scope of this call. Run the dry-run of this scope again."
        )
    growth = settings.REFRESH_PLAN_MAX_GROWTH
    planned_files = record.impact.get("files_to_process", 0)
    planned_bytes = record.impact.get("bytes_to_process", 0)
    if plan.impact.files_to_process > planned_files * (1 + growth) or (
        plan.impact.bytes_to_process > planned_bytes * (1 + growth)
    ):
        raise PlanStaleError(
            f"The impact grew since the dry-run: {planned_files:,} -> "
            f"{plan.impact.files_to_process:,} files, {gigabytes(planned_bytes)} -> "
            f"{plan.impact.estimated_data_size_gb} GB."
        )
    record.used_at = timezone.now()
    record.save(update_fields=["used_at"])
    return record


def scope_of(scope: dict | None, *, kind: str, mode: str, ingestion: Ingestion, engine):
    """The parsed scope of a selective full refresh, checked against what can honour it."""
    parsed = Scope.parse(scope)
    if parsed is None:
        return None
    if kind != OperationKind.FULL_REFRESH:
        raise ScopeNotApplicableError(f"A scope applies to a full refresh, not to a {kind}.")
    if mode != RefreshMode.ATOMIC:
        raise ScopeNotApplicableError(
            "A selective refresh replaces rows in one commit when its run ends: it needs mode "
            "atomic and auto_run true on an engine that stages."
        )
    info = engine.describe_table(ingestion.table_identifier)
    if not info.exists or info.snapshot_id is None:
        raise ScopeNotApplicableError(
            f"{ingestion.destination_table} has no rows yet: there is nothing to replace a "
            "part of. Run the ingestion, or refresh without a scope."
        )
    return parsed


def check_scope_matches(plan: Plan) -> None:
    """A selective refresh must name real files: a typo must not run an empty refresh."""
    unknown, matched = plan.scope["unknown_files"], plan.scope["files_in_scope"]
    if unknown:
        raise ValidationError(
            {
                "scope": [
                    f"{len(unknown):,} named files are neither in the source nor in the "
                    f"history: {', '.join(unknown[:5])}."
                ]
            }
        )
    if not matched:
        raise ValidationError({"scope": ["No file of the source or the history is in it."]})


def effective_mode(*, kind: str, mode: str | None, auto_run: bool, engine) -> str:
    """The mode an operation runs in: zero-downtime ("atomic") unless it was asked to drop
    first, triggers no run to publish with (auto_run false), or its engine cannot stage."""
    if not spec_of(kind).can_publish_at_end:
        return ""
    if not auto_run or not engine.can_stage:
        return RefreshMode.DROP_FIRST.value
    return RefreshMode(mode or settings.REFRESH_DEFAULT_MODE).value


def with_retention(plan: Plan, *, retain_days: int) -> None:
    """Say in the plan how long the operation can be undone."""
    plan.retain_days = retain_days
    if retain_days:
        plan.notes.append(
            f"Undoable for {retain_days} day{'s' if retain_days != 1 else ''}: "
            f"{spec_of(plan.kind).kept_for_undo}"
        )
    else:
        plan.notes.append(
            "Cannot be undone: nothing is kept (retain_days is 0, or the engine cannot keep "
            "table versions)"
        )


def effective_retain_days(*, ingestion: Ingestion, retain_days: int | None, engine) -> int:
    """Days an operation keeps what it replaces: the request's, else the ingestion's, else
    the setting's; 0 when the engine cannot keep a table version."""
    if not engine.can_retain:
        return 0
    for days in (retain_days, ingestion.retain_days, settings.REFRESH_RETAIN_DAYS):
        if days is not None:
            return max(0, min(int(days), settings.REFRESH_MAX_RETAIN_DAYS))
    return 0
