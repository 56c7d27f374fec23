"""The API's one exception handler: domain errors and DRF errors become `{detail, error_code}`."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.urls import Resolver404, resolve
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestions.engines.base import redact_server_paths
from ingestions.errors import AutoloaderError

logger = logging.getLogger("ingestions.api")

# One table: error code -> HTTP status. Codes not listed are server errors.
STATUS_BY_ERROR_CODE = {
    "VALIDATION_ERROR": status.HTTP_400_BAD_REQUEST,
    "CONFIRMATION_REQUIRED": status.HTTP_400_BAD_REQUEST,
    "DRY_RUN_REQUIRED": status.HTTP_400_BAD_REQUEST,
    "SOURCE_UNAVAILABLE": status.HTTP_400_BAD_REQUEST,
    "SOURCE_NOT_ALLOWED": status.HTTP_400_BAD_REQUEST,
    "WEBHOOK_URL_NOT_ALLOWED": status.HTTP_400_BAD_REQUEST,
    "SOURCE_LISTING_LIMIT": status.HTTP_400_BAD_REQUEST,
    "FILE_READ_ERROR": status.HTTP_400_BAD_REQUEST,
    "SCHEMA_MISMATCH": status.HTTP_400_BAD_REQUEST,
    "NOT_AUTHENTICATED": status.HTTP_401_UNAUTHORIZED,
    "AUTHENTICATION_FAILED": status.HTTP_401_UNAUTHORIZED,
    "INSUFFICIENT_PERMISSIONS": status.HTTP_403_FORBIDDEN,
    "CSRF_FAILED": status.HTTP_403_FORBIDDEN,
    "TENANT_NOT_FOUND": status.HTTP_403_FORBIDDEN,
    "INGESTION_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "RUN_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "OPERATION_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "FAILED_FILE_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "BATCH_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "WEBHOOK_NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "NOT_FOUND": status.HTTP_404_NOT_FOUND,
    "METHOD_NOT_ALLOWED": status.HTTP_405_METHOD_NOT_ALLOWED,
    "NOT_ACCEPTABLE": status.HTTP_406_NOT_ACCEPTABLE,
    "RUN_IN_PROGRESS": status.HTTP_409_CONFLICT,
    "RUN_NOT_CANCELLABLE": status.HTTP_409_CONFLICT,
    "FAILED_FILE_STATE": status.HTTP_409_CONFLICT,
    "SCOPE_NOT_APPLICABLE": status.HTTP_409_CONFLICT,
    "INGESTION_EXISTS": status.HTTP_409_CONFLICT,
    "TABLE_EXISTS": status.HTTP_409_CONFLICT,
    "REFRESH_IN_PROGRESS": status.HTTP_409_CONFLICT,
    "PLAN_STALE": status.HTTP_409_CONFLICT,
    "OPERATION_NOT_RESUMABLE": status.HTTP_409_CONFLICT,
    "OPERATION_NOT_DECIDABLE": status.HTTP_409_CONFLICT,
    "OPERATION_NOT_UNDOABLE": status.HTTP_409_CONFLICT,
    "IDEMPOTENCY_KEY_IN_USE": status.HTTP_409_CONFLICT,
    "WEBHOOK_LIMIT_REACHED": status.HTTP_409_CONFLICT,
    "REQUEST_TOO_LARGE": status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "IDEMPOTENCY_KEY_REUSED": status.HTTP_422_UNPROCESSABLE_ENTITY,
    "TABLE_PROTECTED": status.HTTP_423_LOCKED,
    "UNSUPPORTED_MEDIA_TYPE": status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    "RATE_LIMITED": status.HTTP_429_TOO_MANY_REQUESTS,
    "CLUSTER_UNAVAILABLE": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "ENGINE_ERROR": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "SPARK_ERROR": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "PARTIAL_FAILURE": status.HTTP_500_INTERNAL_SERVER_ERROR,
    "REFRESH_API_DISABLED": status.HTTP_503_SERVICE_UNAVAILABLE,
    "INTERNAL_ERROR": status.HTTP_500_INTERNAL_SERVER_ERROR,
}

_DRF_ERROR_CODES = [
    (exceptions.NotAuthenticated, "NOT_AUTHENTICATED", ""),
    (
        exceptions.AuthenticationFailed,
        "AUTHENTICATION_FAILED",
        "Send 'Authorization: Bearer <token>'.",
    ),
    (exceptions.PermissionDenied, "INSUFFICIENT_PERMISSIONS", "Contact an admin of your tenant."),
    (exceptions.NotFound, "NOT_FOUND", ""),
    (exceptions.MethodNotAllowed, "METHOD_NOT_ALLOWED", ""),
    (exceptions.NotAcceptable, "NOT_ACCEPTABLE", ""),
    (exceptions.UnsupportedMediaType, "UNSUPPORTED_MEDIA_TYPE", "Send JSON."),
    (exceptions.Throttled, "RATE_LIMITED", "Wait before retrying."),
    (exceptions.ParseError, "VALIDATION_ERROR", "The body must be valid JSON."),
]


def error_response(
    *, detail: str, error_code: str, help_text: str = "", extra: dict | None = None, headers=None
) -> Response:
    body = {"detail": detail, "error_code": error_code}
    if help_text:
        body["help"] = help_text
    body.update(extra or {})
    return Response(
        body,
        status=STATUS_BY_ERROR_CODE.get(error_code, status.HTTP_500_INTERNAL_SERVER_ERROR),
        headers=headers,
    )


# The engine's failures may quote where its warehouse, manifests or catalog live: never
# shown to a client (`ingestions.engines.base.redact_server_paths`).
ENGINE_ERROR_CODES = {"ENGINE_ERROR", "CLUSTER_UNAVAILABLE", "SPARK_ERROR"}


def api_exception_handler(exc, context):
    if isinstance(exc, AutoloaderError):
        headers = {}
        if getattr(exc, "current_run_id", None):
            headers["X-Current-Run-ID"] = exc.current_run_id
        if getattr(exc, "retry_after", None):
            headers["Retry-After"] = str(exc.retry_after)
        detail = exc.detail
        if exc.error_code in ENGINE_ERROR_CODES:
            detail = redact_server_paths(detail)
        return error_response(
            detail=detail,
            error_code=exc.error_code,
            help_text=exc.help,
            extra=exc.extra,
            headers=headers,
        )
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            detail=_validation_summary(exc.detail),
            error_code="VALIDATION_ERROR",
            extra={"errors": exc.detail},
        )
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body above DATA_UPLOAD_MAX_MEMORY_SIZE when DRF asks for
        # it; the client sent too much, so it is theirs to fix, not a server error.
        return error_response(
            detail=f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} "
            "bytes.",
            error_code="REQUEST_TOO_LARGE",
            help_text="Send a smaller body.",
        )
    if isinstance(exc, DjangoValidationError):
        errors = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        return error_response(
            detail=_validation_summary(errors),
            error_code="VALIDATION_ERROR",
            extra={"errors": errors},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.PermissionDenied) and "CSRF" in str(exc.detail):
        return error_response(
            detail=str(exc.detail),
            error_code="CSRF_FAILED",
            help_text="Send the X-CSRFToken header from the page, or use a Bearer token.",
        )
    for exc_class, error_code, help_text in _DRF_ERROR_CODES:
        if isinstance(exc, exc_class):
            headers = {}
            if getattr(exc, "auth_header", None):
                headers["WWW-Authenticate"] = exc.auth_header
            if getattr(exc, "wait", None):
                headers["Retry-After"] = str(int(exc.wait))
            response = error_response(
                detail=str(exc.detail), error_code=error_code, help_text=help_text, headers=headers
            )
            response.status_code = exc.status_code
            return response
    if isinstance(exc, exceptions.APIException):
        response = error_response(detail=str(exc.detail), error_code="INTERNAL_ERROR")
        response.status_code = exc.status_code
        return response
    # Not swallowed: logged with its traceback, answered as JSON so clients can parse it.
    logger.exception("unhandled API error", exc_info=exc)
    return error_response(detail="Internal server error.", error_code="INTERNAL_ERROR")


def _validation_summary(errors) -> str:
    """A one-line reading of field errors: 'source.format: "xml" is not a valid choice.'"""
    parts: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list):
            for item in value:
                walk(prefix, item)
        else:
            parts.append(
                f"{prefix}: {value}" if prefix and prefix != "non_field_errors" else str(value)
            )

    walk("", errors)
    return "Invalid request. " + " ".join(parts[:5]) if parts else "Invalid request."


class ApiNotFoundView(APIView):
    """Every path under /api/ that names no endpoint: the JSON 404 the API promises, for any
    method, in every mode (Django's own 404 page is HTML, and a debug page with DEBUG on)."""

    authentication_classes: list = []
    permission_classes: list = []
    schema = None  # not an endpoint: left out of the OpenAPI schema

    def _not_found(self, request, *args, **kwargs):
        detail = f"No API endpoint at {request.path}."
        if request.path.endswith("/") and _resolves(request.path.rstrip("/")):
            detail += f" Did you mean {request.path.rstrip('/')} (no trailing slash)?"
        raise exceptions.NotFound(detail)

    get = post = put = patch = delete = head = options = _not_found


def _resolves(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func.__name__ != ApiNotFoundView.__name__
