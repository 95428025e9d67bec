"""Writes for the A/B split: promoting the winner (by hand or by itself). Validating and storing
a new split is `adapters.services.settings` (re-exported here for existing callers).

The split itself is read through `adapters.selectors` (`ab_test_settings`, `ab_test_arms`,
`ab_route`); the comparison that names a winner lives in `adapters.metrics`.
"""

from __future__ import annotations

from django.db import transaction

from adapters.metrics import ab_test_comparison
from adapters.models import AdapterVersion, parse_version_label
from adapters.selectors import ab_test_arms, adapter_settings_get
from adapters.services.settings import (  # noqa: F401 - re-exported (adapters.services)
    AB_WEIGHT_TOLERANCE,
    adapter_settings_update,
    audit_ab_settings_change,
    lora_ab_test_validate,
)
from adapters.services.versions import (
    SYSTEM_ACTOR,
    adapter_version_activate,
    adapter_versions_enforce_plan_limit,
)
from tenants.errors import Conflict, DomainError
from tenants.models import Tenant
from tenants.services import audit_log_record
from training.webhooks import webhook_tenant_event_send


def _ab_disable(*, tenant: Tenant, actor: str, ip_address: str | None) -> dict:
    """Turn the split off (audited as an A/B change); returns the settings document."""
    from tenants.selectors import tenant_settings_document

    adapter_settings_update(tenant=tenant, actor=actor, ip_address=ip_address, audit=False,
                            changes={"lora_ab_test": {"enabled": False, "versions": {}}})
    return tenant_settings_document(tenant=tenant)


def promotion_summary(comparison: dict) -> dict:
    """The numbers a promotion decided on, as audited and sent: the test, the worst (largest)
    p-value over the winner's comparisons, and each comparison (rates, counts, e-value)."""
    return {"winner": comparison.get("winner"), "p_value": comparison.get("p_value"),
            "alpha": comparison.get("alpha"), "test": comparison.get("test"),
            "metric": comparison.get("metric"), "comparison": comparison.get("comparisons")}


def adapter_ab_test_promote(
    *, tenant: Tenant, actor: str = SYSTEM_ACTOR, ip_address: str | None = None,
    reason: str = "api",
) -> dict:
    """Activate the significant winner of the tenant's A/B test and turn the split off.

    Refused (409 `ab_test_not_running` / `ab_test_not_significant`) without a running test and
    a significant winner (`adapters.metrics.ab_test_comparison`: per-conversation bad outcomes,
    sequential test). Audited as `adapter.ab_test_promoted` with the numbers, sent to the
    tenant's webhooks as `adapter.ab_promoted`.
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
        if ab_test_arms(tenant) != arms:  # a concurrent promotion or change got there first
            raise Conflict("ab_test_not_running", "The A/B test changed while deciding; "
                           "check it again.")
        adapter_version_activate(version=winner, force=True, actor=actor, ip_address=ip_address,
                                 reason=f"A/B winner promoted ({reason})")
        settings_doc = _ab_disable(tenant=tenant, actor=actor, ip_address=ip_address)
        numbers = promotion_summary(comparison)
        audit_log_record(
            action="adapter.ab_test_promoted", actor=actor, ip_address=ip_address,
            tenant=tenant, target=winner.version,
            details={"arms": arms, "reason": reason, **numbers},
        )
        webhook_tenant_event_send(
            tenant=tenant, event="adapter.ab_promoted",
            data={"version": winner.version, "arms": arms, "reason": reason,
                  "actor": actor, **numbers})
        adapter_versions_enforce_plan_limit(tenant=tenant, keep={winner.pk})
    winner.refresh_from_db()
    return {"promoted": winner, "comparison": comparison, "settings": settings_doc}


def adapter_ab_test_auto_promote(*, tenant_id: int) -> AdapterVersion | None:
    """Promote the A/B winner when the tenant turned `auto_promote_ab_winner` on.

    Called after each feedback row is saved (on commit, through
    `adapters.services.decisions.adapter_online_decisions_check`); the sequential test keeps
    these repeated looks valid. Returns the promoted version or None.
    """
    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    if not adapter_settings_get(tenant=tenant).auto_promote_ab_winner or not ab_test_arms(tenant):
        return None
    try:
        result = adapter_ab_test_promote(tenant=tenant, reason="auto_promote_ab_winner")
    except DomainError:  # refused (no significant winner yet, ...): not an error
        return None
    return result["promoted"]
