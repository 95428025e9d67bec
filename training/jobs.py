"""RQ entry points. They take ids, never model instances, and call one service each."""

from __future__ import annotations

import logging
import traceback

from rq.worker import SimpleWorker, Worker

logger = logging.getLogger(__name__)


def training_job_execute(job_id: str) -> str:
    """Run one training job (queue `training`): prepare, submit, watch until it ends."""
    from training.services import training_job_run

    return training_job_run(job_id=job_id).status


def training_job_resume_execute(job_id: str) -> str:
    """Resume a local job that lost its worker from its checkpoint (queue `training`)."""
    from training.services.runner import training_job_resume_run

    return training_job_resume_run(job_id=job_id).status


def training_auto_check_job(tenant_id: int) -> str | None:
    """A tenant's automatic-training check after feedback (queue `default`, debounced per
    tenant). Returns the id of the job it queued, or None."""
    from training.services.auto import training_auto_check_run

    job = training_auto_check_run(tenant_id=tenant_id)
    return job.id if job is not None else None


def training_readiness_job(tenant_id: int, stamp: str) -> None:
    """Compile a large tenant's per-method readiness for the stats (queue `default`)."""
    from training.readiness import training_readiness_recompute

    training_readiness_recompute(tenant_id=tenant_id, stamp=stamp)


def training_job_on_failure(rq_job, connection, exc_type, exc_value, tb) -> None:
    """RQ's on_failure callback: the runner itself crashed (or hit the RQ timeout). The job says
    so in one line with the traceback's tail, and any trainer left running is stopped."""
    from training.backends import backend_for
    from training.models import TrainingJob
    from training.services import training_job_fail

    job_id = rq_job.args[0] if rq_job.args else None
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None or job.is_terminal:
        return
    if job.external_id:
        try:
            backend_for(job).cancel(job)
        except Exception:  # noqa: BLE001
            logger.exception("Could not stop the trainer of %s", job.id)
    tail = "".join(traceback.format_exception(exc_type, exc_value, tb))[-4000:]
    training_job_fail(job=job, reason=f"runner error: {exc_type.__name__}: {exc_value}",
                      category="runner_error", log_tail=tail)


def webhook_deliver(delivery_id: int) -> int:
    """Send one webhook delivery (queue `default`); raises so RQ retries with backoff."""
    from training.webhooks import webhook_deliver as deliver

    return deliver(delivery_id=delivery_id)


class _ReconcileOnStart:
    def work(self, *args, **kwargs):
        from training.services import training_jobs_reconcile

        try:
            summary = training_jobs_reconcile()
            logger.info("Reconciled training jobs at worker start: %s", summary)
        except Exception:  # noqa: BLE001 - a worker must start even if the DB hiccups
            logger.exception("Reconciling training jobs at worker start failed")
        return super().work(*args, **kwargs)


class ReconcilingWorker(_ReconcileOnStart, Worker):
    """`manage.py rqworker training default --worker-class training.jobs.ReconcilingWorker`:
    runs the reconciler once before taking jobs, so a restarted worker picks up after the one
    that was killed."""


class ReconcilingSimpleWorker(_ReconcileOnStart, SimpleWorker):
    """The same without forking (tests, platforms without fork)."""
