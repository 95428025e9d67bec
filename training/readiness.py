"""What each training method can really train on now: the answer to the feedback app's
`feedback_readiness_requested` (the per-method part of `GET .../feedback/stats`).

The seed's rule (`ready_for_training`: 50 corrections or 100 thumbs) counts feedback rows; a job
counts what the compiler makes of them, so 100 lone thumbs are "ready" yet a DPO job refuses them
(no two answers to the same prompt, no pair). This compiles the tenant's data once and reports,
per method, the number a job's readiness check compares with its threshold (the default one
here; a request may lower it), with the same words.

Compiling is linear in the tenant's data (minutes at a million feedback rows), so a stats read
compiles in the request only for a tenant with at most `READINESS_SYNC_MAX_ROWS` feedback rows.
A larger tenant is answered from the last compile (each method then says `as_of` and
`current: false`, or `status: "computing"` before the first one) while one debounced RQ job
(`training.jobs.training_readiness_job`, queue `default`) compiles again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from training import compiler
from training.parameters import DPO, KTO, SFT, training_params_defaults

# A stats read compiles at most once per change of the tenant's feedback counters; dataset
# edits do not move the counters, so the answer may lag them by this long.
CACHE_SECONDS = 30
# A queued recompute that never ran (its queue lost) stops blocking the next one after this.
QUEUED_SECONDS = 600

_WHAT = {
    SFT: ("min_feedback_count", "SFT examples (corrections, answers rated 4-5, dataset "
                                "conversations)"),
    DPO: ("min_preference_pairs", "preference pairs (corrections, thumbs up and down on answers "
                                  "to the same prompt, dataset preferences)"),
    KTO: ("min_feedback_count", "KTO examples (thumbs up/down, ratings 4-5 or 1-2, corrections, "
                                "datasets)"),
}


def training_readiness(*, tenant) -> dict[str, dict[str, Any]]:
    """Per method: usable examples, the default threshold, ready or not, how many are missing."""
    compiled = compiler.training_data_compile(tenant=tenant, method=SFT)
    usable = {SFT: compiled.sft_examples, DPO: compiled.dpo_pairs, KTO: compiled.kto_examples}
    out: dict[str, dict[str, Any]] = {}
    for method, (parameter, what) in _WHAT.items():
        required = int(training_params_defaults(method=method)[parameter])
        out[method] = {"usable": usable[method], "required": required,
                       "ready": usable[method] >= required,
                       "missing": max(0, required - usable[method]),
                       "threshold_parameter": parameter, "counts": what}
    out[KTO].update(desirable=compiled.kto_desirable, undesirable=compiled.kto_undesirable)
    return out


def _keys(tenant_id: int, stamp: str) -> tuple[str, str, str]:
    return (f"training-readiness:{tenant_id}:{stamp}", f"training-readiness-last:{tenant_id}",
            f"training-readiness-queued:{tenant_id}")


def training_readiness_store(*, tenant, stamp: str) -> dict[str, dict[str, Any]]:
    """Compile now and keep the answer: for this stamp, and as the tenant's last answer."""
    methods = training_readiness(tenant=tenant)
    key, last_key, _ = _keys(tenant.pk, stamp)
    if stamp:
        cache.set(key, methods, CACHE_SECONDS)
    cache.set(last_key, {"stamp": stamp, "as_of": timezone.now().isoformat(),
                         "methods": methods}, None)
    return methods


def feedback_readiness_received(sender, *, tenant, stamp: str = "", rows: int | None = None,
                                **kwargs) -> dict:
    """Receiver of feedback.signals.feedback_readiness_requested (connected in apps.py).

    `rows`: the tenant's feedback rows (the stats' `received`); above READINESS_SYNC_MAX_ROWS
    the answer is the last compile's, and a recompute is queued when the data changed since."""
    key, last_key, queued_key = _keys(tenant.pk, stamp)
    methods = cache.get(key) if stamp else None
    if methods is not None:
        return methods
    if not stamp or rows is None or rows <= settings.READINESS_SYNC_MAX_ROWS:
        return training_readiness_store(tenant=tenant, stamp=stamp)
    last = cache.get(last_key)
    if last and last["stamp"] == stamp:
        return last["methods"]
    if cache.add(queued_key, 1, QUEUED_SECONDS):  # one waiting recompute per tenant
        import django_rq

        django_rq.get_queue("default", commit_mode="auto").enqueue(
            "training.jobs.training_readiness_job", tenant.pk, stamp)
    if not last:
        return {method: {"status": "computing", "current": False} for method in _WHAT}
    return {method: {**answer, "current": False, "as_of": last["as_of"]}
            for method, answer in last["methods"].items()}


def training_readiness_recompute(*, tenant_id: int, stamp: str) -> None:
    """The queued recompute: rows stored from now on queue the next one."""
    from tenants.models import Tenant

    cache.delete(_keys(tenant_id, stamp)[2])
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is not None:
        training_readiness_store(tenant=tenant, stamp=stamp)
