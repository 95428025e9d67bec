"""Signal receivers connected in `AdaptersConfig.ready()`.

* Automatic decisions: after each feedback row (on commit, so the feedback write never fails
  because of it) the tenant's decision check is queued on RQ, debounced per tenant
  (`adapters.services.decisions.online_decisions_check_enqueue`): with `auto_promote_ab_winner`
  on and a significant A/B winner, the winner is activated and the split disabled; with
  `auto_rollback` on and the active version significantly worse than the one before it, the
  previous version is activated again. The sequential test keeps these repeated looks valid.
  The request pays a cache read (the settings answer, `tenants.debounce`) and a Redis SET for
  tenants that turned one on.
* Training's questions (training.signals): the version a job continues from and the versions an
  erasure marks; connected here with @receiver when this module is imported in ready().
* A version made by a job whose snapshot lost rows (erasure, dataset delete, revoked consent)
  while the job was already reading it is created `needs_retraining`: the rows reached it.
"""

import logging

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from training.signals import (
    DEFER_COMPLETED_WEBHOOKS,
    training_job_completed,
    training_parent_version_resolve,
    training_user_data_erasing,
)

logger = logging.getLogger(__name__)


def feedback_saved_check_ab_winner(sender, instance, created=False, raw=False, **kwargs):
    if raw or not created:
        return
    tenant_id = instance.tenant_id

    def check():
        from adapters.services.decisions import online_decisions_check_enqueue

        try:
            online_decisions_check_enqueue(tenant_id=tenant_id)
        except Exception:  # the feedback is stored; the next row queues the check again
            logger.exception("Could not queue the decision check of tenant %s", tenant_id)

    transaction.on_commit(check)


@receiver(training_parent_version_resolve, dispatch_uid="adapters.parent_version_resolve")
def training_parent_version(sender, tenant, label, base_label, **kwargs):
    from adapters.training_hooks import adapter_version_for_training

    return adapter_version_for_training(tenant=tenant, label=label, base_label=base_label)


@receiver(training_user_data_erasing, dispatch_uid="adapters.user_data_erasing")
def training_user_data_erased(sender, tenant, feedback_ids, message_ids,
                              dataset_record_ids=frozenset(), **kwargs):
    from adapters.training_hooks import adapter_versions_mark_erased_data

    return adapter_versions_mark_erased_data(tenant=tenant, feedback_ids=feedback_ids,
                                             message_ids=message_ids,
                                             dataset_record_ids=dataset_record_ids)


@receiver(training_job_completed, dispatch_uid="adapters.job_completed_evaluate")
def training_job_completed_evaluate(sender, job, **kwargs):
    """Queue the new version's evaluation; it sends the job-completed webhook when done."""
    from adapters.services.evaluation import adapter_version_evaluation_queue

    return DEFER_COMPLETED_WEBHOOKS if adapter_version_evaluation_queue(job=job) else None


# A job in these states had read its snapshot before the rewrite (training.snapshot_scrub).
SNAPSHOT_ALREADY_READ = ("preparing", "running")


@receiver(post_save, sender="adapters.AdapterVersion",
          dispatch_uid="adapters.version_from_scrubbed_snapshot")
def adapter_version_from_scrubbed_snapshot(sender, instance, created=False, raw=False, **kwargs):
    if raw or not created or instance.needs_retraining:
        return
    scrubbed = (instance.data_manifest or {}).get("scrubbed") or []
    if any(entry.get("job_status") in SNAPSHOT_ALREADY_READ for entry in scrubbed):
        type(instance).objects.filter(pk=instance.pk).update(needs_retraining=True)
        instance.needs_retraining = True
