"""Writes of ingestions: create, update through an allow-list, delete."""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from .errors import IngestionConflictError, RunInProgressError
from .models import Ingestion, Tenant
from .selectors import run_active
from .sources.readers import validate_reader_options

UPDATABLE_FIELDS = (
    "name",
    "source_uri",
    "source_format",
    "source_pattern",
    "source_options",
    "cost_per_gb_usd",
    "protected",
)


def ingestion_create(
    *,
    tenant: Tenant,
    actor,
    name: str,
    source_uri: str,
    source_format: str,
    destination_table: str,
    source_pattern: str = "",
    source_options: dict | None = None,
    engine: str = "iceberg",
    cost_per_gb_usd: Decimal | float | None = None,
    protected: bool = False,
    public_id: str | None = None,
) -> Ingestion:
    """Create an ingestion in `tenant`.

    Raises:
        IngestionConflictError: the id or the destination table is taken in this tenant.
    """
    ingestion = Ingestion(
        tenant=tenant,
        name=name,
        source_uri=source_uri,
        source_format=source_format,
        source_pattern=source_pattern or "",
        source_options=source_options or {},
        destination_table=destination_table,
        engine=engine,
        cost_per_gb_usd=Decimal(
            str(
                settings.AUTOLOADER_DEFAULT_COST_PER_GB_USD
                if cost_per_gb_usd is None
                else cost_per_gb_usd
            )
        ),
        protected=protected,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    if public_id:
        ingestion.public_id = public_id
    _clean(ingestion)
    try:
        with transaction.atomic():
            ingestion.save()
    except IntegrityError:
        raise _conflict(tenant, ingestion) from None
    return ingestion


def _conflict(tenant: Tenant, ingestion: Ingestion) -> IngestionConflictError:
    if Ingestion.objects.filter(tenant=tenant, public_id=ingestion.public_id).exists():
        return IngestionConflictError(f"An ingestion with id {ingestion.public_id!r} exists.")
    return IngestionConflictError(
        f"Another ingestion already loads into {ingestion.destination_table!r}.",
    )


def _clean(ingestion: Ingestion) -> None:
    """Model validation plus the reader options, so a bad option fails now, not every run."""
    ingestion.full_clean(exclude=["tenant", "created_by"], validate_constraints=False)
    try:
        validate_reader_options(
            file_format=ingestion.source_format, options=ingestion.source_options
        )
    except ValueError as exc:
        raise ValidationError({"source.options": [str(exc)]}) from None


def ingestion_update(*, ingestion: Ingestion, data: dict) -> Ingestion:
    """Update the allow-listed fields present in `data`; other keys are ignored."""
    changed = [field for field in UPDATABLE_FIELDS if field in data]
    for field in changed:
        setattr(ingestion, field, data[field])
    if changed:
        _clean(ingestion)
        ingestion.save(update_fields=[*changed, "updated_at"])
    return ingestion


def ingestion_delete(*, ingestion: Ingestion) -> None:
    """Delete an ingestion and its history; its table is left in place.

    Raises:
        RunInProgressError: a run is active (cancel it first).
    """
    active = run_active(ingestion=ingestion)
    if active is not None:
        raise RunInProgressError(
            "Cannot delete an ingestion while it is running", current_run_id=active.public_id
        )
    ingestion.delete()


def history_delete(*, ingestion: Ingestion) -> int:
    """Delete the whole processed-file history of an ingestion; returns how many rows went.

    Only refresh operations call this, after checking that no run is active.
    """
    # A raw delete: history rows have no signals or cascades, and it stays one statement
    # even for millions of rows.
    return ingestion.processed_files.all()._raw_delete(ingestion.processed_files.db)
