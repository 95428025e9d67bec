"""Writes for a tenant's adapter settings (the A/B split, auto-promotion of its winner and
auto-rollback): the one service that validates, stores and audits them. The API's PATCH and
the dashboard reach it through `tenants.services.tenant_settings_change` (the section registered in
AdaptersConfig.ready); read them with `adapters.selectors.adapter_settings_get`.

Every change of the split is recorded as `adapter.ab_test_changed` with the split before and
after, whoever made it (a PATCH, the dashboard, a promotion).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from adapters.models import AdapterSettings, AdapterVersion, parse_version_label
from adapters.services.versions import SYSTEM_ACTOR
from tenants.models import Tenant
from tenants.services import audit_log_record
from tenants.settings_sections import SettingInvalid, settings_section_validate

ADAPTER_SETTING_KEYS = ("lora_ab_test", "auto_promote_ab_winner", "auto_rollback")
AB_WEIGHT_TOLERANCE = 1e-6


def _ab_arms_normalise(tenant: Tenant, versions: dict,
                       errors: dict[str, list[str]]) -> dict[str, float]:
    """`{"v2": 0.5, ...}` with labels and weights checked; problems go into `errors` by label."""
    normalised: dict[str, float] = {}
    numbers: dict[str, int] = {}
    for label, weight in versions.items():
        number = parse_version_label(label)
        if number is None:
            errors.setdefault(str(label), []).append(
                "Not a version label; use the form 'v3'.")
            continue
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            errors.setdefault(str(label), []).append("Weight must be a number.")
            continue
        if not weight > 0:
            errors.setdefault(str(label), []).append(
                f"Weight must be positive (got {weight}).")
        key = f"v{number}"
        if key in normalised:
            errors.setdefault(str(label), []).append(f"{key} is named twice.")
        normalised[key] = float(weight)
        numbers[key] = number
    if numbers:
        found = {
            v.number: v for v in AdapterVersion.objects.filter(
                tenant=tenant, number__in=list(numbers.values()))
        }
        for key, number in numbers.items():
            version = found.get(number)
            if version is None:
                errors.setdefault(key, []).append(
                    f"Version {key} does not exist for this tenant.")
            elif version.is_archived:
                errors.setdefault(key, []).append(
                    f"Version {key} is archived and cannot serve traffic.")
    return normalised


def lora_ab_test_validate(tenant: Tenant, value: dict) -> dict:
    """Settings validator for `lora_ab_test` (registered with the tenants app at start-up).

    The split names versions of this tenant that are not archived; weights are positive and sum
    to 1; an enabled test needs at least two versions. Returns the normalised value; a refusal
    is SettingInvalid with the problems by version label (or `versions`).
    """
    if not isinstance(value, dict):
        raise SettingInvalid("Must be an object {enabled, versions}.")
    enabled = bool(value.get("enabled"))
    versions = value.get("versions") or {}
    if not isinstance(versions, dict):
        raise SettingInvalid({"versions": ["Must be a map version -> weight."]})
    errors: dict[str, list[str]] = {}
    normalised = _ab_arms_normalise(tenant, versions, errors)
    if enabled and len(normalised) < 2:
        errors.setdefault("versions", []).append(
            "An enabled A/B test needs at least 2 versions.")
    if normalised and not errors:
        total = sum(normalised.values())
        if abs(total - 1.0) > AB_WEIGHT_TOLERANCE:
            errors.setdefault("versions", []).append(
                f"Weights must sum to 1 (they sum to {total:g}).")
    if errors:
        raise SettingInvalid(errors)
    ordered = dict(sorted(normalised.items(), key=lambda kv: parse_version_label(kv[0]) or 0))
    return {"enabled": enabled, "versions": ordered}


def _boolean_check(tenant: Tenant, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingInvalid("Must be a valid boolean.")
    return value


ADAPTER_SETTING_CHECKS = {"lora_ab_test": lora_ab_test_validate,
                          "auto_promote_ab_winner": _boolean_check,
                          "auto_rollback": _boolean_check}


def adapter_settings_update(
    *, tenant: Tenant, changes: dict[str, Any], actor: str = SYSTEM_ACTOR,
    ip_address: str | None = None, audit: bool = True,
) -> AdapterSettings:
    """Validate and store a change of the tenant's adapter settings; returns the row.

    `changes` holds some of `lora_ab_test` ({enabled, versions}: replaced whole, checked by
    `lora_ab_test_validate`), `auto_promote_ab_winner` and `auto_rollback` (bools). A refusal is
    InvalidInput `validation_error` with per-key reasons and stores nothing. A changed split is
    recorded as `adapter.ab_test_changed`; with `audit` (the default) the change is also recorded as
    `settings.updated` (`tenant_settings_change` passes False and records the whole change).
    """
    validated = settings_section_validate(tenant=tenant, changes=changes,
                                          checks=ADAPTER_SETTING_CHECKS)
    with transaction.atomic():
        row, _ = AdapterSettings.objects.select_for_update().get_or_create(tenant=tenant)
        before = row.lora_ab_test
        if "lora_ab_test" in validated:
            row.ab_test_enabled = validated["lora_ab_test"]["enabled"]
            row.ab_test_versions = validated["lora_ab_test"]["versions"]
        if "auto_promote_ab_winner" in validated:
            row.auto_promote_ab_winner = validated["auto_promote_ab_winner"]
        if "auto_rollback" in validated:
            row.auto_rollback = validated["auto_rollback"]
        row.save()
        if row.lora_ab_test != before:
            audit_ab_settings_change(tenant=tenant, before=before, after=row.lora_ab_test,
                                     actor=actor, ip_address=ip_address)
        if audit:
            audit_log_record(action="settings.updated", actor=actor, ip_address=ip_address,
                             tenant=tenant, details={"changed": sorted(validated),
                                                     "section": "adapters"})
    return row


def audit_ab_settings_change(*, tenant: Tenant, before: dict, after: dict,
                             actor: str = SYSTEM_ACTOR, ip_address: str | None = None) -> None:
    """Record an A/B split change (a settings change or a promotion) in the audit log."""
    audit_log_record(action="adapter.ab_test_changed", actor=actor, ip_address=ip_address,
                     tenant=tenant, target="lora_ab_test",
                     details={"before": before, "after": after})
