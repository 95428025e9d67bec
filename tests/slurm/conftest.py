"""Fixtures for the Slurm backend's tests: a REAL single-node Slurm and a loopback sshd.

`slurm_cluster` (session) runs scripts/slurm-up.sh when the cluster or the sshd is not up (it is
idempotent and fast when they are), and reads the settings it printed into var/slurm/env.sh.
`slurm_settings` points the Django settings at that cluster for one test. Jobs run the real
trainer on the CPU (SLURM_LAUNCHER=plain, one core each) on the tiny base model.
"""

from __future__ import annotations

import pytest

from tests.slurm.helpers import cluster_is_up, read_env_sh, slurm_up, write_bundle


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    if not cluster_is_up():
        slurm_up()
    return read_env_sh()


INT_SETTINGS = {"SLURM_SSH_PORT", "SLURM_NODES", "SLURM_GPUS_PER_NODE", "SLURM_NTASKS_PER_NODE",
                "SLURM_CPUS_PER_TASK"}


@pytest.fixture
def slurm_settings(settings, slurm_cluster, tmp_path):
    """Django settings of the test cluster (what slurm-up printed), per test."""
    for key, value in slurm_cluster.items():
        if key.startswith("SLURM_") or key == "TRAINING_BACKEND":
            setattr(settings, key, int(value) if key in INT_SETTINGS else value)
    settings.SLURM_TIME_LIMIT = "00:10:00"
    settings.SLURM_CONTAINER_BINDS = []
    settings.SLURM_SSH_TIMEOUT = 5
    settings.TRAINING_WORK_DIR = tmp_path / "jobs"
    return settings


@pytest.fixture
def make_slurm_job(db, make_tenant, tiny_base_path, slurm_settings, tmp_path):
    """A TrainingJob row with backend "slurm" and a bundle in its work_dir."""
    from training.models import TrainingJob

    tenants = {}

    def _make(*, train: dict | None = None, extra: dict | None = None, tenant_slug="acme",
              records: int = 16, **fields):
        if tenant_slug not in tenants:
            tenants[tenant_slug] = make_tenant(tenant_slug).tenant
        job = TrainingJob(tenant=tenants[tenant_slug], method="sft", backend="slurm",
                          base_model=str(tiny_base_path), status=TrainingJob.RUNNING, **fields)
        bundle = tmp_path / "bundles" / job.id
        write_bundle(bundle, job.id, tiny_base_path, train=train, extra=extra, records=records)
        job.work_dir = str(bundle)
        job.save()
        return job

    return _make
