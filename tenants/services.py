"""Writes for tenants: creating tenants, issuing and revoking keys, changing settings."""

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from tenants.models import ApiKey, AuditLogEntry, Plan, Tenant

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


# The settings document of `GET/PATCH .../settings` is composed of sections that the apps further
# down the dependency chain own (adapters: the A/B split and auto-promotion; training: automatic
# training, the compute backend, the base model), each stored in that app's own model and written
# by its own service. The tenants app imports none of them: each registers its section here at
# start-up (AppConfig.ready), and the document and the change service are composed from them.
SettingsValidator = Callable[[Tenant, Any], Any]
_settings_validators: dict[str, SettingsValidator] = {}


@dataclass(frozen=True)
class SettingsSection:
    """One app's part of the settings document.

    `reader(tenant)` returns `{key: value}` for its keys (the defaults when nothing is stored,
    without writing). `writer(tenant=, changes=, actor=, ip_address=, audit=)` validates and
    stores a change of some of its keys, raising InvalidInput `validation_error` with per-key
    details on a refusal; with `audit=False` it leaves the general entry to the caller.
    """

    keys: tuple[str, ...]
    reader: Callable[[Tenant], dict[str, Any]]
    writer: Callable[..., Any]


_settings_sections: dict[tuple[str, ...], SettingsSection] = {}


def tenant_settings_register_section(
    *, keys: tuple[str, ...], reader: Callable[[Tenant], dict[str, Any]],
    writer: Callable[..., Any],
) -> None:
    """Register an app's settings section (idempotent: keyed by its keys)."""
    _settings_sections[tuple(keys)] = SettingsSection(tuple(keys), reader, writer)


def tenant_settings_sections() -> list[SettingsSection]:
    return list(_settings_sections.values())


def tenant_settings_register_validator(key: str, validator: SettingsValidator) -> None:
    """A value check the API's serializer runs on `key` (so its refusal has the serializer's
    shape); the owning app's writer runs the same check for every other caller. The check
    returns the value to store or raises `tenants.settings_sections.SettingInvalid`."""
    _settings_validators[key] = validator


def tenant_settings_validators() -> dict[str, SettingsValidator]:
    return dict(_settings_validators)


def tenant_settings_change(
    *, tenant: Tenant, changes: dict[str, Any], actor: str, ip_address: str | None = None,
    via: str = "",
) -> dict[str, Any]:
    """Validate, store and audit a settings change: the one write path of the API's PATCH and
    the dashboard's forms, so both apply the same rules and leave the same audit trail.

    `changes` has its types checked already (serializer or form); each section's owning app
    validates its own keys in its writer (the A/B split's versions and sum, a configured base
    model). A refusal is InvalidInput `validation_error` with the per-section reasons, the same
    answer the API gives for a mistyped field, and nothing is stored (one transaction, the
    tenant row locked so concurrent changes apply one after the other). Returns the document.
    """
    from tenants.errors import InvalidInput
    from tenants.selectors import tenant_settings_document
    from tenants.settings_sections import settings_section_validate

    sections = tenant_settings_sections()
    # keys no section owns are refused here; each section's writer checks its own values
    settings_section_validate(tenant=tenant, changes=changes,
                              checks={key: None for section in sections for key in section.keys})
    errors: dict[str, Any] = {}
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        for section in sections:
            part = {key: changes[key] for key in section.keys if key in changes}
            if not part:
                continue
            try:
                section.writer(tenant=tenant, changes=part, actor=actor, ip_address=ip_address,
                               audit=False)
            except InvalidInput as exc:
                errors.update(exc.details or {})
        if errors:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details=errors)
        details: dict[str, Any] = {"changed": sorted(changes)}
        if via:
            details["via"] = via
        audit_log_record(action="settings.updated", actor=actor, ip_address=ip_address,
                         tenant=tenant, details=details)
    return tenant_settings_document(tenant=tenant)


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
