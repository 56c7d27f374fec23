"""Reads of refresh operations, scoped to a tenant."""

from django.db.models import Prefetch, QuerySet

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
