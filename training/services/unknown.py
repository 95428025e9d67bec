"""A cluster job whose state cannot be learned (Slurm forgot it, the cluster cannot be asked):
polled again while it is young, failed once the state has been unknown for longer than
CLUSTER_UNKNOWN_GIVE_UP_SECONDS, so no job stays `running` forever.

The first unknown poll writes `resources["unknown_since"]` (and a `state_unknown` event); any
poll with a known state clears it; the give-up fails the job with category `cluster_fault` (the
platform's fault: it does not use the tenant's quota) and tries to cancel what may still run.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.failures import CLUSTER_FAULT
from training.models import TrainingJob
from training.services.transitions import training_job_event, training_job_fail

logger = logging.getLogger(__name__)

UNKNOWN_SINCE = "unknown_since"


def give_up_seconds() -> int:
    return int(getattr(settings, "CLUSTER_UNKNOWN_GIVE_UP_SECONDS", 3600))


def training_job_state_known(job: TrainingJob) -> TrainingJob:
    """A poll learned the job's state: forget an unknown streak."""
    if not isinstance(job.resources, dict) or UNKNOWN_SINCE not in job.resources:
        return job
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        resources = dict(locked.resources or {})
        since = resources.pop(UNKNOWN_SINCE, None)
        resources.pop("unknown_reason", None)
        locked.resources = resources
        locked.save(update_fields=["resources"])
        training_job_event(job=locked, type="state_known",
                           message="The cluster knows the job again",
                           data={"unknown_since": since})
    return locked


def training_job_state_unknown(*, job: TrainingJob, backend, reason: str) -> TrainingJob:
    """Record an unknown poll; fail the job when the streak is older than the give-up time."""
    now = timezone.now()
    limit = give_up_seconds()
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            return locked
        resources = dict(locked.resources or {}) if isinstance(locked.resources, dict) else {}
        since_text = resources.get(UNKNOWN_SINCE)
        if not since_text:
            resources[UNKNOWN_SINCE] = now.isoformat()
            resources["unknown_reason"] = reason[:500]
            locked.resources = resources
            locked.save(update_fields=["resources"])
            training_job_event(job=locked, type="state_unknown",
                               message=f"State unknown ({reason}); polling again, giving up "
                                       f"after {limit} s",
                               data={"reason": reason[:500], "give_up_seconds": limit})
            return locked
        waited = (now - datetime.fromisoformat(since_text)).total_seconds()
        if waited < limit:
            return locked
    try:
        backend.cancel(locked)  # whatever may still run on the cluster
    except Exception:  # noqa: BLE001 - the cluster may well not answer: the job fails anyway
        logger.warning("Could not cancel %s after giving up on it", locked.id, exc_info=True)
    return training_job_fail(
        job=locked, category=CLUSTER_FAULT,
        reason=(f"cluster fault: the job's state has been unknown for {int(waited)} s "
                f"(limit {limit} s; last poll: {reason or 'no answer'}); giving up"),
        data={"unknown_since": since_text, "waited_seconds": int(waited)})
