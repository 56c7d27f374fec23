"""Reads the console needs beyond the domain's selectors: list rows, history counts, audit.

Each function is scoped to a tenant (or to ingestions already scoped to one) and issues a
fixed number of queries whatever the row count.
"""

from dataclasses import dataclass

from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Q, QuerySet

from ingestions.models import ACTIVE_RUN_STATUSES, Ingestion, ProcessedFile, Run, Tenant
from ingestions.selectors import ingestion_list, runs_by_pk, table_state

STATUS_FILTER_ACTIVE = "active"
STATUS_FILTER_NEVER = "never"


def ingestion_search(*, tenant: Tenant, query: str = "", status: str = "") -> QuerySet[Ingestion]:
    """The tenant's ingestions whose name, id or table contains `query`, by last-run status.

    `status` is a RunStatus value, "active" (queued or running) or "never" (no run yet).
    """
    ingestions = ingestion_list(tenant=tenant)
    if query:
        ingestions = ingestions.filter(
            Q(name__icontains=query)
            | Q(destination_table__icontains=query)
            | Q(public_id__icontains=query)
        )
    if status == STATUS_FILTER_NEVER:
        ingestions = ingestions.filter(latest_run_pk__isnull=True)
    elif status:
        statuses = ACTIVE_RUN_STATUSES if status == STATUS_FILTER_ACTIVE else [status]
        runs = Run.objects.filter(ingestion__tenant=tenant, status__in=statuses)
        ingestions = ingestions.filter(latest_run_pk__in=runs.values("pk"))
    return ingestions


def history_counts(*, ingestion_ids) -> dict[int, int]:
    """Processed files per ingestion, for many ingestions in one grouped query."""
    rows = (
        ProcessedFile.objects.filter(ingestion_id__in=list(ingestion_ids))
        .values("ingestion_id")
        .annotate(count=Count("id"))
        .order_by()
    )
    return {row["ingestion_id"]: row["count"] for row in rows}


@dataclass
class IngestionRow:
    """One line of the ingestions list."""

    ingestion: Ingestion
    last_run: Run | None
    history_count: int
    table: dict


def ingestion_rows(ingestions) -> list[IngestionRow]:
    """List rows with last run, history count and table state.

    Two SQL queries for the whole page (latest runs, history counts); the table state comes
    from the engine's metadata, one catalog lookup per row and never a scan.
    """
    ingestions = list(ingestions)
    last_runs = runs_by_pk(ingestion.latest_run_pk for ingestion in ingestions)
    counts = history_counts(ingestion_ids=[ingestion.pk for ingestion in ingestions])
    return [
        IngestionRow(
            ingestion=ingestion,
            last_run=last_runs.get(ingestion.latest_run_pk),
            history_count=counts.get(ingestion.pk, 0),
            table=table_state(ingestion=ingestion),
        )
        for ingestion in ingestions
    ]


# --- audit -----------------------------------------------------------------------------


def audit_entry_list(
    *,
    tenant: Tenant,
    ingestion: Ingestion | None = None,
    operation: str = "",
    outcome: str = "",
    actor: str = "",
    ingestion_id: str = "",
) -> QuerySet[LogEntry]:
    """The tenant's audit entries (written by `refresh.audit`), newest first, filtered."""
    entries = LogEntry.objects.filter(additional_data__tenant=tenant.slug)
    if ingestion is not None:
        entries = entries.filter(
            content_type=ContentType.objects.get_for_model(Ingestion), object_id=ingestion.pk
        )
    if operation:
        entries = entries.filter(additional_data__operation=operation)
    if outcome:
        entries = entries.filter(additional_data__outcome=outcome)
    if actor:
        entries = entries.filter(actor__username__iexact=actor)
    if ingestion_id:
        entries = entries.filter(additional_data__ingestion_id=ingestion_id)
    return entries.select_related("actor").order_by("-timestamp", "-id")


def audit_entries_named(
    entries, *, tenant: Tenant, ingestion: Ingestion | None = None
) -> list[LogEntry]:
    """The entries, each with the name of its ingestion: `ingestion_name` is the name it has
    now (or, once deleted, the one the entry recorded) and `ingestion_exists` says which.
    One query whatever the number of entries; none for one ingestion's trail (`ingestion`)."""
    entries = list(entries)
    if ingestion is not None:
        names = {ingestion.public_id: ingestion.name}
    else:
        ids = {(entry.additional_data or {}).get("ingestion_id") for entry in entries} - {None}
        names = dict(
            Ingestion.objects.filter(tenant=tenant, public_id__in=ids).values_list(
                "public_id", "name"
            )
        )
    for entry in entries:
        data = entry.additional_data or {}
        ingestion_id = data.get("ingestion_id")
        entry.ingestion_exists = ingestion_id in names if ingestion_id else None
        entry.ingestion_name = names.get(ingestion_id) or data.get("ingestion_name") or ""
    return entries
