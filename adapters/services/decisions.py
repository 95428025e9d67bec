"""Automatic decisions on live traffic: A/B auto-promotion and auto-rollback after an activation.

Both read per-conversation outcomes and the sequential test of `adapters.metrics` /
`adapters.sequential` (valid however often they are checked), so they may run after every
feedback row. Each decision is audited with its numbers and sent to the tenant's webhooks
(`adapter.ab_promoted`, `adapter.auto_rolled_back`).

* Auto-promotion (`auto_promote_ab_winner`): `adapters.services.ab.adapter_ab_test_promote`.
* Auto-rollback (`auto_rollback`, default off): after an activation, when the active version's
  bad-outcome rate per conversation since its activation is significantly above the previous
  version's over its own served period, the previous version is activated again, as a rollback
  (exempt from the activation gate), actor "system", reason "auto-rollback". Only a roll *back*
  (to an older number) is made; while an A/B test runs it decides instead.

When: after each feedback row (adapters.receivers, on commit) `online_decisions_check_enqueue`
queues one check per tenant on the `default` RQ queue, debounced: a Redis key per tenant
(SET NX, `DECISION_CHECK_DEBOUNCE_SECONDS`) lets only one check wait in the queue; the job
deletes the key before it reads anything, so feedback committed while it runs queues the next
check and every row is seen by a check that started after it (`tenants.debounce`). Tenants with
neither setting on cost a cache read (the settings answer, cached) and queue nothing. The
request path never runs the statistics.

A conversation counts only once its settle window has passed (`adapters.metrics.
conversation_outcomes`), which no feedback row announces; so a check that leaves conversations
inside their window schedules the next check for when the first of them settles (at most one
scheduled check per tenant, named by a Redis key, `tenants.debounce.tenant_check_schedule`; no
sooner than the debounce interval), and that check schedules the one after.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from adapters.metrics import decisions_next_settle_at, rollback_check
from adapters.models import AdapterSettings, AdapterVersion, parse_version_label
from adapters.selectors import adapter_settings_get
from adapters.services.ab import adapter_ab_test_auto_promote
from adapters.services.versions import SYSTEM_ACTOR, adapter_version_activate
from tenants.debounce import (
    debounce_release,
    tenant_check_enqueue_debounced,
    tenant_check_schedule,
    tenant_setting_cached,
    tenant_setting_forget,
)
from tenants.models import Tenant
from tenants.services import audit_log_record

logger = logging.getLogger(__name__)

AUTO_ROLLBACK_REASON = "auto-rollback"
DECISION_CHECK_KEY = "synapsex:adapters:decision-check:{tenant_id}"
DECISION_CHECK_JOB = "adapters.jobs.online_decisions_check_job"
DECISION_SETTLE_KEY = "synapsex:adapters:decision-settle:{tenant_id}"
DECISIONS_WANTED_KEY = "adapters:decisions-wanted:{tenant_id}"


def rollback_summary(decision: dict) -> dict:
    """The numbers of a rollback decision, as audited and sent (no nested metric objects)."""
    def side(key):
        outcome = decision.get(key) or {}
        return {"conversations": outcome.get("conversations"), "bad": outcome.get("bad"),
                "bad_rate": (outcome.get("bad_rate") or {}).get("value")}

    return {"from_version": decision["active_version"],
            "to_version": decision["previous_version"],
            "activated_at": decision.get("activated_at"),
            "active": side("active"), "previous": side("previous"),
            "e_value": decision.get("e_value"), "threshold": decision.get("threshold"),
            "p_value": decision.get("p_value"), "alpha": decision.get("alpha"),
            "test": decision.get("test"), "metric": decision.get("metric")}


def adapter_auto_rollback(*, tenant_id: int) -> AdapterVersion | None:
    """Roll back to the previous version when the tenant turned `auto_rollback` on and the
    active version does significantly worse (see the module docstring). Returns the version
    now active after a rollback, else None."""
    from training.webhooks import webhook_tenant_event_send

    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    if not adapter_settings_get(tenant=tenant).auto_rollback:
        return None
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)  # one decision at a time
        decision = rollback_check(tenant=tenant)
        if decision["decision"] != "rollback":
            return None
        previous = AdapterVersion.objects.get(
            tenant=tenant, number=parse_version_label(decision["previous_version"]))
        summary = rollback_summary(decision)
        adapter_version_activate(version=previous, actor=SYSTEM_ACTOR,
                                 reason=AUTO_ROLLBACK_REASON)
        audit_log_record(action="adapter.auto_rolled_back", actor=SYSTEM_ACTOR, tenant=tenant,
                         target=previous.version,
                         details={**summary, "reason": AUTO_ROLLBACK_REASON})
        webhook_tenant_event_send(tenant=tenant, event="adapter.auto_rolled_back",
                                  data={**summary, "reason": AUTO_ROLLBACK_REASON})
    previous.refresh_from_db()
    return previous


def adapter_online_decisions_check(*, tenant_id: int) -> dict:
    """Both automatic decisions for a tenant (each only when turned on); run after feedback.
    Returns {"promoted": version | None, "rolled_back_to": version | None}."""
    settings_row = adapter_settings_get(tenant=Tenant.objects.get(pk=tenant_id))
    out = {"promoted": None, "rolled_back_to": None}
    if not (settings_row.auto_promote_ab_winner or settings_row.auto_rollback):
        return out
    if settings_row.auto_promote_ab_winner:
        out["promoted"] = adapter_ab_test_auto_promote(tenant_id=tenant_id)
    if settings_row.auto_rollback and out["promoted"] is None:
        out["rolled_back_to"] = adapter_auto_rollback(tenant_id=tenant_id)
    return out


def _decisions_wanted(tenant_id: int) -> bool:
    """One indexed query, cached (`tenants.debounce`): no settings row means the defaults, both
    off."""
    return tenant_setting_cached(
        key=DECISIONS_WANTED_KEY.format(tenant_id=tenant_id),
        read=lambda: AdapterSettings.objects.filter(tenant_id=tenant_id).filter(
            Q(auto_promote_ab_winner=True) | Q(auto_rollback=True)).exists())


def adapter_settings_saved(sender, instance, raw=False, **kwargs):
    """post_save receiver on AdapterSettings (AdaptersConfig.ready): the cached answer of
    "decisions wanted?" goes, now and once the change commits."""
    tenant_setting_forget(key=DECISIONS_WANTED_KEY.format(tenant_id=instance.tenant_id))


def _debounce_seconds() -> int:
    from django.conf import settings

    return int(getattr(settings, "DECISION_CHECK_DEBOUNCE_SECONDS", 60))


def online_decisions_recheck_schedule(*, tenant_id: int, now=None):
    """Schedule the tenant's next check for when its first conversation still inside the settle
    window settles (see the module docstring). Returns that time, or None when nothing waits."""
    now = now or timezone.now()
    at = decisions_next_settle_at(tenant=Tenant.objects.get(pk=tenant_id), now=now)
    if at is None:
        return None
    at = max(at, now + timedelta(seconds=_debounce_seconds()))
    tenant_check_schedule(key=DECISION_SETTLE_KEY.format(tenant_id=tenant_id),
                          func=DECISION_CHECK_JOB, tenant_id=tenant_id, at=at,
                          job_id_prefix="decision-settle")
    return at


def online_decisions_check_enqueue(*, tenant_id: int) -> bool:
    """Queue the tenant's decision check (debounced, see the module docstring and
    `tenants.debounce`). Returns True when a check was queued now, False when none is wanted or
    one is already waiting."""
    if not _decisions_wanted(tenant_id):
        return False
    return tenant_check_enqueue_debounced(
        key=DECISION_CHECK_KEY.format(tenant_id=tenant_id), func=DECISION_CHECK_JOB,
        tenant_id=tenant_id, job_id_prefix="decision-check", ttl=_debounce_seconds())


def online_decisions_check_run(*, tenant_id: int) -> dict:
    """The queued check: release the debounce key, decide, and schedule the next check when
    conversations are still inside their settle window (RQ entry in adapters.jobs)."""
    debounce_release(key=DECISION_CHECK_KEY.format(tenant_id=tenant_id))
    out = adapter_online_decisions_check(tenant_id=tenant_id)
    out["next_check_at"] = None
    if _decisions_wanted(tenant_id):
        out["next_check_at"] = online_decisions_recheck_schedule(tenant_id=tenant_id)
    return out
