"""The reconciler: what the runner never sees (a worker killed with SIGKILL, a Redis that lost
its queue) is caught here. Safe to run any time, from anywhere, repeatedly."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from training.backends import backend_for
from training.models import TrainingJob
from training.services.queue import rq_job_alive, training_job_enqueue
from training.services.runner import training_job_advance
from training.services.transitions import LOST_WORKER, training_job_event, training_job_fail

logger = logging.getLogger(__name__)


def training_jobs_reconcile(*, stale_after_seconds: float | None = None,
                            queued_grace_seconds: float = 60.0) -> dict[str, list[str]]:
    """Catch what the runner never sees. Safe to run any time, from anywhere, repeatedly.

    - A local job `preparing`/`running` whose heartbeat is older than the stale limit lost its
      worker (SIGKILL, machine restart): the orphaned trainer is stopped; a job with a complete
      checkpoint is resumed from it by a new runner on the queue (attempt + 1, as Slurm timeouts
      are, at most TRAINING_MAX_RESUBMITS times), one without fails with "lost worker". Jobs of
      polled backends (Slurm) are advanced instead: their heartbeat is the poller's.
    - A `queued` job whose RQ job is gone (Redis lost it, the enqueue failed) is enqueued again.
    """
    stale_after = stale_after_seconds if stale_after_seconds is not None \
        else settings.TRAINING_STALE_AFTER_SECONDS
    now = timezone.now()
    summary: dict[str, list[str]] = {"failed": [], "requeued": [], "advanced": [],
                                     "resumed": []}
    for job in TrainingJob.objects.filter(status__in=[TrainingJob.PREPARING,
                                                      TrainingJob.RUNNING]):
        beat = job.heartbeat_at or job.created_at
        if (now - beat).total_seconds() < stale_after:
            continue
        settled = _stale_job_settle(job, seconds=int((now - beat).total_seconds()))
        if settled:
            summary[settled].append(job.id)
    for job in TrainingJob.objects.filter(status=TrainingJob.QUEUED,
                                          created_at__lt=now - timedelta(
                                              seconds=queued_grace_seconds)):
        if job.rq_job_id and rq_job_alive(job.rq_job_id):
            continue
        rq_id = training_job_enqueue(job_id=job.id)
        if rq_id:
            training_job_event(job=job, type="requeued",
                               message="Its queue entry was lost; queued again",
                               data={"previous_rq_job_id": job.rq_job_id, "rq_job_id": rq_id})
            summary["requeued"].append(job.id)
    return summary


def _stale_job_settle(job: TrainingJob, *, seconds: int) -> str | None:
    """A job without a recent heartbeat: a polled one is advanced ("advanced"; None when the
    step failed), a local one lost its worker and fails ("failed")."""
    backend = backend_for(job)
    if not getattr(backend, "runs_in_worker", False) and job.external_id:
        try:
            training_job_advance(job_id=job.id)
        except Exception:  # noqa: BLE001
            logger.exception("Advancing %s failed", job.id)
            return None
        return "advanced"
    try:
        backend.cancel(job)
    except Exception:  # noqa: BLE001
        logger.exception("Stopping the orphaned trainer of %s failed", job.id)
    from training.backends.local import LOG_NAME, log_tail

    if training_job_local_resume(job, seconds=seconds):
        return "resumed"
    tail = log_tail(Path(job.work_dir) / LOG_NAME) if job.work_dir else ""
    training_job_fail(job=job, reason=f"lost worker: no heartbeat for {seconds} s",
                      category=LOST_WORKER, log_tail=tail, data={"reconciler": True})
    return "failed"


def _has_checkpoint(job: TrainingJob) -> bool:
    """A complete checkpoint in the bundle (the trainer writes trainer_state.json last; its
    `--resume` picks the newest such folder)."""
    if not job.work_dir:
        return False
    folder = Path(job.work_dir) / "output" / "checkpoints"
    return any((c / "trainer_state.json").is_file() for c in folder.glob("checkpoint-*"))


def training_job_local_resume(job: TrainingJob, *, seconds: int) -> bool:
    """A local job that lost its worker, with a complete checkpoint and resubmissions left: mark
    it for resume (attempt + 1, job.json's `resume` on, no trainer process) and queue a runner
    that starts the trainer again from the checkpoint and watches it. False: fail it instead."""
    from django.db import transaction

    from training.services.bundle import training_job_bundle_config_resume
    from training.services.queue import training_job_resume_enqueue

    limit = int(getattr(settings, "TRAINING_MAX_RESUBMITS", 3))
    if job.attempt > limit or job.cancel_requested or not _has_checkpoint(job):
        return False
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal or locked.heartbeat_at != job.heartbeat_at:
            return locked.status in (TrainingJob.PREPARING, TrainingJob.RUNNING)
        locked.attempt += 1
        locked.external_id = ""
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["attempt", "external_id", "heartbeat_at"])
        training_job_bundle_config_resume(locked)
        training_job_event(job=locked, type="resumed",
                           message=f"Lost its worker (no heartbeat for {seconds} s); resuming "
                                   f"from its last checkpoint (attempt {locked.attempt})",
                           data={"attempt": locked.attempt, "reconciler": True})
        transaction.on_commit(lambda: training_job_resume_enqueue(job_id=job.id))
    return True
