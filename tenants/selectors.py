"""Reads for tenants."""

from django.utils import timezone

from tenants.models import ApiKey, Tenant
from tenants.services import api_key_hash


def api_key_get_active(*, secret: str) -> ApiKey | None:
    """The active key for a presented secret, or None. Lookup is by keyed hash."""
    try:
        key = ApiKey.objects.select_related("tenant", "tenant__plan").get(
            hashed_secret=api_key_hash(secret)
        )
    except ApiKey.DoesNotExist:
        return None
    if key.revoked_at is not None:
        return None
    return key


def api_key_touch(key: ApiKey) -> None:
    """Record last use, at most once a minute per key to spare the database."""
    now = timezone.now()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now


def tenants_for_user(user) -> list[Tenant]:
    if user.is_staff:
        return list(Tenant.objects.select_related("plan"))
    return list(Tenant.objects.filter(memberships__user=user).select_related("plan"))
