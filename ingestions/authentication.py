"""API authentication: `Authorization: Bearer <key>` against the users' named API tokens."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from .tokens import token_authenticate

KEYWORD = "Bearer"


class BearerTokenAuthentication(BaseAuthentication):
    """A request with no `Authorization: Bearer` header is left to the next authenticator
    (the console's session); one with a malformed header or an unknown key is refused.
    Refusals never echo the key."""

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) == 1:
            raise AuthenticationFailed("Invalid Authorization header: no token after 'Bearer'.")
        if len(parts) > 2:
            raise AuthenticationFailed(
                "Invalid Authorization header: the token must not contain spaces."
            )
        try:
            key = parts[1].decode()
        except UnicodeDecodeError:
            raise AuthenticationFailed(
                "Invalid Authorization header: the token has invalid characters."
            ) from None
        found = token_authenticate(key)
        if found is None:
            raise AuthenticationFailed("Invalid or revoked token.")
        return found

    def authenticate_header(self, request):
        # A 401 carries `WWW-Authenticate: Bearer` (without it DRF would answer 403).
        return KEYWORD


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of `BearerTokenAuthentication` (drf-spectacular cannot
    infer one for a custom class)."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token made on the console's API tokens page (`alc_...`).",
        }
