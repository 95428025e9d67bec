"""Reads for adapter versions: lists, lookups by label, what serves a tenant right now.

The A/B split is read here too (`ab_test_settings`, `ab_test_arms`, `ab_route`): the services
(archiving, promotion), the metrics (the comparison) and serving all need it, and keeping it
below them is what lets `adapters.metrics` and `adapters.services` import each other one way.
"""

from __future__ import annotations

import hashlib

from django.db.models import QuerySet

from adapters.models import AdapterSettings, AdapterVersion, parse_version_label
from tenants.errors import NotFound
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
        raise NotFound("version_not_found", f"No adapter version {label!r} for this tenant.")
    return version


# --- the A/B split ----------------------------------------------------------------------------


def adapter_settings_get(*, tenant: Tenant) -> AdapterSettings:
    """The tenant's adapter settings; an unsaved row with the defaults when it has none (a read
    never writes: the row is made by `adapter_settings_update` on the first change)."""
    found = AdapterSettings.objects.filter(tenant=tenant).first()
    return found if found is not None else AdapterSettings(tenant=tenant)


def adapter_settings_section(tenant: Tenant) -> dict:
    """The adapter keys of the tenant settings document (registered with tenants at start-up)."""
    row = adapter_settings_get(tenant=tenant)
    return {"lora_ab_test": row.lora_ab_test,
            "auto_promote_ab_winner": bool(row.auto_promote_ab_winner),
            "auto_rollback": bool(row.auto_rollback)}


def ab_test_settings(tenant: Tenant) -> dict:
    """The tenant's A/B split, `{"enabled": bool, "versions": {"v2": 0.3, ...}}`."""
    return adapter_settings_get(tenant=tenant).lora_ab_test


def ab_test_arms(tenant: Tenant) -> dict[str, float]:
    """The enabled split's `{"v2": 0.3, ...}`, or {} when no A/B test runs."""
    ab = ab_test_settings(tenant)
    return ab["versions"] if ab["enabled"] else {}


def ab_weights_of(tenant: Tenant) -> dict[str, float]:
    """Traffic weight per version label in the enabled A/B split ({} when none runs)."""
    return ab_test_arms(tenant)


def ab_route(conversation_id: str, weights: dict[str, float]) -> str:
    """The arm a conversation is served by: sticky, stateless, uniform.

    sha256(conversation id) -> a number uniform in [0, 1) -> the arm whose cumulative weight
    (arms in version order) first exceeds it. The same id always lands on the same arm while the
    split is unchanged; serving additionally keeps a conversation on the version that already
    answered it (see `serving_version_select`), so a re-weighted split never switches it mid-way.
    """
    if not weights:
        raise ValueError("no arms")
    digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    arms = sorted(weights.items(), key=lambda kv: parse_version_label(kv[0]) or 0)
    total = sum(w for _, w in arms)
    cumulative = 0.0
    for label, weight in arms:
        cumulative += weight / total
        if point < cumulative:
            return label
    return arms[-1][0]  # float rounding at the top end


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


def adapter_version_evaluation(*, version: AdapterVersion) -> dict:
    """The evaluation document of a version (`GET .../lora/{v}/evaluation`); status `none` for a
    version that has none (made before evaluations existed, or by an older release)."""
    from adapters.models import AdapterEvaluation

    evaluation = AdapterEvaluation.objects.filter(version=version).first()
    if evaluation is None:
        return {"version": version.version, "status": "none"}
    return {
        "version": version.version,
        "status": evaluation.status,
        "compared_with": evaluation.compared_with or None,
        "base_model": evaluation.base_model or version.base_model,
        "scores": evaluation.scores,
        "regressions": evaluation.regressions,
        "samples": evaluation.samples,
        "error": evaluation.error or None,
        "generations": evaluation.generations,
        "seconds": evaluation.seconds,
        "created_at": evaluation.created_at.isoformat(),
        "finished_at": evaluation.finished_at.isoformat() if evaluation.finished_at else None,
    }
