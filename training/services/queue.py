"""The RQ `training` queue: putting a job's id on it, cancelling and checking its entry."""

from __future__ import annotations

import logging
import time

from training.models import TrainingJob

logger = logging.getLogger(__name__)

QUEUE_NAME = "training"


def training_job_enqueue(*, job_id: str) -> str | None:
    """Put the job's id on the RQ `training` queue, now (callers run it on commit, so the queue's
    own on-commit deferral is switched off). If Redis is unreachable the job stays queued
    without an RQ job and the reconciler enqueues it later; the request that created it does not
    fail."""
    import django_rq
    from rq import Callback

    job = TrainingJob.objects.get(pk=job_id)
    if job.status != TrainingJob.QUEUED:
        return None
    rq_id = f"{job.id}-{int(time.time() * 1000)}"
    try:
        django_rq.get_queue(QUEUE_NAME, commit_mode="auto").enqueue(
            "training.jobs.training_job_execute", job.id, job_id=rq_id,
            on_failure=Callback("training.jobs.training_job_on_failure"),
            result_ttl=86400, failure_ttl=7 * 86400,
        )
    except Exception:  # noqa: BLE001 - Redis down: the reconciler re-enqueues
        logger.exception("Could not enqueue training job %s; the reconciler will retry", job.id)
        return None
    TrainingJob.objects.filter(pk=job.id).update(rq_job_id=rq_id)
    return rq_id


def training_job_resume_enqueue(*, job_id: str) -> str | None:
    """Queue the runner that resumes a local job from its checkpoint (after a lost worker). If
    Redis is unreachable the job's heartbeat goes stale again and the reconciler retries."""
    import django_rq
    from rq import Callback

    rq_id = f"{job_id}-resume-{int(time.time() * 1000)}"
    try:
        django_rq.get_queue(QUEUE_NAME, commit_mode="auto").enqueue(
            "training.jobs.training_job_resume_execute", job_id, job_id=rq_id,
            on_failure=Callback("training.jobs.training_job_on_failure"),
            result_ttl=86400, failure_ttl=7 * 86400,
        )
    except Exception:  # noqa: BLE001
        logger.exception("Could not enqueue the resume of %s; the reconciler will retry", job_id)
        return None
    TrainingJob.objects.filter(pk=job_id).update(rq_job_id=rq_id)
    return rq_id


def rq_job_cancel(rq_job_id: str) -> None:
    """Cancel a queue entry; one that is gone or unreachable is left (the runner skips a job
    that is no longer queued anyway)."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        connection = django_rq.get_connection(QUEUE_NAME)
        Job.fetch(rq_job_id, connection=connection).cancel()
    except NoSuchJobError:
        pass
    except Exception:  # noqa: BLE001 - the runner skips a job that is no longer queued anyway
        logger.warning("Could not cancel RQ job %s", rq_job_id, exc_info=True)


def rq_job_alive(rq_job_id: str) -> bool:
    """Whether the RQ job still exists and can still run (queued, scheduled, started...)."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        rq_job = Job.fetch(rq_job_id, connection=django_rq.get_connection(QUEUE_NAME))
    except NoSuchJobError:
        return False
    status = rq_job.get_status(refresh=True)
    return status in ("queued", "started", "deferred", "scheduled")
