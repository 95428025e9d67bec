"""Permissions: a valid key is required; writes need a read-write key."""

from rest_framework import exceptions, permissions

from tenants.models import ApiKey


class HasTenantApiKey(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated(
                "An API key is required: 'Authorization: Bearer sk-...'."
            )
        if request.method not in permissions.SAFE_METHODS and not key.can_write:
            raise exceptions.PermissionDenied(
                "This API key is read-only; use a read-write key for this call.",
                code="read_only_key",
            )
        return True
