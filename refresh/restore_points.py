"""Restore points: what a refresh operation keeps, before its first change, so that undo can
bring the table and the processed-file history back (`refresh.undo`)."""

from datetime import timedelta

from django.utils import timezone

from ingestions.models import Ingestion
from ingestions.services import history_mark

from .models import OperationKind, RefreshOperation, Retention

UNDO_TAG_PREFIX = "autoloader_undo_"


def restore_point_name(operation: RefreshOperation) -> str:
    """The tag (or set-aside table suffix) holding what `operation` replaced."""
    return UNDO_TAG_PREFIX + operation.public_id.replace("-", "_")


def keeps_table_by_tag(operation: RefreshOperation) -> bool:
    # A zero-downtime refresh replaces the table at publish and a history clear leaves it:
    # both keep what was live under a tag; the others set the table aside when they drop it.
    return operation.kind == OperationKind.CLEAR_PROCESSED_FILES or operation.zero_downtime


def keep_restore_point(operation: RefreshOperation, *, ingestion: Ingestion, engine) -> None:
    """Before the first change: record where the history stands and hold the table's
    version, so that undo brings both back. Kinds that drop the table set it aside in
    their drop step instead (`_drop_table`)."""
    if operation.retain_days == 0 or operation.retention != Retention.NONE:
        return
    point = {
        "table_identifier": ingestion.table_identifier,
        "engine": ingestion.engine,
        "history": history_mark(ingestion=ingestion),
    }
    if keeps_table_by_tag(operation):
        name = restore_point_name(operation)
        point["table"] = engine.retain(ingestion.table_identifier, name=name)
        if operation.kind != OperationKind.CLEAR_PROCESSED_FILES:
            # Replaced at publish: its files are held only by the tag from then on.
            operation.retained_bytes = point["table"]["size_bytes"]
    operation.restore_point = point
    operation.retention = Retention.KEPT
    operation.retained_until = timezone.now() + timedelta(days=operation.retain_days)
    operation.save(
        update_fields=[
            "restore_point",
            "retention",
            "retained_until",
            "retained_bytes",
            "updated_at",
        ]
    )
