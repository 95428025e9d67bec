"""Stopping and repeating a job: cancel (a user's or an admin's) and retry (a new job with the
same method and parameters)."""

from __future__ import annotations

import logging

from django.db import transaction

from tenants.errors import Conflict
from tenants.services import audit_log_record
from training.backends import backend_for
from training.models import TrainingJob
from training.services.create import training_job_create
from training.services.params import JobRequest
from training.services.queue import rq_job_cancel
from training.services.transitions import InvalidTransition, training_job_transition

logger = logging.getLogger(__name__)


def training_job_cancel(*, job: TrainingJob, actor: str = "system",
                        ip_address: str | None = None) -> TrainingJob:
    """Cancel a queued or running job ("Cancelled by user"); Conflict for a job that already
    ended.

    A queued job is cancelled without ever running (its RQ job is cancelled too, and the runner
    skips a job that is not queued). A preparing or running one gets SIGTERM (the trainer stops
    at once), then SIGKILL after a grace period; the runner sees the flag too.
    """
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            raise Conflict("job_not_cancellable", f"The job already ended ({locked.status}).",
                           details={"status": locked.status})
        locked.cancel_requested = True
        locked.save(update_fields=["cancel_requested"])
        audit_log_record(action="training.job_cancelled", actor=actor, tenant=locked.tenant,
                         ip_address=ip_address, target=locked.id,
                         details={"status_before": locked.status})
    if locked.external_id:
        try:
            backend_for(locked).cancel(locked)
        except Exception:  # noqa: BLE001 - the runner retries the cancel on its next poll
            logger.exception("Backend cancel of %s failed; the runner will retry", locked.id)
    elif locked.rq_job_id:
        rq_job_cancel(locked.rq_job_id)
    try:
        return training_job_transition(job=locked, to_status=TrainingJob.CANCELLED,
                                       message="Cancelled by user",
                                       data={"actor": actor})
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)


def training_job_retry(*, job: TrainingJob, actor: str = "system") -> tuple[TrainingJob | None,
                                                                             dict]:
    """Start a new job with the same method and parameters (admin's "retry"): quotas apply."""
    params = {k: v for k, v in job.params.items() if k != "base_model_spec"}
    request = JobRequest(method=job.method, params=params, preset=job.preset,
                         base_model=(job.params.get("base_model_spec") or {}).get("name"),
                         continue_from=job.parent_version.version if job.parent_version_id
                         else None, triggered_by="retry")
    return training_job_create(tenant=job.tenant, request=request, actor=actor)
