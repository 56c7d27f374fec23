"""Domain errors of webhooks, each with the error code the API maps to HTTP."""

from ingestions.errors import AutoloaderError


class WebhookNotFoundError(AutoloaderError):
    """No webhook with this id is visible to the caller's tenant."""

    error_code = "WEBHOOK_NOT_FOUND"
    status_code = 404
    help = "List your tenant's webhooks with GET /api/v1/webhooks."


class WebhookUrlNotAllowedError(AutoloaderError):
    """The webhook URL is not an allowed destination."""

    error_code = "WEBHOOK_URL_NOT_ALLOWED"
    status_code = 400
    help = (
        "Use an http(s) URL without credentials whose host resolves to public addresses; "
        "private, loopback and link-local hosts need the platform administrator to list "
        "them, with their port (host:port), in AUTOLOADER_WEBHOOK_ALLOWED_HOSTS."
    )


class WebhookLimitReachedError(AutoloaderError):
    """The tenant already has as many webhooks as AUTOLOADER_WEBHOOKS_PER_TENANT allows."""

    error_code = "WEBHOOK_LIMIT_REACHED"
    status_code = 409
    help = (
        "Delete a webhook you no longer need (one webhook can subscribe to several events), "
        "or ask the platform administrator to raise AUTOLOADER_WEBHOOKS_PER_TENANT."
    )
