"""Reads of refresh operations, scoped to a tenant."""

from django.db.models import Prefetch, Q, QuerySet

from ingestions.models import Ingestion, Tenant

from .errors import OperationNotFoundError
from .models import RefreshOperation, RefreshStep


def _with_steps(queryset: QuerySet[RefreshOperation]) -> QuerySet[RefreshOperation]:
    return queryset.select_related("run", "ingestion", "requested_by").prefetch_related(
        Prefetch("steps", queryset=RefreshStep.objects.order_by("position"))
    )


def operation_get(*, tenant: Tenant, operation_id: str) -> RefreshOperation:
    """One operation by public id.

    Raises:
        OperationNotFoundError: no such operation in this tenant (another tenant's included).
    """
    operation = _with_steps(
        RefreshOperation.objects.filter(tenant=tenant, public_id=operation_id)
    ).first()
    if operation is None:
        raise OperationNotFoundError("Refresh operation not found")
    return operation


def operation_list(*, ingestion: Ingestion) -> QuerySet[RefreshOperation]:
    return _with_steps(RefreshOperation.objects.filter(ingestion=ingestion))


def operations_behind_table(*, ingestion: Ingestion, overview: dict) -> dict:
    """The table page's snapshots and refs, each with the refresh operation behind it where
    there is one: a main snapshot its run published, a restore point it keeps for undo
    (`autoloader_undo_<id>`), a staging branch it builds (`autoloader_<id>`). One query;
    `overview` is `ingestions.selectors.table_overview`'s, annotated in place with an
    `refresh_operation` ({public_id, label}) and returned."""
    from .restore_points import restore_point_name
    from .steps import stage_name_for

    snapshots, refs = overview.get("snapshots") or [], overview.get("refs") or []
    run_ids = {row["run_id"] for row in snapshots if row.get("run_id")}
    named = {ref["name"] for ref in refs}
    if not run_ids and not named:
        return overview
    operations = RefreshOperation.objects.filter(ingestion=ingestion).select_related("run")
    operations = operations.filter(
        Q(run__public_id__in=run_ids) | Q(public_id__in=_operation_ids_of(named))
    )
    by_run, by_ref = {}, {}
    for operation in operations:
        shown = {"public_id": operation.public_id, "label": operation.label}
        if operation.run is not None:
            by_run[operation.run.public_id] = shown
        by_ref[restore_point_name(operation)] = by_ref[stage_name_for(operation)] = shown
    for row in snapshots:
        row["refresh_operation"] = by_run.get(row.get("run_id"))
    for ref in refs:
        ref["refresh_operation"] = by_ref.get(ref["name"])
    return overview


def _operation_ids_of(names: set[str]) -> set[str]:
    """The operation ids a ref name can stand for (restore point or staging branch)."""
    from .restore_points import UNDO_TAG_PREFIX
    from .steps import operation_id_of_stage

    ids = set()
    for name in names:
        if name.startswith(UNDO_TAG_PREFIX):
            ids.add(name.removeprefix(UNDO_TAG_PREFIX).replace("_", "-"))
        else:
            ids.add(operation_id_of_stage(name))
    return ids
