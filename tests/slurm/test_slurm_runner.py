"""Cluster jobs through the product: the API queues a job for a tenant whose compute backend is
Slurm, a real RQ worker prepares and submits it over SSH and lets go, and `manage.py
poll_cluster_jobs` advances it with the runner until the adapter version exists. And a job that
hits its 1-minute time limit is resubmitted with resume and completes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.slurm.helpers import submit_like_runner
from training.backends.slurm import SlurmBackend
from training.services import gpu_hours_for
from training.trainer.events import read_events

pytestmark = pytest.mark.slurm


@pytest.fixture
def product_paths(slurm_settings, tiny_base_path, media_root):
    slurm_settings.BASE_MODEL_PATH = str(tiny_base_path)
    slurm_settings.BASE_MODEL_HF_ID = ""
    return slurm_settings


def _post(ctx, path, body, status=(200, 201)):
    response = ctx.client.post(ctx.url(path), body, format="json")
    assert response.status_code in status, response.content
    return response.json() if response.content else None


def _add_corrections(ctx, n: int) -> None:
    for i in range(n):
        conv = f"c{i}"
        _post(ctx, "conversations", {"conversation_id": conv, "messages": [
            {"message_id": f"{conv}-q", "role": "user",
             "content": f"What is the code word number {i}?"},
            {"message_id": f"{conv}-a", "role": "assistant", "content": "I am not sure."},
        ]})
        _post(ctx, "feedback", {"conversation_id": conv, "message_id": f"{conv}-a",
                                "type": "correction",
                                "correction": f"The code word number {i} is lantern-{i * 7}."},
              status=(201,))


def _run_worker_burst() -> None:
    import django_rq
    from rq import SimpleWorker

    queue = django_rq.get_queue("training")
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_api_trains_on_the_cluster_via_the_worker_and_the_poller(make_tenant, rq_connection,
                                                                     product_paths):
    from adapters.models import AdapterVersion
    from training.models import TrainingJob, TrainingMetric
    from training.services.settings import training_settings_update

    ctx = make_tenant("shop", plan="pro")
    training_settings_update(tenant=ctx.tenant, changes={"compute_backend": "slurm"})
    _add_corrections(ctx, 56)
    created = _post(ctx, "train/lora", {"lora_r": 8, "lora_alpha": 16, "epochs": 12,
                                        "learning_rate": 3e-3, "batch_size": 8,
                                        "warmup_ratio": 0.0})
    job_id = created["job_id"]
    assert created["status"] == "queued" and created["backend"] == "slurm"

    started = time.monotonic()
    _run_worker_burst()  # prepares, submits over SSH, and returns: no worker waits on Slurm
    assert time.monotonic() - started < 60
    job = TrainingJob.objects.get(pk=job_id)
    assert job.backend == "slurm" and job.external_id.isdigit(), job.failure_reason
    assert job.status in ("preparing", "running")

    statuses, metrics_while_running = [], 0
    deadline = time.monotonic() + 240
    while True:
        call_command("poll_cluster_jobs")
        job.refresh_from_db()
        if not statuses or statuses[-1] != job.status:
            statuses.append(job.status)
        if job.status == "running":
            metrics_while_running = max(metrics_while_running,
                                        TrainingMetric.objects.filter(job=job).count())
        if job.is_terminal:
            break
        assert time.monotonic() < deadline, f"still {job.status}"
        time.sleep(1)

    assert job.status == "completed", (job.failure_reason, job.log_tail)
    assert "running" in statuses and statuses[-1] == "completed"
    assert metrics_while_running > 0  # the loss curve updated live, while the job ran
    body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
    assert body["status"] == "completed" and body["progress"] == 1.0
    points = ctx.client.get(ctx.url(f"train/{job_id}/metrics")).json()
    assert points  # the curve the user sees
    version = AdapterVersion.objects.get(tenant=ctx.tenant, job=job)
    assert version.files

    attempts = job.resources["slurm"]["attempts"]
    assert [a["state"] for a in attempts] == ["COMPLETED"]
    assert job.gpu_hours == pytest.approx(
        gpu_hours_for("debug", 1, 0, 1, 0, attempts[0]["elapsed_seconds"]), abs=1e-6)
    assert job.gpu_hours > 0


CHECKPOINT_EVERY = 16


def _seconds_per_step(tiny_base_path: Path, folder: Path) -> float:
    """How long one training step takes right now on one core (the machine is shared)."""
    import subprocess
    import sys

    from tests.slurm.helpers import REPO, write_bundle

    # The same cadence of evaluations and checkpoints as the job itself: they cost time too.
    write_bundle(folder, "train_calibrate01", tiny_base_path,
                 train={"epochs": 12, "eval_every": CHECKPOINT_EVERY,
                        "save_every": CHECKPOINT_EVERY})
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "training.trainer", "--config",
                    str(folder / "job.json")], cwd=REPO, env=env, capture_output=True,
                   check=True, timeout=300)
    from datetime import datetime

    steps = read_events(folder / "output" / "events.jsonl")
    steps = [e for e in steps if e["type"] == "step"]
    first, last = steps[2], steps[-1]
    seconds = (datetime.fromisoformat(last["ts"].replace("Z", "+00:00"))
               - datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))).total_seconds()
    return seconds / (last["step"] - first["step"])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_job_that_hits_its_time_limit_is_resubmitted_with_resume_and_completes(
        make_slurm_job, product_paths, tiny_base_path, tmp_path, rq_connection):
    from training.models import TrainingEvent

    product_paths.SLURM_TIME_LIMIT = "00:01:00"
    product_paths.TRAINING_MAX_RESUBMITS = 4
    # Enough work for ~100 s on this machine now: Slurm ends the first attempt at 60-90 s,
    # after several checkpoints; the resumed attempt finishes the rest (a third one may be
    # needed when the shared machine slows down meanwhile).
    per_step = _seconds_per_step(tiny_base_path, tmp_path / "calibration")
    steps = max(300, int(100 / per_step))
    epochs = -(-steps // 4)
    job = make_slurm_job(train={"epochs": epochs, "eval_every": CHECKPOINT_EVERY,
                                "save_every": CHECKPOINT_EVERY, "early_stopping_patience": None})
    submit_like_runner(SlurmBackend(), job)

    deadline = time.monotonic() + 420
    while True:
        call_command("poll_cluster_jobs", "--interval", "2")
        job.refresh_from_db()
        if job.is_terminal:
            break
        assert time.monotonic() < deadline, f"still {job.status}, attempt {job.attempt}"
        time.sleep(2)

    assert job.status == "completed", (job.failure_reason, job.log_tail)
    attempts = job.resources["slurm"]["attempts"]
    assert attempts[0]["state"] == "TIMEOUT" and attempts[0]["resume"] is False
    assert attempts[-1]["state"] == "COMPLETED" and attempts[-1]["resume"] is True
    assert job.attempt == len(attempts) >= 2
    assert len({a["slurm_id"] for a in attempts}) == len(attempts)
    resubmitted = TrainingEvent.objects.filter(job=job, type="resubmitted")
    assert resubmitted.count() == len(attempts) - 1
    assert "TIMEOUT" in resubmitted.first().message
    # The resumed trainer started from a checkpoint, not from scratch.
    restarts = TrainingEvent.objects.filter(job=job, type="trainer_started").order_by("id")
    assert restarts.count() == len(attempts)
    assert (restarts.last().data.get("resumed_from_step") or 0) > 0
    # Every attempt is billed: the GPU-hours are the sum over attempts.
    assert job.gpu_hours == pytest.approx(sum(a["gpu_hours"] for a in attempts))
    assert attempts[0]["elapsed_seconds"] >= 60
