"""Reads for adapter versions: lists, lookups by label, what serves a tenant right now."""

from __future__ import annotations

from django.db.models import QuerySet

from adapters.models import AdapterVersion
from adapters.services import ab_test_arms, parse_version_label
from tenants.api.errors import ApiError
from tenants.models import Tenant


def adapter_version_list(*, tenant: Tenant, include_archived: bool = True) -> QuerySet:
    """The tenant's versions, newest first (the order a user scans a version list in)."""
    qs = AdapterVersion.objects.filter(tenant=tenant).select_related("job", "parent")
    if not include_archived:
        qs = qs.filter(status=AdapterVersion.READY)
    return qs.order_by("-number")


def adapter_version_get(*, tenant: Tenant, label: str) -> AdapterVersion:
    """The tenant's version `label` ("v3"); 404 envelope when it is not one of its versions."""
    number = parse_version_label(label)
    version = None
    if number is not None:
        version = (AdapterVersion.objects.select_related("job", "parent")
                   .filter(tenant=tenant, number=number).first())
    if version is None:
        raise ApiError("version_not_found", f"No adapter version {label!r} for this tenant.",
                       status_code=404)
    return version


def adapter_version_active(*, tenant: Tenant) -> AdapterVersion | None:
    return AdapterVersion.objects.filter(tenant=tenant, is_active=True).first()


def ab_weights_of(tenant: Tenant) -> dict[str, float]:
    """Traffic weight per version label in the enabled A/B split ({} when none runs)."""
    return ab_test_arms(tenant)


# --- the dashboards' reads ------------------------------------------------------------------


def adapter_version_current(*, tenant: Tenant) -> AdapterVersion | None:
    """The version serving the tenant by default right now (None before the first one)."""
    return AdapterVersion.objects.filter(tenant=tenant, is_active=True).first()


def adapter_version_of_job(*, job) -> AdapterVersion | None:
    """The version a training job produced, or None (failed, cancelled, still running)."""
    return AdapterVersion.objects.filter(job=job).first()


def adapter_versions_current_by_tenant() -> dict[int, AdapterVersion]:
    """Every tenant's active version, by tenant id (operators' overview)."""
    return {v.tenant_id: v for v in AdapterVersion.objects.filter(is_active=True)}
