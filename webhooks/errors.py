"""Domain errors of webhooks, each with the error code the API maps to HTTP."""

from ingestions.errors import AutoloaderError


class WebhookNotFoundError(AutoloaderError):
    """No webhook with this id is visible to the caller's tenant."""

    error_code = "WEBHOOK_NOT_FOUND"
    help = "List your tenant's webhooks with GET /api/v1/webhooks."


class WebhookUrlNotAllowedError(AutoloaderError):
    """The webhook URL is not an allowed destination."""

    error_code = "WEBHOOK_URL_NOT_ALLOWED"
    help = (
        "Use an http(s) URL without credentials whose host resolves to public addresses; "
        "private, loopback and link-local hosts need the platform administrator to list "
        "them in AUTOLOADER_WEBHOOK_ALLOWED_HOSTS."
    )
