"""Errors of refresh operations: each one a code the API maps to an HTTP status."""

from ingestions.errors import (
    AutoloaderError,
    ConfirmationRequiredError,
    RateLimitedError,
    RefreshInProgressError,
    TableProtectedError,
)

# Raised by the ingestion services too (runs, deleting an ingestion, previews), so they
# live there.
__all__ = [
    "ConfirmationRequiredError",
    "RateLimitedError",
    "RefreshInProgressError",
    "TableProtectedError",
]


class DryRunRequiredError(AutoloaderError):
    """The operation costs more than the threshold: present a recent dry-run's plan_id."""

    error_code = "DRY_RUN_REQUIRED"
    status_code = 400
    help = (
        "Call again with dry_run=true, review the impact, then send its plan_id with confirm=true."
    )


class PlanStaleError(AutoloaderError):
    """The impact grew materially since the dry-run whose plan_id was presented."""

    error_code = "PLAN_STALE"
    status_code = 409
    help = "Run the dry-run again, review the new impact, and send the new plan_id."


class OperationNotFoundError(AutoloaderError):
    """No refresh operation with this id is visible to the caller's tenant."""

    error_code = "OPERATION_NOT_FOUND"
    status_code = 404
    help = "Check the operation id returned as operation_id by the refresh call."


class OperationNotResumableError(AutoloaderError):
    """The operation is not waiting to be finished (done, in flight, or superseded)."""

    error_code = "OPERATION_NOT_RESUMABLE"
    status_code = 409
    help = "Only a partial_failure or failed operation, the latest on its ingestion, resumes."


class OperationNotDecidableError(AutoloaderError):
    """The operation does not wait for a publish-or-discard decision."""

    error_code = "OPERATION_NOT_DECIDABLE"
    status_code = 409
    help = "Only a zero-downtime refresh whose run ended with failed files waits for one."


class OperationNotUndoableError(AutoloaderError):
    """The operation cannot be undone (nothing kept, window ended, a later change)."""

    error_code = "OPERATION_NOT_UNDOABLE"
    status_code = 409
    help = (
        "Only the latest change of an ingestion, within its retention window, is undone; "
        "undo later operations first. GET the operation's undo preview to see what blocks it."
    )


class RefreshApiDisabledError(AutoloaderError):
    """The refresh operations API is switched off (ENABLE_REFRESH_OPERATIONS_API)."""

    error_code = "REFRESH_API_DISABLED"
    status_code = 503
    help = "Use the granular endpoints, or ask an operator to enable the feature."


class IdempotencyKeyReusedError(AutoloaderError):
    """This Idempotency-Key was used before with another request body."""

    error_code = "IDEMPOTENCY_KEY_REUSED"
    status_code = 422
    help = "Use a new key for a different request."


class IdempotencyKeyInUseError(AutoloaderError):
    """A request with this Idempotency-Key is still being processed."""

    error_code = "IDEMPOTENCY_KEY_IN_USE"
    status_code = 409
    help = "Retry in a moment to get the first request's response."


class ScopeNotApplicableError(AutoloaderError):
    """A selective refresh cannot run as asked (its kind, mode or table does not allow it)."""

    error_code = "SCOPE_NOT_APPLICABLE"
    status_code = 409
    help = (
        "A scope applies to a zero-downtime full refresh (mode atomic, auto_run true) of a "
        "table that has rows; refresh without a scope otherwise."
    )


class BatchNotFoundError(AutoloaderError):
    """No batch refresh with this id in the caller's tenant."""

    error_code = "BATCH_NOT_FOUND"
    status_code = 404
    help = "Check the batch_id returned by POST /api/v1/refresh-batches."
