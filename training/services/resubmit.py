"""Resubmission: a job the cluster lost (TIMEOUT, PREEMPTED, NODE_FAIL) runs again from its last
checkpoint, as attempt + 1, at most TRAINING_MAX_RESUBMITS times."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.failures import CLUSTER_FAULT
from training.models import TrainingEvent, TrainingJob
from training.services.bundle import training_job_bundle_config_resume
from training.services.cluster import training_job_submission_record
from training.services.transitions import training_job_fail, training_job_to_running


def training_job_resubmit(job: TrainingJob, backend, reason: str) -> TrainingJob:
    """Submit the job again with resume (its status stays running); fails it when the limit is
    reached or the submission is refused."""
    limit = int(getattr(settings, "TRAINING_MAX_RESUBMITS", 3))
    if job.attempt > limit:
        return training_job_fail(job=job, reason=f"cluster fault: lost to the cluster "
                                 f"{job.attempt} times ({reason or 'preempted'}); giving up",
                                 category=CLUSTER_FAULT)
    if job.status == TrainingJob.PREPARING:
        job = training_job_to_running(job)
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            return locked
        locked.attempt += 1
        locked.save(update_fields=["attempt"])
        try:
            training_job_bundle_config_resume(locked)
            external_id = backend.submit(locked, Path(locked.work_dir))
        except Exception as exc:  # noqa: BLE001
            error = exc
        else:
            error = None
            locked.external_id = external_id
            locked.heartbeat_at = timezone.now()
            billed = training_job_submission_record(job=locked, backend=backend,
                                                    external_id=external_id)
            locked.save(update_fields=["external_id", "heartbeat_at", *billed])
            TrainingEvent.objects.create(
                job=locked, type="resubmitted",
                message=f"Resubmitted with resume (attempt {locked.attempt}): {reason}",
                data={"attempt": locked.attempt, "external_id": external_id, "reason": reason})
    if error is not None:
        return training_job_fail(job=locked, reason=f"could not resubmit: {error}",
                                 category="crash")
    return locked
