"""The runner: prepare a queued job, submit it, and advance it poll by poll until it ends.

One runner (`training_job_run`, in the RQ worker) moves a job `preparing` (bundle: snapshot +
job.json) and hands it to the compute backend; each poll step (`training_job_advance`) turns the
trainer's new events into metric rows and status fields and maps the backend's state to
`running` / `completed` / `failed` / `cancelled`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.backends import backend_for
from training.backends import base as backend_states
from training.backends.base import PollResult
from training.models import TrainingEvent, TrainingJob
from training.services.bundle import training_job_bundle_write
from training.services.cluster import slurm_usage_record, training_job_submission_record
from training.services.progress import completion_fields, training_job_events_apply
from training.services.resubmit import training_job_resubmit
from training.services.transitions import (
    FAILURE_LABELS,
    LOST_WORKER,
    InvalidTransition,
    training_job_fail,
    training_job_to_running,
    training_job_transition,
    webhooks_on_commit,
)
from training.services.unknown import training_job_state_known, training_job_state_unknown
from training.signals import (
    DEFER_COMPLETED_WEBHOOKS,
    training_job_completed,
    training_job_succeeded,
)
from training.trainer.events import read_events_from

logger = logging.getLogger(__name__)


def training_job_run(*, job_id: str) -> TrainingJob:
    """The RQ entry point's body: prepare, submit, and (for the local backend) watch the job
    until it ends. Re-entrant: a job already past `queued` is not started twice."""
    job = TrainingJob.objects.get(pk=job_id)
    if job.status != TrainingJob.QUEUED:
        logger.info("Job %s is %s; nothing to start", job.id, job.status)
        return job
    try:
        job = training_job_transition(job=job, to_status=TrainingJob.PREPARING,
                                      message="Loading data and model",
                                      updates={"heartbeat_at": timezone.now()})
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job_id)
    backend = backend_for(job)
    try:
        bundle = training_job_bundle_write(job=job)
        TrainingJob.objects.filter(pk=job.pk).update(work_dir=str(bundle))
        job.work_dir = str(bundle)
    except Exception as exc:  # noqa: BLE001 - the job says why, the worker carries on
        logger.exception("Preparing job %s failed", job.id)
        return training_job_fail(job=job, reason=f"bad data: could not prepare the job: {exc}",
                                 category="bad_data")
    job, error = _submit(job, backend, bundle)
    if error is not None:
        return training_job_fail(job=job, reason=f"trainer crash: could not start: {error}",
                                 category="crash")
    if job.is_terminal or job.cancel_requested or not job.external_id:
        return job
    if not getattr(backend, "runs_in_worker", False):
        return job  # polled by `poll_cluster_jobs` (training.services.slurm_jobs_poll)
    return _watch(job, backend)


def training_job_resume_run(*, job_id: str) -> TrainingJob:
    """The RQ entry point's body for a local job the reconciler marked for resume (it lost its
    worker; attempt + 1, job.json resumes): start the trainer again on the same bundle and watch
    it. A job that meanwhile ended, or already has a trainer, is left as it is."""
    job = TrainingJob.objects.get(pk=job_id)
    if job.is_terminal or job.external_id or not job.work_dir:
        return job
    backend = backend_for(job)
    job, error = _submit(job, backend, Path(job.work_dir))
    if error is not None:
        return training_job_fail(job=job, reason=f"trainer crash: could not resume: {error}",
                                 category="crash")
    if job.is_terminal or job.cancel_requested or not job.external_id:
        return job
    return _watch(job, backend)


def _submit(job: TrainingJob, backend, bundle: Path) -> tuple[TrainingJob, Exception | None]:
    """Hand the bundle to the backend under the row's lock (a cancel waits, then sees the
    external id); returns the job and the error that stopped the submission, if any."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal or job.cancel_requested:
            return job, None
        try:
            external_id = backend.submit(job, bundle)
        except Exception as exc:  # noqa: BLE001
            logger.exception("Submitting job %s failed", job.id)
            return job, exc
        job.external_id = external_id
        job.heartbeat_at = timezone.now()
        billed = training_job_submission_record(job=job, backend=backend,
                                                external_id=external_id)
        job.save(update_fields=["external_id", "heartbeat_at", *billed])
        TrainingEvent.objects.create(job=job, type="submitted",
                                     message=f"Submitted to {backend.name} as {external_id}",
                                     data={"backend": backend.name,
                                           "external_id": external_id,
                                           "attempt": job.attempt})
    return job, None


def _watch(job: TrainingJob, backend) -> TrainingJob:
    """The local backend's runner stays with its job, one advance step per poll interval."""
    interval = float(getattr(settings, "TRAINING_POLL_SECONDS", 1.0))
    while True:
        job = training_job_advance(job_id=job.id)
        if job.is_terminal:
            if job.status != TrainingJob.COMPLETED:
                backend.cancel(job)  # make sure nothing is left running (idempotent)
            return job
        if job.cancel_requested:
            backend.cancel(job)
        time.sleep(interval)


def training_job_advance(*, job_id: str) -> TrainingJob:
    """One poll step of a submitted job (the local runner's loop and the Slurm poller call it).

    backend.poll -> new events stored (metric rows, status fields, events), the attempt's usage
    billed and the offset advanced in one transaction -> the backend's state mapped to the
    job's status: queued: nothing; running: -> running; completed: fetch + verify + signal ->
    completed; failed / cancelled: -> failed (with reason and log tail) / cancelled; retry:
    resubmit with resume (attempt + 1, at most TRAINING_MAX_RESUBMITS times), status stays
    running; unknown: nothing terminal, poll again later, until the state has been unknown for
    CLUSTER_UNKNOWN_GIVE_UP_SECONDS: then failed, `cluster_fault` (services/unknown.py).
    """
    job = TrainingJob.objects.select_related("tenant__plan").get(pk=job_id)
    if job.is_terminal or not job.external_id:
        return job
    backend = backend_for(job)
    result = backend.poll(job)
    job, facts = _poll_store(job, result)
    if facts is None or job.is_terminal:
        return job
    return _state_apply(job, backend, result, facts)


def _poll_store(job: TrainingJob, result: PollResult) -> tuple[TrainingJob, dict | None]:
    """Store one poll's events and usage under the row's lock; facts None when another poller
    consumed these events meanwhile (its step already stored them)."""
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        billed = slurm_usage_record(job=locked, usage=result.usage)
        if locked.events_offset != job.events_offset:
            if billed:
                locked.save(update_fields=["resources", "gpu_hours"])
            return locked, None
        facts = training_job_events_apply(locked, result.events)
        locked.events_offset = result.new_offset
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["metrics", "resources", "progress", "current_epoch",
                                   "total_epochs", "events_offset", "heartbeat_at",
                                   *(["gpu_hours"] if billed else [])])
    return locked, facts


def _state_apply(job: TrainingJob, backend, result: PollResult, facts: dict) -> TrainingJob:
    """Map the backend's state to the job's status (see training_job_advance)."""
    state = result.state
    if state == backend_states.UNKNOWN:
        return training_job_state_unknown(job=job, backend=backend, reason=result.reason)
    job = training_job_state_known(job)
    # Running means the first optimizer step was logged: data and model are loaded, and from
    # then on `metrics.loss` is a number (the seed formats it with :.4f).
    if job.status == TrainingJob.PREPARING and (facts["started"]
                                                or state == backend_states.RETRY):
        job = training_job_to_running(job)
    if state == backend_states.COMPLETED:
        return _complete(job, backend, facts["completed"] or _last_completed(job))
    if state == backend_states.FAILED:
        failed = facts["failed"] or {}
        reason = result.reason or failed.get("reason") or "trainer crash"
        category = failed.get("category") or _category_of(reason)
        label = FAILURE_LABELS.get(category)
        if label and not reason.lower().startswith(label.lower()):
            reason = f"{label}: {reason}"
        return training_job_fail(job=job, reason=reason, category=category,
                                 log_tail=result.log_tail)
    if state == backend_states.CANCELLED:
        try:
            return training_job_transition(job=job, to_status=TrainingJob.CANCELLED,
                                           message="Cancelled by user" if job.cancel_requested
                                           else f"Cancelled: {result.reason or 'by the backend'}",
                                           updates={"log_tail": result.log_tail[-8000:]})
        except InvalidTransition:
            return TrainingJob.objects.get(pk=job.pk)
    if state == backend_states.RETRY:
        return training_job_resubmit(job, backend, result.reason)
    return job


def _last_completed(job: TrainingJob) -> dict | None:
    """The trainer's `completed` event from the local bundle (an earlier poll consumed it)."""
    path = Path(job.work_dir) / "output" / "events.jsonl"
    events, _ = read_events_from(path, 0)
    return next((e for e in reversed(events) if e.get("type") == "completed"), None)


def _category_of(reason: str) -> str:
    text = reason.lower()
    for needle, category in (("out of memory", "out_of_memory"), ("nan", "nan_loss"),
                             ("bad data", "bad_data"), ("lost worker", LOST_WORKER)):
        if needle in text:
            return category
    return "crash"


def _complete(job: TrainingJob, backend, event: dict | None) -> TrainingJob:
    """Fetch, verify, hand to the adapters app (signal), mark completed."""
    from training.trainer.manifest import AdapterVerificationError, verify_adapter_dir

    try:
        result_dir = Path(backend.fetch(job))
        verify_adapter_dir(result_dir / "adapter", result_dir / "manifest.json")
    except (AdapterVerificationError, OSError, ValueError) as exc:
        return training_job_fail(job=job, reason=f"trainer crash: result failed verification: "
                                 f"{exc}", category="crash")
    if job.status == TrainingJob.PREPARING:
        job = training_job_transition(job=job, to_status=TrainingJob.RUNNING,
                                      message="Training in progress")
    try:
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
            if locked.is_terminal:
                return locked
            updates = completion_fields(locked, event)
            for name, value in updates.items():
                setattr(locked, name, value)
            responses = training_job_succeeded.send(sender=TrainingJob, job=locked,
                                                    result_dir=result_dir)
            versions = [getattr(r, "version", None) for _, r in responses if r is not None]
            label = next((v for v in versions if v), None)
            completed = training_job_transition(
                job=locked, to_status=TrainingJob.COMPLETED,
                message=f"Completed; adapter version {label}" if label else "Completed",
                data={"adapter_version": label, "cost": str(updates["cost"]),
                      "training_samples": locked.training_samples,
                      "tokens_processed": updates["metrics"].get("tokens_processed")},
                updates=updates, webhooks=False,
            )
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)
    except Exception as exc:  # noqa: BLE001 - a receiver that fails fails the job, visibly
        logger.exception("Storing the adapter of job %s failed", job.id)
        return training_job_fail(job=job, reason=f"adapter could not be stored: {exc}",
                                 category="crash")
    _completed_hooks(completed)
    return completed


def _completed_hooks(job: TrainingJob) -> None:
    """After the completion committed: `training_job_completed` (the adapters app queues the new
    version's evaluation and sends the webhook after it), else the webhook now."""
    deferred = False
    for receiver, response in training_job_completed.send_robust(sender=TrainingJob, job=job):
        if isinstance(response, Exception):
            logger.error("training_job_completed receiver %s failed for job %s: %s",
                         receiver, job.id, response)
        elif response == DEFER_COMPLETED_WEBHOOKS:
            deferred = True
    if not deferred:
        webhooks_on_commit(job, TrainingJob.COMPLETED)
