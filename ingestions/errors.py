"""Domain errors of ingestions: plain exceptions, each with an error code the API maps to HTTP."""


class AutoloaderError(Exception):
    """Base of every domain error; `error_code` and `help` reach the API client as they are."""

    error_code = "INTERNAL_ERROR"
    status_code = 500  # each error says its own HTTP status
    help = ""

    def __init__(self, message: str = "", **extra):
        super().__init__(message or (self.__doc__ or "").strip())
        self.extra = extra

    @property
    def detail(self) -> str:
        return str(self)


class IngestionNotFoundError(AutoloaderError):
    """No ingestion with this id is visible to the caller's tenant."""

    error_code = "INGESTION_NOT_FOUND"
    status_code = 404
    help = "Check the ingestion id; list yours with GET /api/v1/ingestions."


class RunNotFoundError(AutoloaderError):
    """No run with this id is visible to the caller's tenant."""

    error_code = "RUN_NOT_FOUND"
    status_code = 404
    help = "Check the run id; list an ingestion's runs with GET /api/v1/ingestions/{id}/runs."


class VerifyJobNotFoundError(AutoloaderError):
    """No verification with this id for this ingestion is visible to the caller's tenant."""

    error_code = "VERIFY_JOB_NOT_FOUND"
    status_code = 404
    help = 'Start one with POST /api/v1/ingestions/{id}/verify {"async": true}.'


class RunInProgressError(AutoloaderError):
    """The ingestion already has a queued or running run."""

    error_code = "RUN_IN_PROGRESS"
    status_code = 409
    help = "Wait for the current run to complete or cancel it first."

    def __init__(self, message: str = "", *, current_run_id: str):
        super().__init__(message, current_run_id=current_run_id)
        self.current_run_id = current_run_id


class RunNotCancellableError(AutoloaderError):
    """The run has already finished and cannot be cancelled."""

    error_code = "RUN_NOT_CANCELLABLE"
    status_code = 409
    help = "Only QUEUED or RUNNING runs can be cancelled."


class IngestionConflictError(AutoloaderError):
    """An ingestion with this id already exists in the tenant."""

    error_code = "INGESTION_EXISTS"
    status_code = 409
    help = "Choose another id, or omit it to get a generated one."


class FailedFileNotFoundError(AutoloaderError):
    """No failed file with this id in the ingestion."""

    error_code = "FAILED_FILE_NOT_FOUND"
    status_code = 404
    help = "List the ingestion's failed files with GET /api/v1/ingestions/{id}/failed-files."


class FailedFileStateError(AutoloaderError):
    """The file is not in the state the action needs (already quarantined, not quarantined)."""

    error_code = "FAILED_FILE_STATE"
    status_code = 409
    help = "Read the file's state again; quarantine a failed file, release a quarantined one."


class PermissionDeniedError(AutoloaderError):
    """The caller's role does not allow this action."""

    error_code = "INSUFFICIENT_PERMISSIONS"
    status_code = 403
    help = "Ask an admin of your tenant for a role that allows it."


class RunCancelledError(AutoloaderError):
    """The run was cancelled by a user while it executed."""

    error_code = "RUN_CANCELLED"


class RunOwnershipLostError(AutoloaderError):
    """Another worker took the run over (this one was presumed dead); stop without committing."""

    error_code = "RUN_OWNERSHIP_LOST"


class SourceUnavailableError(AutoloaderError):
    """The source location does not exist, is not a directory, or cannot be listed."""

    error_code = "SOURCE_UNAVAILABLE"
    status_code = 400
    help = "Check the source URI and that the service can read it."


class FileReadError(AutoloaderError):
    """A source file could not be read or parsed in the ingestion's format."""

    error_code = "FILE_READ_ERROR"
    status_code = 400
    help = "Fix or remove the file, or adjust the ingestion's format and reader options."

    def __init__(self, path: str, reason: str):
        super().__init__(f"Cannot read {path}: {reason}", path=path, reason=reason)
        self.path = path
        self.reason = reason


class SchemaMismatchError(AutoloaderError):
    """The data does not fit the target table's schema."""

    error_code = "SCHEMA_MISMATCH"
    status_code = 400
    help = (
        "Only additive changes and safe widenings are applied automatically; "
        "fix the file or full-refresh the table to take a new schema."
    )


class EngineUnavailableError(AutoloaderError):
    """The table engine (catalog or cluster) cannot be reached."""

    error_code = "CLUSTER_UNAVAILABLE"
    status_code = 500
    help = "Retry later; if it persists, check the catalog and warehouse settings."


class EngineError(AutoloaderError):
    """The table engine refused or failed an operation."""

    error_code = "ENGINE_ERROR"
    status_code = 500
    help = "Read the message for the engine's reason and retry once it is fixed."


class RefreshInProgressError(AutoloaderError):
    """Another refresh operation on this ingestion has not finished."""

    error_code = "REFRESH_IN_PROGRESS"
    status_code = 409
    help = "Wait for the current operation to finish; see GET /api/v1/refresh-operations/{id}."

    def __init__(self, message: str = "", *, current_operation_id: str):
        super().__init__(message, current_operation_id=current_operation_id)
        self.current_operation_id = current_operation_id


class SourceNotAllowedError(AutoloaderError):
    """The source is not inside one of the tenant's storage locations."""

    error_code = "SOURCE_NOT_ALLOWED"
    status_code = 400
    help = (
        "Sources must lie inside a storage location granted to your tenant. A platform "
        "administrator grants locations (Django admin, or manage.py grant_location); ask "
        "yours, or choose a source inside one of your locations (GET /api/v1/locations)."
    )


class SourceListingLimitError(AutoloaderError):
    """Listing the source went past the entry or time bound."""

    error_code = "SOURCE_LISTING_LIMIT"
    status_code = 400
    help = (
        "Point the source at a narrower folder or set a pattern; an operator can raise "
        "AUTOLOADER_LISTING_MAX_ENTRIES / AUTOLOADER_LISTING_MAX_SECONDS."
    )


class TableExistsError(AutoloaderError):
    """The destination table already exists and no ingestion owns it."""

    error_code = "TABLE_EXISTS"
    status_code = 409
    help = (
        'Say what to do with its rows: "existing_table": "adopt" keeps them and records the '
        'files they came from, so nothing loads twice; "replace" drops the table first.'
    )


class ConfirmationRequiredError(AutoloaderError):
    """A destructive call came without `confirm: true`."""

    error_code = "CONFIRMATION_REQUIRED"
    status_code = 400
    help = "This operation is destructive. Explicitly set confirm=true to proceed."


class TableProtectedError(AutoloaderError):
    """The ingestion is protected: destructive operations are refused."""

    error_code = "TABLE_PROTECTED"
    status_code = 423
    help = 'An admin can lift protection with PATCH /api/v1/ingestions/{id} {"protected": false}.'


class RateLimitedError(AutoloaderError):
    """Too many calls of this kind by this user or tenant: wait before retrying."""

    error_code = "RATE_LIMITED"
    status_code = 429
    help = "Wait for the time in Retry-After before retrying."

    def __init__(self, message: str = "", *, retry_after: int):
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after
