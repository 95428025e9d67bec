"""Writes for training jobs, one module per concern; this package keeps the public names.

The job's life (ARCHITECTURE "Job states"): a `TrainingJob` row is created `queued` and only then,
on commit, its id goes to the RQ `training` queue (`create`, `queue`). One runner
(`training_job_run`, in the worker) moves it `preparing` (`bundle`: snapshot + job.json) and
hands it to the compute backend; each poll step (`training_job_advance`, `runner`) turns the
trainer's new events into metric rows and status fields (`progress`) and maps the backend's
state to `running` / `completed` / `failed` / `cancelled`, resubmitting what the cluster lost
(`resubmit`). Transitions go through `training_job_transition` (`transitions`), which only
moves forward and logs a TrainingEvent each time.

What the runner never sees (a worker killed with SIGKILL, a Redis that lost its queue) the
reconciler catches (`reconcile`). Cancel and retry (`cancel`); automatic training (`auto`);
GPU-hour billing, the allocation limit and the cluster poller (`cluster`); parameters and the
version a job continues from (`params`).

Modules:
    params      JobRequest, training_params_resolve, base model, parent version
    create      training_job_create (checks, quota, estimate, row, snapshot)
    queue       training_job_enqueue, RQ entries
    transitions the state machine, training_job_fail, training_job_event
    bundle      the trainer's input folder (job.json)
    progress    the trainer's events -> metrics and status fields
    runner      training_job_run, training_job_advance, completion
    resubmit    a job the cluster lost runs again from its checkpoint
    cancel      training_job_cancel, training_job_retry
    reconcile   training_jobs_reconcile
    cluster     GPU-hour billing per Slurm attempt, allocation check, slurm_jobs_poll
    auto        automatic training
"""

from training.services.auto import (
    feedback_saved_auto_train,
    training_auto_check,
    training_auto_check_all,
)
from training.services.bundle import (
    bundle_dir_for,
    training_job_bundle_config_resume,
    training_job_bundle_write,
)
from training.services.cancel import training_job_cancel, training_job_retry
from training.services.cluster import gpu_hours_for, slurm_allocation_check, slurm_jobs_poll
from training.services.create import training_job_create
from training.services.params import JobRequest, training_params_resolve
from training.services.queue import QUEUE_NAME, training_job_enqueue
from training.services.reconcile import training_jobs_reconcile
from training.services.runner import training_job_advance, training_job_run
from training.services.transitions import (
    FAILURE_LABELS,
    LOST_WORKER,
    RUNNER_ERROR,
    WEBHOOK_STATUSES,
    InvalidTransition,
    training_job_event,
    training_job_fail,
    training_job_transition,
)

__all__ = [
    "FAILURE_LABELS", "LOST_WORKER", "QUEUE_NAME", "RUNNER_ERROR", "WEBHOOK_STATUSES",
    "InvalidTransition", "JobRequest", "bundle_dir_for", "feedback_saved_auto_train",
    "gpu_hours_for", "slurm_allocation_check", "slurm_jobs_poll", "training_auto_check",
    "training_auto_check_all", "training_job_advance", "training_job_bundle_config_resume",
    "training_job_bundle_write", "training_job_cancel", "training_job_create",
    "training_job_enqueue", "training_job_event", "training_job_fail", "training_job_retry",
    "training_job_run", "training_job_transition", "training_jobs_reconcile",
    "training_params_resolve",
]
