"""Seam 3: the compute backend. The runner in training.services owns a job's status; a backend
only submits, polls, cancels and fetches. It writes no database row: what it measured (the
trainer's events, the cluster's state, the resources a Slurm attempt used) it reports in a
`PollResult`, and the services store it and bill it.

A backend reads the trainer's `events.jsonl` from `job.events_offset` onwards (through
`training.trainer.events.read_events_from`), so a restarted reader loses nothing and sees
nothing twice. Backends import no service: the import arrow points from services to backends.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# States a backend reports (not job statuses: the runner maps them).
QUEUED = "queued"        # accepted, not started (Slurm PENDING...)
RUNNING = "running"      # the trainer runs
COMPLETED = "completed"  # the trainer exited 0; results can be fetched
FAILED = "failed"        # the trainer or the allocation failed; see `reason`
CANCELLED = "cancelled"  # cancelled by scancel / SIGTERM
RETRY = "retry"          # lost to the cluster (TIMEOUT, PREEMPTED, NODE_FAIL): resubmit with resume
UNKNOWN = "unknown"      # could not ask (SSH down...): keep the last known state, poll again


@dataclass
class PollResult:
    state: str
    events: list[dict] = field(default_factory=list)
    new_offset: int = 0
    reason: str = ""
    log_tail: str = ""
    # What the job used, as the backend measured it, for the services to account (Slurm:
    # slurm_id, state, elapsed_seconds, request); empty when there is nothing to bill.
    usage: dict = field(default_factory=dict)


class ComputeBackend(Protocol):
    name: str

    def submit(self, job, bundle_dir: Path) -> str:
        """Start the trainer on the job bundle (job.json + data). Returns the external id."""

    def poll(self, job) -> PollResult:
        """Report the state and the trainer events written since `job.events_offset`."""

    def cancel(self, job) -> None:
        """Stop the trainer (SIGTERM locally, scancel on Slurm). Idempotent."""

    def fetch(self, job) -> Path:
        """A local folder holding `adapter/` and `manifest.json` of a completed job."""
