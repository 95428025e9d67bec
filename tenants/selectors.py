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


# --- the dashboards' reads (memberships, keys) --------------------------------------------------


def membership_get(*, user, slug: str):
    """The user's membership of the tenant `slug` (with tenant and plan), or None."""
    from tenants.models import Membership

    return (Membership.objects.select_related("tenant", "tenant__plan")
            .filter(user=user, tenant__slug=slug).first())


def membership_list_for_user(*, user):
    """Every membership of the user, by tenant slug."""
    from tenants.models import Membership

    return (Membership.objects.select_related("tenant", "tenant__plan")
            .filter(user=user).order_by("tenant__slug"))


def tenant_get_by_slug(*, slug: str) -> Tenant | None:
    return Tenant.objects.select_related("plan").filter(slug=slug).first()


def tenant_list() -> list[Tenant]:
    """Every tenant, by slug (operators' views)."""
    return list(Tenant.objects.order_by("slug"))


def api_key_list(*, tenant: Tenant):
    """The tenant's keys, newest first (revoked ones included: the page shows when)."""
    return ApiKey.objects.filter(tenant=tenant)


def api_key_get(*, tenant: Tenant, key_id: int) -> ApiKey | None:
    """The tenant's key `key_id`, or None (another tenant's key is as unknown as none)."""
    return ApiKey.objects.filter(tenant=tenant, pk=key_id).first()


def tenant_settings_document(*, tenant: Tenant) -> dict:
    """The settings document of `GET .../settings`: each registered section (the apps that own
    them store and default them), composed in registration order. Reads only, writes nothing."""
    from tenants.services import tenant_settings_sections

    document: dict = {}
    for section in tenant_settings_sections():
        document.update(section.reader(tenant))
    return document
