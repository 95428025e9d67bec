"""Fault injection: the platform recovers by itself, loses no accepted feedback, leaves no job
stuck, and every affected job says what happened.

- Redis killed while a job is queued, a job created during the outage, Redis back EMPTY (a
  private redis-server on its own port; the machine's shared Redis is never touched): both jobs
  complete after the next worker start reconciles (`training.jobs.ReconcilingSimpleWorker`).
- The trainer child process killed with SIGKILL mid-run: the job fails with a clear reason and
  the log tail; the worker survives.
- PostgreSQL backends terminated (`pg_terminate_backend` on this test's database only, never a
  cluster restart) again and again during concurrent ingestion through gunicorn, until requests
  have really been hit (503 `database_unavailable` with Retry-After, counted; the fault lasts
  until enough were): clients retry with their Idempotency-Key; every feedback ends stored
  exactly once with exactly the content sent; the server answers normally as soon as the fault
  stops.
(A worker killed with SIGKILL mid-training: tests/training/test_cancel_and_lost_worker.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests

from tests.resilience.conftest import REPO, is_postgres, subprocess_env, wait_for

SHORT_RUN = {"min_feedback_count": 10, "epochs": 1, "batch_size": 4}
LONG_RUN = {"min_feedback_count": 10, "epochs": 100, "batch_size": 1, "learning_rate": 1e-3}


def _add_corrections(ctx, count: int = 12, prefix: str = "c") -> None:
    for i in range(count):
        conv = f"{prefix}{i}"
        response = ctx.client.post(ctx.url("conversations"), {"conversation_id": conv,
            "messages": [{"message_id": f"{conv}-q", "role": "user", "content": f"Question {i}?"},
                         {"message_id": f"{conv}-a", "role": "assistant", "content": "Wrong."}]},
            format="json")
        assert response.status_code == 201, response.content
        response = ctx.client.post(ctx.url("feedback"), {
            "conversation_id": conv, "message_id": f"{conv}-a", "type": "correction",
            "correction": f"Answer {i}."}, format="json")
        assert response.status_code == 201, response.content


def _start_worker(redis_url: str, paths: dict, log_path) -> subprocess.Popen:
    """A real `manage.py rqworker` in burst mode that reconciles before taking jobs, as a
    restarted worker does in production."""
    env = subprocess_env(REDIS_URL=redis_url, MEDIA_ROOT=paths["media"],
                         TRAINING_WORK_DIR=paths["work"], BASE_MODEL_PATH=paths["base"],
                         BASE_MODEL_HF_ID="", TRAINING_BACKEND="local",
                         # SIGABRT (`_worker_stack`) then prints every thread's stack to the log.
                         PYTHONFAULTHANDLER="1")
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "training", "--burst",
         "--worker-class", "training.jobs.ReconcilingSimpleWorker"],
        cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)


def _worker_finished(worker: subprocess.Popen, log_path, timeout: float) -> int:
    """The worker's exit code once it ends; if it has not ended within `timeout`, fail with
    where it is: SIGABRT makes its faulthandler print every thread's stack to its log."""
    try:
        return worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGABRT)
        worker.wait(timeout=30)
        pytest.fail(f"the worker had not finished {timeout:.0f}s later; its log ends:\n"
                    + log_path.read_text(errors="replace")[-6000:])


def _rq_job_exists(rq_job_id: str) -> bool:
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        Job.fetch(rq_job_id, connection=django_rq.get_connection("training"))
        return True
    except NoSuchJobError:
        return False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_jobs_queued_when_redis_is_lost_and_comes_back_empty_all_complete(
        make_tenant, private_redis, work_paths, tmp_path):
    from training.models import TrainingJob

    ctx = make_tenant("redisfault")
    _add_corrections(ctx)
    response = ctx.client.post(ctx.url("train/lora"), SHORT_RUN, format="json")
    assert response.status_code == 201, response.content
    before = TrainingJob.objects.get(pk=response.json()["job_id"])
    assert before.rq_job_id and _rq_job_exists(before.rq_job_id)

    private_redis.kill()  # the outage: what was queued is gone with the process
    response = ctx.client.post(ctx.url("train/lora"), SHORT_RUN, format="json")
    assert response.status_code == 201, response.content  # the API does not fail with Redis
    during = TrainingJob.objects.get(pk=response.json()["job_id"])
    assert during.status == "queued" and not during.rq_job_id
    feedback = ctx.client.post(ctx.url("feedback"), {"conversation_id": "c0",
                               "message_id": "c0-a", "type": "thumbs_up"}, format="json")
    assert feedback.status_code == 201  # ingestion does not need Redis

    private_redis.restart_empty()
    assert not _rq_job_exists(before.rq_job_id)
    # The outage lasted past the reconciler's grace period for queued jobs.
    TrainingJob.objects.filter(status="queued").update(
        created_at=TrainingJob.objects.get(pk=before.pk).created_at - timedelta(minutes=5))

    started = time.monotonic()
    worker = _start_worker(private_redis.url, work_paths, tmp_path / "worker.log")
    try:
        assert worker.wait(timeout=420) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    print(f"\nboth jobs recovered and completed in {time.monotonic() - started:.0f}s")
    for job_id in (before.pk, during.pk):
        job = TrainingJob.objects.get(pk=job_id)
        assert job.status == "completed", (job.status, job.failure_reason)
        assert job.events.filter(type="requeued").exists()
        body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
        assert body["status"] == "completed"
    versions = ctx.client.get(ctx.url("lora")).json()["versions"]
    assert len(versions) == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_killed_trainer_process_fails_its_job_with_the_reason(make_tenant, private_redis,
                                                                  work_paths, tmp_path):
    from training.backends.local import process_alive
    from training.models import TrainingJob

    ctx = make_tenant("trainerfault")
    _add_corrections(ctx)
    job_id = ctx.client.post(ctx.url("train/lora"), LONG_RUN, format="json").json()["job_id"]
    worker = _start_worker(private_redis.url, work_paths, tmp_path / "worker.log")
    try:
        def running():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            job = TrainingJob.objects.get(pk=job_id)
            assert not job.is_terminal, job.failure_reason
            return job if job.status == "running" else None

        job = wait_for(running, 300, interval=0.5, message="the job to run")
        pid = int(job.external_id)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        job = wait_for(lambda: (j := TrainingJob.objects.get(pk=job_id)).is_terminal and j,
                       60, interval=0.5, message="the job to end")
        print(f"\njob failed {time.monotonic() - killed_at:.1f}s after its trainer was killed")
        # The worker itself carried on and finished (CI saw it still running 60 s after the
        # job failed once, cause unknown: the stack dump below says where, next time).
        assert _worker_finished(worker, tmp_path / "worker.log", 180) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert not process_alive(pid)
    assert job.status == "failed"
    assert job.failure_category == "crash"
    assert "SIGKILL" in job.failure_reason and job.failure_reason.startswith("trainer crash")
    body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
    assert body["status"] == "failed" and "SIGKILL" in body["failure_reason"]
    statuses = [e.to_status for e in job.events.exclude(to_status="")]
    assert statuses == ["queued", "preparing", "running", "failed"]


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate_backends(stop: threading.Event, kills: Counter, spare: int) -> None:
    """Kill the server's connections to THIS test database (not the test's own), repeatedly."""
    from django.db import connection

    try:
        while not stop.is_set():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND pid <> %s", [spare])
                kills["terminated"] += cursor.fetchone()[0]
            kills["rounds"] += 1
            stop.wait(0.3)
    finally:
        connection.close()


def _ingest(index: int, base: str, ctx, count: int, outcome: Counter) -> list[dict]:
    session = requests.Session()
    url = f"{base}/v1/tenants/{ctx.tenant.slug}/feedback"
    results = []
    for n in range(count):
        key, message_id = str(uuid.uuid4()), f"pg-m{index}-{n}"
        body = {"conversation_id": f"pg-c{index}", "message_id": message_id,
                "type": "correction", "correction": f"Fixed {index}-{n}"}
        headers = {"Authorization": f"Bearer {ctx.secret}", "Idempotency-Key": key}
        final = None
        for attempt in range(30):
            try:
                response = session.post(url, json=body, headers=headers, timeout=(5, 60))
            except requests.RequestException:
                outcome["network_retries"] += 1
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
                continue
            if response.status_code >= 500:
                error = response.json()["error"]  # even a database outage answers the envelope
                assert error["code"] and error["message"]
                if (response.status_code, error["code"]) == (503, "database_unavailable") \
                        and response.headers.get("Retry-After"):
                    outcome["database_unavailable"] += 1  # this request saw the fault
                else:
                    outcome[f"other_{response.status_code}_{error['code']}"] += 1
                time.sleep(min(1.0, 0.05 * 2 ** attempt))
                continue
            final = response
            break
        results.append({"message_id": message_id,
                        "status": final.status_code if final is not None else None,
                        "id": final.json().get("id") if final is not None else None})
    return results


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_ingestion_survives_terminated_database_connections(make_tenant, gunicorn_server):
    if not is_postgres():
        pytest.skip("needs PostgreSQL (pg_terminate_backend): set DATABASE_URL=postgres://...")
    from feedback.models import Feedback

    ctx = make_tenant("pgfault")
    server = gunicorn_server(workers=2, threads=4)
    stop, kills, outcome = threading.Event(), Counter(), Counter()
    killer = threading.Thread(target=_terminate_backends, args=(stop, kills, _backend_pid()))
    clients, per_client = 8, 40
    killer.start()
    try:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [pool.submit(_ingest, i, server.url, ctx, per_client, outcome)
                       for i in range(clients)]
            # The fault lasts until requests have seen it (at least 2 s, at most 90 s).
            started = time.monotonic()
            while time.monotonic() - started < 90 and not (
                    time.monotonic() - started >= 2 and outcome["database_unavailable"] >= 5):
                time.sleep(0.2)
            stop.set()  # the fault ends; requests still in flight finish normally
            results = [r for f in futures for r in f.result()]
    finally:
        stop.set()
        killer.join(timeout=30)
    print(f"\n{kills['terminated']} backends terminated in {kills['rounds']} rounds; "
          f"{dict(outcome)}")
    assert kills["terminated"] > 0, "the fault never hit a connection"
    # Requests really saw the fault, and each saw it as a 503 with Retry-After, never a 500.
    assert outcome["database_unavailable"] >= 5, dict(outcome)
    assert not [k for k in outcome if k.startswith("other_")], dict(outcome)
    assert all(r["status"] == 201 for r in results), Counter(r["status"] for r in results)
    rows = Feedback.objects.filter(tenant=ctx.tenant)
    per_message = Counter(rows.values_list("message_external_id", flat=True))
    assert len(per_message) == clients * per_client
    assert set(per_message.values()) == {1}, "a feedback was stored twice"
    stored = dict(rows.values_list("message_external_id", "id"))
    assert all(stored[r["message_id"]] == r["id"] for r in results)
    # Nothing partially written: every row holds exactly what its request sent.
    expected = {f"pg-m{i}-{n}": ("correction", f"pg-c{i}", f"Fixed {i}-{n}")
                for i in range(clients) for n in range(per_client)}
    written = {m: (t, c, text) for m, t, c, text in rows.values_list(
        "message_external_id", "type", "conversation_external_id", "correction")}
    assert written == expected
    # Recovered: a fresh request right after the fault is an ordinary 201.
    response = requests.post(f"{server.url}/v1/tenants/{ctx.tenant.slug}/feedback",
                             json={"conversation_id": "after", "message_id": "after-1",
                                   "type": "thumbs_up"},
                             headers={"Authorization": f"Bearer {ctx.secret}"}, timeout=30)
    assert response.status_code == 201, response.text
