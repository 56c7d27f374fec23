"""The API's one exception handler: domain errors and DRF errors become `{detail, error_code}`.

Each domain error carries its code and its HTTP status (`AutoloaderError.error_code`,
`.status_code`, DRF's way); the console reads the same two. Framework errors keep DRF's
status and get a code here."""

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
    *,
    status_code: int,
    detail: str,
    error_code: str,
    help_text: str = "",
    extra: dict | None = None,
    headers=None,
) -> Response:
    body = {"detail": detail, "error_code": error_code}
    if help_text:
        body["help"] = help_text
    body.update(extra or {})
    return Response(body, status=status_code, headers=headers)


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
            status_code=exc.status_code,
            detail=detail,
            error_code=exc.error_code,
            help_text=exc.help,
            extra=exc.extra,
            headers=headers,
        )
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            status_code=status.HTTP_400_BAD_REQUEST,
            detail=_validation_summary(exc.detail),
            error_code="VALIDATION_ERROR",
            extra={"errors": exc.detail},
        )
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body above DATA_UPLOAD_MAX_MEMORY_SIZE when DRF asks for
        # it; the client sent too much, so it is theirs to fix, not a server error.
        return error_response(
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
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
            status_code=status.HTTP_400_BAD_REQUEST,
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
            status_code=status.HTTP_403_FORBIDDEN,
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
            return error_response(
                status_code=exc.status_code,
                detail=str(exc.detail),
                error_code=error_code,
                help_text=help_text,
                headers=headers,
            )
    if isinstance(exc, exceptions.APIException):
        return error_response(
            status_code=exc.status_code, detail=str(exc.detail), error_code="INTERNAL_ERROR"
        )
    # Not swallowed: logged with its traceback, answered as JSON so clients can parse it.
    logger.exception("unhandled API error", exc_info=exc)
    return error_response(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        detail="Internal server error.",
        error_code="INTERNAL_ERROR",
    )


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
