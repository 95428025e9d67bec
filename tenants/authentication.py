"""`Authorization: Bearer sk-...` authentication for the API."""

import hmac

from rest_framework import authentication, exceptions

from tenants.selectors import api_key_get_active, api_key_touch
from tenants.services import api_key_hash


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0].decode("latin-1") != self.keyword:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: expected 'Bearer sk-...'.",
                code="malformed_authorization",
            )
        try:
            secret = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(
                "Invalid API key.", code="invalid_api_key"
            ) from exc
        key = api_key_get_active(secret=secret)
        # Lookup is by hash; compare again in constant time so timing reveals nothing.
        if key is None or not hmac.compare_digest(key.hashed_secret, api_key_hash(secret)):
            raise exceptions.AuthenticationFailed(
                "Invalid or revoked API key.", code="invalid_api_key"
            )
        api_key_touch(key)
        return (ApiKeyUser(key), key)

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class ApiKeyUser:
    """The request.user of an API-key request: enough of a user for DRF and throttling."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, key):
        self.key = key
        self.pk = None
        self.id = None

    def get_username(self) -> str:
        return f"key:{self.key.prefix}"

    def __str__(self) -> str:
        return self.get_username()
