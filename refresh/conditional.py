"""Conditional refresh: a full refresh or fresh start that runs only when a condition over the
ingestion's facts holds at the moment of the call (`POST .../refresh-if`, a schedule's
`condition`, the console's facts).

The facts come from the preview's own listing (`refresh.planning.listings_kept`): one
listing answers both what the refresh would do and whether it should; the condition
language is `refresh.conditions`. Everything else is the refresh's: the same permission,
confirmation, protection, plan and rate rules (`refresh_execute`), applied only when the
condition holds; a condition that does not hold starts nothing and takes no rate slot.
"""

from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.utils import timezone

from ingestions.models import FileFailure, Ingestion
from ingestions.quarantine import quarantined_paths
from ingestions.selectors import processed_file_signatures
from ingestions.source_changes import file_changed
from ingestions.sources import SourceFile

from .actors import _require
from .conditions import FACTS, Condition, condition_parse
from .errors import ConfirmationRequiredError
from .models import OperationKind, OperationStatus, RefreshOperation
from .planning import Plan, listings_kept
from .preview import refresh_preview, refuse_if_busy, refuse_if_protected
from .services import refresh_execute
from .specs import spec_of

CONDITIONAL_KINDS = (OperationKind.FULL_REFRESH, OperationKind.FRESH_START)
# Refreshes that did not refresh anything do not count for hours_since_last_refresh.
NOT_A_REFRESH = (OperationStatus.FAILED, OperationStatus.CANCELLED, OperationStatus.DISCARDED)


@dataclass
class ConditionVerdict:
    """A condition measured on one preview: whether it holds, with the facts and why."""

    condition: Condition
    facts: dict[str, float]
    holds: bool
    plan: Plan

    def as_response(self) -> dict:
        return {
            "expression": self.condition.text,
            "holds": self.holds,
            "facts": self.facts,
            "explanation": self.condition.explain(self.facts),
        }

    def summary(self) -> str:
        """One line for people and records: the verdict and the facts the condition names."""
        used = self.condition.facts_used or list(FACTS)
        values = ", ".join(f"{name} = {_number(self.facts[name])}" for name in used)
        verb = "holds" if self.holds else "does not hold"
        return f"The condition {self.condition.text!r} {verb}: {values}."


@dataclass
class ConditionalOutcome:
    verdict: ConditionVerdict
    operation: RefreshOperation | None  # None: it did not run (or a dry-run)


def plan_facts(plan: Plan, *, now: datetime | None = None) -> dict[str, float]:
    """The facts of `plan`'s ingestion, read from the listing the plan was made from (made
    inside `listings_kept()`), its history and its records. Reads only."""
    if plan.listing is None:
        raise RuntimeError("The plan was made without its listing: use listings_kept().")
    ingestion = plan.ingestion
    set_aside = quarantined_paths(ingestion=ingestion)
    signatures = processed_file_signatures(ingestion=ingestion)
    file_count = new_files = changed_files = 0
    for entry in plan.listing:
        path = entry[0]
        if path in set_aside:
            continue
        file_count += 1
        signature = signatures.get(path)
        if signature is None:
            new_files += 1
        elif file_changed(signature, SourceFile(*entry)):
            changed_files += 1
    return {
        "file_count": file_count,
        "new_files": new_files,
        "changed_files": changed_files,
        "files_to_process": plan.impact.files_to_process,
        "bytes_to_process": plan.impact.bytes_to_process,
        "failed_files": FileFailure.objects.filter(ingestion=ingestion).count(),
        "hours_since_last_refresh": hours_since_last_refresh(ingestion, now=now),
    }


def hours_since_last_refresh(ingestion: Ingestion, *, now: datetime | None = None) -> float:
    """Hours since the ingestion's last full refresh or fresh start started (one that did
    not fail, nor was cancelled or discarded), or since it was created: two decimals."""
    now = now or timezone.now()
    last = (
        RefreshOperation.objects.filter(ingestion=ingestion, kind__in=CONDITIONAL_KINDS)
        .exclude(status__in=NOT_A_REFRESH)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    since = last or ingestion.created_at
    return round(max(0.0, (now - since).total_seconds() / 3600), 2)


def condition_measure(
    *, ingestion: Ingestion, kind: str, actor, condition: Condition, gate: str | None = "request"
) -> ConditionVerdict:
    """Preview `kind` (recording its plan, gated and counted like a dry-run unless `gate`
    says otherwise) and measure `condition` on the preview's listing.

    Raises:
        As `refresh.preview.refresh_preview`.
    """
    plan, facts = facts_measure(ingestion=ingestion, kind=kind, actor=actor, gate=gate)
    return ConditionVerdict(
        condition=condition, facts=facts, holds=condition.evaluate(facts), plan=plan
    )


def facts_measure(
    *, ingestion: Ingestion, kind: str, actor, gate: str | None = "request"
) -> tuple[Plan, dict[str, float]]:
    """The facts now, from a preview of `kind` (recorded, gated and counted as a dry-run
    unless `gate` says otherwise): what the console shows beside a schedule's condition.

    Raises:
        As `refresh.preview.refresh_preview`.
    """
    with listings_kept():
        plan = refresh_preview(ingestion=ingestion, kind=kind, actor=actor, gate=gate)
    facts = plan_facts(plan)
    plan.listing = None  # read: let it go
    return plan, facts


def refresh_if(
    *,
    ingestion: Ingestion,
    kind: str,
    actor,
    condition: str,
    confirm=None,
    dry_run: bool = False,
    plan_id: str | None = None,
) -> ConditionalOutcome:
    """Run `kind` only if `condition` holds now, measured on the preview's listing.

    A dry-run previews and says whether the refresh would run. Otherwise the refresh's own
    refusals come first, whatever the facts (permission, confirmation, protection, a run or
    refresh in progress); then the preview; then, if the condition holds, `refresh_execute`
    with `plan_id` (needed above the cost threshold, as for a direct call).

    Raises:
        ConditionInvalidError: the condition does not parse (before anything else).
        ValidationError: `kind` is not a full refresh or a fresh start.
        PermissionDeniedError, ConfirmationRequiredError, TableProtectedError,
        RunInProgressError, RefreshInProgressError: as `refresh_execute`, before listing.
        And whatever `refresh_preview` and `refresh_execute` raise.
    """
    parsed = condition_parse(condition)
    if kind not in CONDITIONAL_KINDS:
        raise ValidationError(
            {"operation": ["A conditional refresh is a full_refresh or a fresh_start."]}
        )
    if not dry_run:
        _require(actor, spec_of(kind).permission, ingestion, kind=kind)
        if confirm is not True:
            raise ConfirmationRequiredError("Confirmation required. Set confirm=true to proceed.")
        refuse_if_protected(ingestion, actor=actor, kind=kind, doing=spec_of(kind).label.lower())
        refuse_if_busy(ingestion)
    verdict = condition_measure(ingestion=ingestion, kind=kind, actor=actor, condition=parsed)
    if dry_run or not verdict.holds:
        return ConditionalOutcome(verdict=verdict, operation=None)
    operation = refresh_execute(
        ingestion=ingestion, kind=kind, actor=actor, confirm=True, plan_id=plan_id
    )
    return ConditionalOutcome(verdict=verdict, operation=operation)


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
