"""Automatic training (the seed's "Feedback-Driven Learning"): a job queued by itself when the
tenant's `auto_training` setting asks for it, checked after each feedback write and by the
periodic reconciler loop.

After a feedback write the check does not run in the request: on commit, a tenant with automatic
training on queues `training.jobs.training_auto_check_job` on the `default` RQ queue, debounced
per tenant (`tenants.debounce`: one check waits at a time, `AUTO_TRAINING_CHECK_DEBOUNCE_SECONDS`;
the job releases the key before it reads, so every row is seen by a check that started after
it). The request pays a cache read (whether the tenant turned it on: `TrainingSettings`, cached
in the shared cache and forgotten whenever a row is saved), and a Redis SET for tenants that did.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction

from tenants.debounce import (
    debounce_release,
    tenant_check_enqueue_debounced,
    tenant_setting_cached,
    tenant_setting_forget,
)
from tenants.errors import DomainError
from tenants.models import Tenant
from training import pricing
from training.models import TrainingJob, TrainingSettings
from training.selectors import tenant_ids_with_auto_training, training_settings_get
from training.services.create import training_job_create
from training.services.params import JobRequest

logger = logging.getLogger(__name__)

AUTO_TRAINING_CHECK_KEY = "synapsex:training:auto-check:{tenant_id}"
AUTO_TRAINING_CHECK_JOB = "training.jobs.training_auto_check_job"
AUTO_TRAINING_WANTED_KEY = "training:auto-training-wanted:{tenant_id}"


def training_auto_check(*, tenant_id: int) -> TrainingJob | None:
    """Queue a job by itself when the tenant's `auto_training` asks for it (the seed's
    "Feedback-Driven Learning"): enabled, enough new usable feedback since the tenant's last
    job (`min_new_feedback`), ready for training, and a quota slot free. Returns the job or None.
    The event log of the job says `triggered_by=auto`. Runs in the debounced RQ job queued after
    feedback writes (`training_auto_check_enqueue`) and from `reconcile_training_jobs --loop`.
    """
    from feedback.models import Feedback

    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    auto = training_settings_get(tenant=tenant)
    if not auto.auto_training_enabled or not tenant.plan.allows_training:
        return None
    method = auto.auto_training_method if auto.auto_training_method in ("sft", "dpo") else "sft"
    min_new = int(auto.auto_training_min_new_feedback or 50)
    last = TrainingJob.objects.filter(tenant=tenant).order_by("-created_at").first()
    if last is not None and not last.is_terminal:
        return None  # one at a time
    new = Feedback.objects.filter(tenant=tenant, is_latest=True, excluded_reason="")
    if last is not None:
        new = new.filter(created_at__gt=last.created_at)
    if new.count() < min_new:
        return None
    remaining = pricing.quota_remaining(tenant=tenant)
    if remaining is not None and remaining <= 0:
        return None
    # Readiness is the seed's (feedback stats: corrections >= 50 or thumbs >= 100); the new
    # feedback threshold above replaces the per-request minimum.
    from feedback.selectors import feedback_stats

    if not feedback_stats(tenant=tenant).get("ready_for_training"):
        return None
    params = {"min_feedback_count" if method == "sft" else "min_preference_pairs": 1}
    try:
        job, _ = training_job_create(
            tenant=tenant,
            request=JobRequest(method=method, params=params, triggered_by="auto"),
            actor="system:auto_training",
        )
    except DomainError as exc:
        logger.info("Auto-training of %s not started: %s", tenant.slug, exc.message)
        return None
    except IntegrityError:  # pragma: no cover - concurrent duplicate
        return None
    return job


def training_auto_check_all() -> list[str]:
    """The periodic side of automatic training (`reconcile_training_jobs --loop`): checks every
    tenant that turned it on, so feedback loaded around the services (bulk imports) counts too."""
    started = []
    for tenant in Tenant.objects.filter(pk__in=tenant_ids_with_auto_training()):
        try:
            job = training_auto_check(tenant_id=tenant.pk)
        except Exception:  # noqa: BLE001 - one tenant must not stop the others
            logger.exception("Auto-training check failed for tenant %s", tenant.slug)
            continue
        if job is not None:
            started.append(job.id)
    return started


def feedback_saved_auto_train(sender, instance, created=False, raw=False, **kwargs):
    """post_save receiver on feedback.Feedback (connected in TrainingConfig.ready): queue the
    tenant's check once the row is committed (nothing runs inside the feedback's transaction)."""
    if raw or not created:
        return
    tenant_id = instance.tenant_id

    def enqueue():
        try:
            training_auto_check_enqueue(tenant_id=tenant_id)
        except Exception:  # noqa: BLE001 - the feedback is stored; the next one queues again
            logger.exception("Could not queue the auto-training check of tenant %s", tenant_id)

    transaction.on_commit(enqueue)


def training_auto_check_enqueue(*, tenant_id: int) -> bool:
    """Queue the tenant's auto-training check (debounced) when it turned automatic training on.
    True when a check was queued now."""
    from django.conf import settings

    if not tenant_setting_cached(
            key=AUTO_TRAINING_WANTED_KEY.format(tenant_id=tenant_id),
            read=lambda: TrainingSettings.objects.filter(
                tenant_id=tenant_id, auto_training_enabled=True).exists()):
        return False
    return tenant_check_enqueue_debounced(
        key=AUTO_TRAINING_CHECK_KEY.format(tenant_id=tenant_id), func=AUTO_TRAINING_CHECK_JOB,
        tenant_id=tenant_id, job_id_prefix="auto-training-check",
        ttl=int(getattr(settings, "AUTO_TRAINING_CHECK_DEBOUNCE_SECONDS", 60)))


def training_auto_check_run(*, tenant_id: int) -> TrainingJob | None:
    """The queued check: release the debounce key, then check (RQ entry in training.jobs)."""
    debounce_release(key=AUTO_TRAINING_CHECK_KEY.format(tenant_id=tenant_id))
    return training_auto_check(tenant_id=tenant_id)


def training_settings_saved(sender, instance, raw=False, **kwargs):
    """post_save receiver on TrainingSettings (TrainingConfig.ready): the cached answer of
    "automatic training on?" goes, now and once the change commits."""
    tenant_setting_forget(key=AUTO_TRAINING_WANTED_KEY.format(tenant_id=instance.tenant_id))
