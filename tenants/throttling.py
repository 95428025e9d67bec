"""Per-API-key rate limits on the shared cache (Redis in deployment)."""

from rest_framework.throttling import SimpleRateThrottle

from tenants.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request, view):
        key = request.auth
        if isinstance(key, ApiKey):
            return self.cache_format % {"scope": self.scope, "ident": f"key{key.pk}"}
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
