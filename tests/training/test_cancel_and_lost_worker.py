"""A real `manage.py rqworker` process runs the trainer: cancel while running stops the child
within seconds and ends `cancelled`; a worker killed with SIGKILL mid-run does not leave the job
`running`: the reconciler stops the orphaned trainer and resumes the job from its last checkpoint
with a new runner (attempt 2), or fails it ("lost worker") when it cannot resume."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.training.conftest import add_corrections, start_worker_process, wait_for
from training.backends.local import process_alive

LONG_RUN = {"min_feedback_count": 10, "epochs": 100, "batch_size": 1, "learning_rate": 1e-3}


def _start_long_job(ctx) -> str:
    add_corrections(ctx, [(f"Question {i}?", "Wrong.", f"Answer {i}.") for i in range(12)])
    response = ctx.client.post(ctx.url("train/lora"), LONG_RUN, format="json")
    assert response.status_code == 201, response.content
    return response.json()["job_id"]


def _wait_running(job_id: str, worker, timeout: float = 240):
    from training.models import TrainingJob

    def running():
        assert worker.poll() is None, "the worker exited early"
        job = TrainingJob.objects.get(pk=job_id)
        assert job.status not in ("failed", "cancelled", "completed"), job.failure_reason
        return job if job.status == "running" else None

    return wait_for(running, timeout, interval=0.5, message="the job to run")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_cancel_stops_a_running_trainer_within_seconds(make_tenant, redis_url, rq_connection,
                                                       training_paths, base_model, tmp_path):
    from training.models import TrainingJob

    ctx = make_tenant("cancel-me")
    job_id = _start_long_job(ctx)
    worker = start_worker_process(redis_url, training_paths, tmp_path / "worker.log")
    try:
        job = _wait_running(job_id, worker)
        pid = int(job.external_id)
        assert process_alive(pid)
        started = time.monotonic()
        response = ctx.client.post(ctx.url(f"train/{job_id}/cancel"))
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        wait_for(lambda: not process_alive(pid), 15, message="the trainer to stop")
        print(f"trainer stopped {time.monotonic() - started:.1f}s after the cancel")
        assert worker.wait(timeout=60) == 0  # burst worker: done once the runner returned
    finally:
        if worker.poll() is None:
            worker.kill()
    assert not os.path.exists(f"/proc/{pid}")  # reaped by its parent, not a zombie
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "cancelled" and job.cancel_requested
    statuses = [e.to_status for e in job.events.exclude(to_status="")]
    assert statuses == ["queued", "preparing", "running", "cancelled"]
    assert ctx.client.post(ctx.url(f"train/{job_id}/cancel")).status_code == 409


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_worker_killed_mid_run_leaves_no_job_running(make_tenant, redis_url, rq_connection,
                                                       training_paths, base_model, tmp_path,
                                                       settings):
    """No resubmissions left (TRAINING_MAX_RESUBMITS = 0): the job fails as `lost worker`."""
    from training.models import TrainingJob
    from training.services import training_jobs_reconcile

    settings.TRAINING_MAX_RESUBMITS = 0
    ctx = make_tenant("killed")
    job_id = _start_long_job(ctx)
    worker = start_worker_process(redis_url, training_paths, tmp_path / "worker.log")
    try:
        job = _wait_running(job_id, worker)
        pid = int(job.external_id)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # The trainer is an orphan now (own session), still training; nobody updates the job.
    assert process_alive(pid)
    assert TrainingJob.objects.get(pk=job_id).status == "running"
    assert training_jobs_reconcile(stale_after_seconds=60)["failed"] == []  # not stale yet
    time.sleep(3)
    summary = training_jobs_reconcile(stale_after_seconds=2)
    assert summary["failed"] == [job_id]
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "failed" and job.failure_category == "lost_worker"
    assert job.failure_reason.startswith("lost worker")
    wait_for(lambda: not process_alive(pid), 15, message="the orphaned trainer to stop")
    body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
    assert body["status"] == "failed" and body["failure_reason"].startswith("lost worker")
    assert body["log_tail"] is not None
    assert training_jobs_reconcile(stale_after_seconds=2)["failed"] == []  # idempotent


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_job_that_lost_its_worker_resumes_from_its_checkpoint(
        make_tenant, redis_url, rq_connection, training_paths, base_model, tmp_path):
    """Worker and trainer both killed with SIGKILL after the first epoch's checkpoint (a machine
    that went down): the reconciler queues a resume, a new worker starts the trainer again with
    `--resume` from that checkpoint, and the job completes as attempt 2 with its adapter."""
    from pathlib import Path

    from training.models import TrainingJob
    from training.services import training_jobs_reconcile

    ctx = make_tenant("resumed")
    add_corrections(ctx, [(f"Question {i}?", "Wrong.", f"Answer {i}.") for i in range(12)])
    response = ctx.client.post(ctx.url("train/lora"), {
        "min_feedback_count": 10, "epochs": 4, "batch_size": 2, "learning_rate": 1e-3},
        format="json")
    assert response.status_code == 201, response.content
    job_id = response.json()["job_id"]
    worker = start_worker_process(redis_url, training_paths, tmp_path / "worker.log")
    try:
        job = _wait_running(job_id, worker)
        checkpoints = Path(job.work_dir) / "output" / "checkpoints"
        wait_for(lambda: any((c / "trainer_state.json").is_file()
                             for c in checkpoints.glob("checkpoint-*")),
                 240, interval=0.2, message="the first checkpoint")
        pid = int(TrainingJob.objects.get(pk=job_id).external_id)
        os.kill(worker.pid, signal.SIGKILL)
        os.killpg(pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    wait_for(lambda: not process_alive(pid), 15, message="the trainer to die")
    time.sleep(3)
    summary = training_jobs_reconcile(stale_after_seconds=2)
    assert summary["resumed"] == [job_id] and summary["failed"] == []
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "running" and job.attempt == 2 and job.external_id == ""

    worker = start_worker_process(redis_url, training_paths, tmp_path / "worker2.log")
    try:
        assert worker.wait(timeout=600) == 0  # burst: returns once the resumed run ended
    finally:
        if worker.poll() is None:
            worker.kill()
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "completed", (job.failure_reason, job.log_tail)
    assert job.attempt == 2
    assert job.events.filter(type="resumed").exists()
    assert json.loads(Path(job.work_dir, "job.json").read_text())["resume"] is True
    body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
    assert body["status"] == "completed" and body["adapter_version"] == "v1"
