"""Seam 3: the compute backend. The runner in training.services owns a job's status; a backend
only submits, reports and fetches.

A backend reads the trainer's `events.jsonl` from `job.events_offset` onwards, so a restarted
reader loses nothing and sees nothing twice.
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
