"""The compute backend registry: which backend runs a job.

`job.backend` is fixed when the job is created (tenant setting `compute_backend`, else
`settings.TRAINING_BACKEND`), so a job keeps being polled by the backend that started it even if
the setting changes later. Backends are imported lazily: the Slurm one pulls in paramiko.
"""

from __future__ import annotations

from training.backends.base import ComputeBackend

BACKEND_NAMES = ("local", "slurm")


def backend_for(job) -> ComputeBackend:
    """The backend object for a job (`job.backend`: "local" or "slurm")."""
    name = getattr(job, "backend", None) or "local"
    if name == "local":
        from training.backends.local import LocalBackend

        return LocalBackend()
    if name == "slurm":
        from training.backends.slurm import SlurmBackend

        return SlurmBackend()
    raise ValueError(f"unknown compute backend {name!r}; expected one of {BACKEND_NAMES}")
