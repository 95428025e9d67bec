"""The one exception type the trainer reports failures with.

Every way a job can end badly maps to one `category` from a closed set, so the platform can show the
user a meaningful status (bad data is the tenant's to fix, out-of-memory is ours) without parsing
tracebacks.
"""

from __future__ import annotations

BAD_CONFIG = "bad_config"
BAD_DATA = "bad_data"
OUT_OF_MEMORY = "out_of_memory"
NAN_LOSS = "nan_loss"
CRASH = "crash"
CANCELLED = "cancelled"

CATEGORIES = (BAD_CONFIG, BAD_DATA, OUT_OF_MEMORY, NAN_LOSS, CRASH, CANCELLED)

# Exit codes of the CLI, one per category, so a backend that only sees the exit status (Slurm's
# sacct) still knows what happened.
EXIT_CODES = {
    BAD_CONFIG: 2,
    BAD_DATA: 3,
    OUT_OF_MEMORY: 4,
    NAN_LOSS: 5,
    CRASH: 1,
    CANCELLED: 143,
}


class TrainingFailure(Exception):
    """A job failure with a one-line, user-facing reason and a machine-readable category."""

    def __init__(self, category: str, reason: str) -> None:
        if category not in CATEGORIES:
            raise ValueError(f"unknown failure category {category!r}")
        # Events are one line each: keep the reason on one line whatever the cause said.
        self.category = category
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{category}: {self.reason}")


class JobConfigError(TrainingFailure):
    """job.json is missing, unreadable or holds a value the trainer cannot use."""

    def __init__(self, reason: str) -> None:
        super().__init__(BAD_CONFIG, reason)


class DataError(TrainingFailure):
    """A training or eval file cannot be used; the reason names the file and line."""

    def __init__(self, reason: str) -> None:
        super().__init__(BAD_DATA, reason)


class JobCancelled(TrainingFailure):
    """Raised from the SIGTERM handler so the run unwinds and reports `cancelled`."""

    def __init__(self, reason: str = "cancelled by SIGTERM") -> None:
        super().__init__(CANCELLED, reason)
