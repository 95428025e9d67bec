"""The job's state machine: forward-only transitions, each logged as a TrainingEvent, failures
with a one-line reason, and the webhooks a transition triggers (on commit)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from training.failures import CLUSTER_FAULT
from training.models import TrainingEvent, TrainingJob

_ORDER = {TrainingJob.QUEUED: 0, TrainingJob.PREPARING: 1, TrainingJob.RUNNING: 2}
WEBHOOK_STATUSES = {"queued", "running", "completed", "failed", "cancelled"}
# Failure categories shown to users; the trainer's own categories plus the platform's.
LOST_WORKER = "lost_worker"
RUNNER_ERROR = "runner_error"
# The first words of a failed job's one-line reason, by category.
FAILURE_LABELS = {
    "bad_data": "bad data", "bad_config": "bad configuration", "out_of_memory": "out of memory",
    "nan_loss": "NaN loss", "crash": "trainer crash", LOST_WORKER: "lost worker",
    RUNNER_ERROR: "runner error", CLUSTER_FAULT: "cluster fault",
}


class InvalidTransition(ValueError):
    """A status change that would move a job backwards or out of a terminal state."""


def _allowed(current: str, to: str) -> bool:
    if current in TrainingJob.TERMINAL:
        return False
    if to in (TrainingJob.FAILED, TrainingJob.CANCELLED):
        return True
    if to == TrainingJob.COMPLETED:
        return current == TrainingJob.RUNNING
    return to in _ORDER and _ORDER[to] == _ORDER[current] + 1


def training_job_transition(*, job: TrainingJob, to_status: str, message: str = "",
                            data: dict | None = None, updates: dict | None = None,
                            webhooks: bool = True) -> TrainingJob:
    """Move a job to `to_status` (forward only) and log it; returns the fresh row.

    The row is locked (select_for_update) and re-read, so two writers (the runner and a cancel
    request, say) are serialised and the second sees the first's status: a job that was
    cancelled cannot then be moved to running. Raises InvalidTransition otherwise.
    `updates` are other fields to set in the same write (failure reason, log tail...).
    `webhooks=False`: the caller sends the transition's webhooks itself (the runner's completion,
    which waits for the new version's evaluation).
    """
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if not _allowed(locked.status, to_status):
            raise InvalidTransition(f"{locked.id}: {locked.status} -> {to_status} is not allowed")
        now = timezone.now()
        before = locked.status
        locked.status = to_status
        fields = {"status"}
        if to_status == TrainingJob.RUNNING and locked.started_at is None:
            locked.started_at = now
            fields.add("started_at")
        if to_status in TrainingJob.TERMINAL:
            locked.finished_at = now
            fields.add("finished_at")
        for name, value in (updates or {}).items():
            setattr(locked, name, value)
            fields.add(name)
        locked.save(update_fields=sorted(fields))
        TrainingEvent.objects.create(job=locked, type="status", from_status=before,
                                     to_status=to_status, message=message, data=data or {},
                                     created_at=now)
        if to_status in WEBHOOK_STATUSES and webhooks:
            webhooks_on_commit(locked, to_status)
    return locked


def webhooks_on_commit(job: TrainingJob, status: str) -> None:
    """Create the job's webhook deliveries for `status` once the transaction commits."""
    from training import webhooks

    job_id = job.id
    transaction.on_commit(lambda: webhooks.webhook_deliveries_create(job_id=job_id,
                                                                       status=status))


def training_job_fail(*, job: TrainingJob, reason: str, category: str, log_tail: str = "",
                      data: dict | None = None) -> TrainingJob:
    """Mark a job failed with a one-line reason (no-op if it already ended)."""
    reason = " ".join(str(reason).split())[:500] or "unknown failure"
    try:
        return training_job_transition(
            job=job, to_status=TrainingJob.FAILED, message=reason,
            data={"category": category, **(data or {})},
            updates={"failure_reason": reason, "failure_category": category,
                     "log_tail": log_tail[-8000:]},
        )
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)


def training_job_event(*, job: TrainingJob, type: str, message: str = "",
                       data: dict | None = None) -> TrainingEvent:
    return TrainingEvent.objects.create(job=job, type=type, message=message, data=data or {})


def training_job_to_running(job: TrainingJob) -> TrainingJob:
    """Move a preparing job to running (the first optimizer step was logged); a job that
    meanwhile moved on is returned as it now is."""
    try:
        return training_job_transition(job=job, to_status=TrainingJob.RUNNING,
                                       message="Training in progress")
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)
