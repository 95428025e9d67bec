"""Writes for the A/B split: validating a new split, promoting the winner, auditing changes.

The split itself is read through `adapters.selectors` (`ab_test_settings`, `ab_test_arms`,
`ab_route`); the comparison that names a winner lives in `adapters.metrics`.
"""

from __future__ import annotations

from django.db import transaction
from rest_framework import serializers

from adapters.metrics import ab_test_comparison
from adapters.models import AdapterVersion, parse_version_label
from adapters.selectors import ab_test_arms
from adapters.services.versions import (
    SYSTEM_ACTOR,
    adapter_version_activate,
    adapter_versions_enforce_plan_limit,
)
from tenants.errors import Conflict, DomainError
from tenants.models import Tenant
from tenants.services import audit_log_record, tenant_settings_update

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
    to 1; an enabled test needs at least two versions. Returns the normalised value.
    """
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be an object {enabled, versions}.")
    enabled = bool(value.get("enabled"))
    versions = value.get("versions") or {}
    if not isinstance(versions, dict):
        raise serializers.ValidationError({"versions": ["Must be a map version -> weight."]})
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
        raise serializers.ValidationError(errors)
    ordered = dict(sorted(normalised.items(), key=lambda kv: parse_version_label(kv[0]) or 0))
    return {"enabled": enabled, "versions": ordered}


def _ab_disable(*, tenant: Tenant) -> dict:
    return tenant_settings_update(
        tenant=tenant, changes={"lora_ab_test": {"enabled": False, "versions": {}}})


def adapter_ab_test_promote(
    *, tenant: Tenant, actor: str = SYSTEM_ACTOR, ip_address: str | None = None,
    reason: str = "api",
) -> dict:
    """Activate the significant winner of the tenant's A/B test and turn the split off.

    Refused (409 `ab_test_not_running` / `ab_test_not_significant`) without a running test and
    a significant winner.
    """
    arms = ab_test_arms(tenant)
    if not arms:
        raise Conflict("ab_test_not_running", "No A/B test is enabled for this tenant.")
    comparison = ab_test_comparison(tenant=tenant)
    winner_label = comparison.get("winner")
    if not comparison.get("significant") or not winner_label:
        raise Conflict("ab_test_not_significant",
                       "The A/B test has no statistically significant winner yet.",
                       details={"comparison": comparison})
    winner = AdapterVersion.objects.get(tenant=tenant, number=parse_version_label(winner_label))
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        adapter_version_activate(version=winner, force=True, actor=actor, ip_address=ip_address,
                                 reason=f"A/B winner promoted ({reason})")
        settings_doc = _ab_disable(tenant=tenant)
        tenant.settings = settings_doc
        audit_log_record(
            action="adapter.ab_test_promoted", actor=actor, ip_address=ip_address,
            tenant=tenant, target=winner.version,
            details={"arms": arms, "reason": reason, "p_value": comparison.get("p_value"),
                     "comparison": comparison.get("comparisons")},
        )
        adapter_versions_enforce_plan_limit(tenant=tenant, keep={winner.pk})
    winner.refresh_from_db()
    return {"promoted": winner, "comparison": comparison, "settings": settings_doc}


def adapter_ab_test_auto_promote(*, tenant_id: int) -> AdapterVersion | None:
    """Promote the A/B winner when the tenant turned `auto_promote_ab_winner` on.

    Called after each feedback row is saved (on commit). Returns the promoted version or None.
    """
    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    if not (tenant.settings or {}).get("auto_promote_ab_winner") or not ab_test_arms(tenant):
        return None
    try:
        result = adapter_ab_test_promote(tenant=tenant, reason="auto_promote_ab_winner")
    except DomainError:  # refused (no significant winner yet, ...): not an error
        return None
    return result["promoted"]


def audit_ab_settings_change(*, tenant: Tenant, before: dict, after: dict) -> None:
    """Record an A/B split change (from the settings PATCH or a promotion) in the audit log."""
    audit_log_record(action="adapter.ab_test_changed", actor=SYSTEM_ACTOR, tenant=tenant,
                     target="lora_ab_test", details={"before": before, "after": after})
