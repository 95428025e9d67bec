"""Writes for tenants: creating tenants, issuing and revoking keys, changing settings."""

import copy
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from tenants.models import ApiKey, AuditLogEntry, Plan, Tenant, default_tenant_settings

KEY_PREFIX = "sk-"


def api_key_hash(secret: str) -> str:
    """Keyed hash of an API key secret (HMAC-SHA256 with the server's pepper)."""
    return hmac.new(
        settings.API_KEY_PEPPER.encode(), secret.encode(), hashlib.sha256
    ).hexdigest()


def api_key_create(
    *, tenant: Tenant, access: str = ApiKey.READ_WRITE, name: str = "", created_by=None
) -> tuple[ApiKey, str]:
    """Issue a key. Returns the row and the secret, which is never stored in clear."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        access=access,
        prefix=secret[:10],
        hashed_secret=api_key_hash(secret),
        created_by=created_by,
    )
    return key, secret


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def tenant_create(*, slug: str, name: str = "", plan_slug: str = "pro") -> tuple[Tenant, str]:
    """Create a tenant with one read-write API key; returns the tenant and the key's secret.

    The slug must be a plain slug: storage paths are built from it (`tenants/<slug>/...`), so
    `../globex` would point into another tenant's files. Raises ValidationError otherwise.
    """
    validate_slug(slug)
    if len(slug) > Tenant._meta.get_field("slug").max_length:
        raise ValidationError("The slug is too long.", code="invalid")
    plan = Plan.objects.get(slug=plan_slug)
    tenant = Tenant.objects.create(
        slug=slug, name=name or slug, plan=plan, webhook_secret=secrets.token_hex(32)
    )
    _, secret = api_key_create(tenant=tenant, name="initial key")
    return tenant, secret


# Apps further down the dependency chain (adapters) validate the parts of the settings they own
# (the A/B split) without tenants importing them: they register a validator here at start-up.
SettingsValidator = Callable[[Tenant, Any], Any]
_settings_validators: dict[str, SettingsValidator] = {}


def tenant_settings_register_validator(key: str, validator: SettingsValidator) -> None:
    _settings_validators[key] = validator


def tenant_settings_validators() -> dict[str, SettingsValidator]:
    return dict(_settings_validators)


@transaction.atomic
def tenant_settings_update(*, tenant: Tenant, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge already-validated changes into the tenant's settings (one level deep)."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    merged = copy.deepcopy(default_tenant_settings())
    merged.update(copy.deepcopy(tenant.settings or {}))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    tenant.settings = merged
    tenant.save(update_fields=["settings"])
    return merged


def tenant_settings_change(
    *, tenant: Tenant, changes: dict[str, Any], actor: str, ip_address: str | None = None,
    via: str = "",
) -> dict[str, Any]:
    """Validate, store and audit a settings change: the one write path of the API's PATCH and
    the dashboard's forms, so both apply the same rules and leave the same audit trail.

    `changes` has its types checked already (serializer or form); the rules of the sections
    other apps own (the A/B split's versions and sum) run here through their registered
    validators. A refusal is InvalidInput `validation_error` with the per-section reasons, the
    same answer the API gives for a mistyped field. Returns the stored document.
    """
    from rest_framework.exceptions import ValidationError as FieldErrors

    from tenants.errors import InvalidInput

    validated = dict(changes)
    errors: dict[str, Any] = {}
    for key, validator in tenant_settings_validators().items():
        if key in validated:
            try:
                validated[key] = validator(tenant, validated[key])
            except FieldErrors as exc:
                errors[key] = exc.detail
    if errors:
        raise InvalidInput("validation_error", "The request has invalid fields.", details=errors)
    updated = tenant_settings_update(tenant=tenant, changes=validated)
    tenant.settings = updated
    details: dict[str, Any] = {"changed": sorted(validated)}
    if via:
        details["via"] = via
    audit_log_record(action="settings.updated", actor=actor, ip_address=ip_address,
                     tenant=tenant, details=details)
    return updated


def audit_log_record(
    *, action: str, actor: str, tenant: Tenant | None = None, ip_address: str | None = None,
    target: str = "", details: dict | None = None,
) -> AuditLogEntry:
    return AuditLogEntry.objects.create(
        tenant=tenant, action=action, actor=actor, ip_address=ip_address,
        target=target, details=details or {},
    )


def audit_actor_from_request(request) -> tuple[str, str | None]:
    """Who made a request and from where, for the audit log."""
    ip = request.META.get("REMOTE_ADDR")
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return f"key:{key.prefix}", ip
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.get_username()}", ip
    return "anonymous", ip
