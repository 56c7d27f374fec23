"""Writes of ingestions: create, update through an allow-list, delete."""

import json
from decimal import Decimal

from auditlog.models import LogEntry
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Max
from django.utils import timezone

from . import audit, hooks
from .engines import load_engine
from .errors import (
    ConfirmationRequiredError,
    IngestionConflictError,
    PermissionDeniedError,
    RunInProgressError,
    TableExistsError,
    TableProtectedError,
)
from .locations import source_resolve
from .models import ChangedFiles, GoneFiles, Ingestion, ProcessedFile, Tenant
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
    "retain_days",
    "maintenance_enabled",
    "snapshot_retention_hours",
    "changed_files",
    "gone_files",
)
AUDITED_FIELDS = (
    "public_id",
    "name",
    "source_uri",
    "source_format",
    "source_pattern",
    "source_options",
    "destination_table",
    "table_identifier",
    "engine",
    "cost_per_gb_usd",
    "protected",
    "retain_days",
    "maintenance_enabled",
    "snapshot_retention_hours",
    "changed_files",
    "gone_files",
)


class ExistingTable(models.TextChoices):
    """What creating an ingestion does with a destination table that already exists."""

    ADOPT = "adopt", "Keep its rows; record the files they came from as processed"
    REPLACE = "replace", "Drop it; the first run loads every file"


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
    retain_days: int | None = None,
    maintenance_enabled: bool = True,
    snapshot_retention_hours: int | None = None,
    public_id: str | None = None,
    existing_table: str | None = None,
    changed_files: str = ChangedFiles.RELOAD,
    gone_files: str = GoneFiles.KEEP,
) -> Ingestion:
    """Create an ingestion in `tenant`, loading into the tenant's own table.

    The source must lie inside one of the tenant's storage locations. The physical table is
    "<tenant prefix>__<namespace>.<table>" (see `Tenant.table_identifier`); if it exists
    already (an ingestion over it was deleted), `existing_table` must say what to do with
    its rows, so a new ingestion can never load files into it twice.

    Raises:
        SourceNotAllowedError: the source is outside the tenant's locations.
        IngestionConflictError: the id or the destination table is taken in this tenant.
        TableExistsError: the table exists and `existing_table` is not given.
        PermissionDeniedError: the actor may not create ingestions in `tenant`, or "replace"
            without the permission to drop tables.
        ValidationError: a field or reader option is invalid.
    """
    _authorize(actor, "add_ingestion", tenant)
    normalized_uri, _ = source_resolve(tenant=tenant, uri=source_uri)
    ingestion = Ingestion(
        tenant=tenant,
        name=name,
        source_uri=normalized_uri,
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
        retain_days=retain_days,
        maintenance_enabled=maintenance_enabled,
        snapshot_retention_hours=snapshot_retention_hours,
        changed_files=changed_files,
        gone_files=gone_files,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    if public_id:
        ingestion.public_id = public_id
    _clean(ingestion)
    if existing_table == ExistingTable.REPLACE and not _can(actor, "drop_table_ingestion", tenant):
        raise PermissionDeniedError(
            'Your role does not allow dropping tables ("existing_table": "replace").'
        )
    table_engine = load_engine(ingestion.engine)
    try:
        with transaction.atomic():
            ingestion.save()
            # Inside the transaction: a refused creation leaves the table as it was found.
            adopted = _take_over_table(
                ingestion=ingestion, engine=table_engine, existing_table=existing_table
            )
            audit.record_change(
                actor=actor,
                obj=ingestion,
                tenant=tenant,
                action="ingestion_created",
                log_action=LogEntry.Action.CREATE,
                changes={
                    field: [None, _audited_value(getattr(ingestion, field))]
                    for field in AUDITED_FIELDS
                },
                data={"ingestion_id": ingestion.public_id, "existing_table": adopted},
            )
    except IntegrityError:
        raise _conflict(tenant, ingestion) from None
    return ingestion


def _take_over_table(*, ingestion: Ingestion, engine, existing_table: str | None) -> str | None:
    """Deal with a destination table that exists already; returns what was done, if anything."""
    if not engine.table_exists(ingestion.table_identifier):
        return None
    if existing_table == ExistingTable.REPLACE:
        engine.drop_table(ingestion.table_identifier)
        return "replaced"
    if existing_table == ExistingTable.ADOPT:
        rows_by_file = engine.source_file_rows(ingestion.table_identifier)
        now = timezone.now()
        ProcessedFile.objects.bulk_create(
            [
                ProcessedFile(ingestion=ingestion, path=path, rows=rows, loaded_at=now)
                for path, rows in sorted(rows_by_file.items())
            ],
            batch_size=1000,
        )
        return f"adopted ({len(rows_by_file)} files recorded)"
    raise TableExistsError(
        f"Table {ingestion.destination_table} ({ingestion.table_identifier}) already exists "
        "and no ingestion owns it.",
        table_identifier=ingestion.table_identifier,
    )


def _can(actor, permission: str, obj) -> bool:
    """`actor` may do it to `obj`: its role in obj's tenant allows it, or platform staff were
    given the permission itself in the admin. No actor: the product's own call (the demo,
    a benchmark)."""
    perm = f"ingestions.{permission}"
    return actor is None or actor.has_perm(perm, obj) or actor.has_perm(perm)


def _authorize(actor, permission: str, obj) -> None:
    """Every service that changes state checks its own permission: the adapters (API,
    console, admin) only translate, and none can forget it."""
    if not _can(actor, permission, obj):
        raise PermissionDeniedError(
            f"Your role does not allow this action ({permission.replace('_', ' ')})."
        )


def _conflict(tenant: Tenant, ingestion: Ingestion) -> IngestionConflictError:
    if Ingestion.objects.filter(tenant=tenant, public_id=ingestion.public_id).exists():
        return IngestionConflictError(f"An ingestion with id {ingestion.public_id!r} exists.")
    return IngestionConflictError(
        f"Another ingestion already loads into {ingestion.destination_table!r}.",
    )


def _clean(ingestion: Ingestion) -> None:
    """Model validation plus the reader options, so a bad option fails now, not every run."""
    ingestion.full_clean(
        exclude=["tenant", "created_by", "table_identifier"], validate_constraints=False
    )
    try:
        validate_reader_options(
            file_format=ingestion.source_format, options=ingestion.source_options
        )
    except ValueError as exc:
        raise ValidationError({"source.options": [str(exc)]}) from None


def ingestion_update(*, ingestion: Ingestion, data: dict, actor=None) -> Ingestion:
    """Update the allow-listed fields present in `data`; other keys are ignored.

    Raises:
        PermissionDeniedError: the actor may not change the ingestion.
        SourceNotAllowedError: a new source outside the tenant's locations.
        ValidationError: a field or reader option is invalid.
    """
    _authorize(actor, "change_ingestion", ingestion)
    changed = [field for field in UPDATABLE_FIELDS if field in data]
    before = {field: _audited_value(getattr(ingestion, field)) for field in changed}
    if "source_uri" in data:
        data = {
            **data,
            "source_uri": source_resolve(tenant=ingestion.tenant, uri=data["source_uri"])[0],
        }
    for field in changed:
        setattr(ingestion, field, data[field])
    changed = [
        field for field in changed if _audited_value(getattr(ingestion, field)) != before[field]
    ]
    if changed:
        _clean(ingestion)
        with transaction.atomic():
            ingestion.save(update_fields=[*changed, "updated_at"])
            audit.record_change(
                actor=actor,
                obj=ingestion,
                tenant=ingestion.tenant,
                action="ingestion_updated",
                changes={
                    field: [before[field], _audited_value(getattr(ingestion, field))]
                    for field in changed
                },
                data={"ingestion_id": ingestion.public_id},
            )
    return ingestion


def _audited_value(value) -> str | None:
    """A field's value as the audit keeps it: text (JSON for reader options), None as None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def ingestion_delete(
    *, ingestion: Ingestion, actor, confirm: bool, drop_table: bool = False, engine=None
) -> dict:
    """Delete an ingestion and its history; its table is kept unless `drop_table`.

    A kept table can be taken over by a new ingestion of the same tenant with
    `"existing_table": "adopt"` (its files are recorded, nothing loads twice).

    Returns:
        What happened to the table: name, identifier, action ("kept" or "dropped"), help.

    Raises:
        ConfirmationRequiredError: `confirm` is not exactly True.
        TableProtectedError: the ingestion is protected.
        PermissionDeniedError: the actor may not delete the ingestion, or `drop_table`
            without the permission to drop tables.
        RunInProgressError, RefreshInProgressError: a run or a refresh is in flight.
        EngineError: the table could not be dropped (nothing was deleted).
    """
    from .runs import ingestion_lock

    _authorize(actor, "delete_ingestion", ingestion)
    if confirm is not True:
        raise ConfirmationRequiredError(
            "Deleting an ingestion needs confirm=true (its history is deleted with it)."
        )
    if ingestion.protected:
        raise TableProtectedError(
            f"Ingestion {ingestion.public_id} is protected: lift the protection to delete it."
        )
    if drop_table and not _can(actor, "drop_table_ingestion", ingestion):
        raise PermissionDeniedError("Your role does not allow dropping tables (drop_table).")
    with transaction.atomic():
        ingestion_lock(ingestion)
        active = run_active(ingestion=ingestion)
        if active is not None:
            raise RunInProgressError(
                "Cannot delete an ingestion while it is running", current_run_id=active.public_id
            )
        hooks.refuse_changes(ingestion)
        existed = None
        if drop_table:
            existed = (engine or load_engine(ingestion.engine)).drop_table(
                ingestion.table_identifier
            )
        table = {
            "name": ingestion.destination_table,
            "identifier": ingestion.table_identifier,
            "action": "dropped" if drop_table else "kept",
        }
        if drop_table:
            table["existed"] = existed
        else:
            table["help"] = (
                f"The table {ingestion.table_identifier} is kept with its rows. A new ingestion "
                f"of this tenant on destination {ingestion.destination_table!r} must say "
                '"existing_table": "adopt" (continue without loading a file twice) or '
                '"replace" (drop it first).'
            )
        audit.record_change(
            actor=actor,
            obj=ingestion,
            tenant=ingestion.tenant,
            action="ingestion_deleted",
            log_action=LogEntry.Action.DELETE,
            changes={"ingestion": [ingestion.public_id, None]},
            data={
                "ingestion_id": ingestion.public_id,
                "table": ingestion.table_identifier,
                "table_action": table["action"],
                "history_files": ingestion.processed_files.count(),
            },
        )
        ingestion.delete()
    return {"id": ingestion.public_id, "deleted": True, "table": table}


def history_archive(*, ingestion: Ingestion) -> None:
    """Clear the processed-file history in force: it becomes an archived generation.

    One UPDATE whatever the history's size. The archive stays restorable
    (`history_restore`) until retention purges it (`history_purge_archived`). Only refresh
    operations call this, after checking that no run is active.
    """
    Ingestion.objects.filter(pk=ingestion.pk).update(history_generation=F("history_generation") + 1)
    ingestion.refresh_from_db(fields=["history_generation"])


HISTORY_COPY_COLUMNS = (
    "ingestion_id",
    "path",
    "size_bytes",
    "modified_at",
    "modified_ns",
    "etag",
    "rows",
    "run_id",
    "loaded_at",
)
# Paths per DELETE: SQLite bounds a statement's parameters.
PATH_CHUNK = 500


def history_replace_scope(*, ingestion: Ingestion, paths: list[str]) -> None:
    """Take `paths` out of the history in force, keeping the rest, for a selective refresh
    (whose run writes their new entries next). Call it in a transaction.

    The entries in force are copied into a new generation less `paths`, and the old one is
    archived like a cleared history: `history_restore` brings it back whole (undo), and
    retention purges it. One INSERT ... SELECT whatever the history's size.
    """
    old = Ingestion.objects.filter(pk=ingestion.pk).values_list("history_generation", flat=True)
    old = old.get()
    table = connection.ops.quote_name(ProcessedFile._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(column) for column in HISTORY_COPY_COLUMNS)
    generation = connection.ops.quote_name("generation")
    ingestion_column = connection.ops.quote_name("ingestion_id")
    with connection.cursor() as cursor:
        # Only quoted names of our own table and columns are formatted in; values are params.
        cursor.execute(
            f"INSERT INTO {table} ({columns}, {generation}) "  # noqa: S608
            f"SELECT {columns}, %s FROM {table} "
            f"WHERE {ingestion_column} = %s AND {generation} = %s",
            [old + 1, ingestion.pk, old],
        )
    for start in range(0, len(paths), PATH_CHUNK):
        ProcessedFile.all_generations.filter(
            ingestion=ingestion, generation=old + 1, path__in=paths[start : start + PATH_CHUNK]
        )._raw_delete(ProcessedFile.all_generations.db)
    Ingestion.objects.filter(pk=ingestion.pk).update(history_generation=old + 1)
    ingestion.refresh_from_db(fields=["history_generation"])


def history_mark(*, ingestion: Ingestion) -> dict:
    """Where the history stands now: what `history_restore` brings it back to."""
    last = ProcessedFile.all_generations.filter(ingestion=ingestion).aggregate(last=Max("pk"))
    generation = (
        Ingestion.objects.filter(pk=ingestion.pk).values_list("history_generation", flat=True).get()
    )
    return {"generation": generation, "last_id": last["last"] or 0}


def history_restore(*, ingestion: Ingestion, mark: dict) -> int:
    """Put the history back where `mark` found it: rows recorded since are deleted and the
    generation in force then is in force again. Call it in a transaction.

    Returns:
        How many rows recorded since were deleted.
    """
    removed = ProcessedFile.all_generations.filter(
        ingestion=ingestion, pk__gt=mark["last_id"]
    )._raw_delete(ProcessedFile.all_generations.db)
    Ingestion.objects.filter(pk=ingestion.pk).update(history_generation=mark["generation"])
    ingestion.refresh_from_db(fields=["history_generation"])
    return removed


def history_purge_archived(*, ingestion: Ingestion, keep_from: int) -> int:
    """Delete archived generations older than `keep_from`: nothing can restore them now."""
    # A raw delete: history rows have no signals or cascades, and it stays one statement
    # even for millions of rows.
    return ProcessedFile.all_generations.filter(
        ingestion=ingestion, generation__lt=keep_from
    )._raw_delete(ProcessedFile.all_generations.db)
