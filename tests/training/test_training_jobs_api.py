"""The job endpoints without a worker: the job document, the list, cancel while queued, the
reconciler's requeue, tenant isolation of every endpoint, the admin's actions."""

from __future__ import annotations

from django.contrib.admin.utils import quote

from tests.training.conftest import (
    LORA_SMALL,
)
from training.models import TrainingJob


def test_the_job_document_reads_as_the_seed_prints_it(ready, capsys):
    response = ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json")
    job_id = response.json()["job_id"]
    status = ready.client.get(ready.url(f"train/{job_id}")).json()
    for key in ("job_id", "status", "progress", "current_epoch", "total_epochs", "metrics",
                "resources", "params", "estimated_duration_minutes", "estimated_cost", "cost",
                "failure_reason", "created_at", "started_at", "finished_at", "adapter_version"):
        assert key in status
    assert set(status["metrics"]) >= {"loss", "learning_rate", "grad_norm",
                                      "samples_processed", "tokens_processed"}
    assert set(status["resources"]) >= {"gpus", "gpu_memory_used_gb", "training_speed"}
    print(f"Status: {status['status']}")
    print(f"Progress: {status['progress'] * 100:.1f}%")
    print(f"Current epoch: {status['current_epoch']}/{status['total_epochs']}")
    assert capsys.readouterr().out == "Status: queued\nProgress: 0.0%\nCurrent epoch: 0/1\n"

    listing = ready.client.get(ready.url("train")).json()
    assert listing["count"] == 1 and listing["results"][0]["job_id"] == job_id


def test_jobs_are_listed_newest_first_and_paginated(ready):
    ids = [ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json").json()["job_id"]
           for _ in range(3)]
    page = ready.client.get(ready.url("train") + "?page_size=2").json()
    assert page["count"] == 3 and [j["job_id"] for j in page["results"]] == ids[::-1][:2]
    assert page["next"]


def test_it_cancels_a_queued_job_without_running_it(ready, rq_connection,
                                                    django_capture_on_commit_callbacks):
    import django_rq
    from rq.job import Job

    from tenants.models import AuditLogEntry

    with django_capture_on_commit_callbacks(execute=True):
        job_id = ready.client.post(ready.url("train/lora"), LORA_SMALL,
                                   format="json").json()["job_id"]
    job = TrainingJob.objects.get(pk=job_id)
    assert job.rq_job_id and django_rq.get_queue("training").count == 1
    response = ready.client.post(ready.url(f"train/{job_id}/cancel"))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert Job.fetch(job.rq_job_id, connection=rq_connection).get_status() == "canceled"
    assert django_rq.get_queue("training").count == 0
    assert AuditLogEntry.objects.filter(action="training.job_cancelled", target=job_id).exists()
    again = ready.client.post(ready.url(f"train/{job_id}/cancel"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_not_cancellable"
    # Even if the queue entry had survived, the runner does not start a cancelled job.
    from training.services import training_job_run

    assert training_job_run(job_id=job_id).status == "cancelled"
    events = ready.client.get(ready.url(f"train/{job_id}/events")).json()["events"]
    assert [e["to_status"] for e in events] == ["queued", "cancelled"]


def test_the_reconciler_requeues_a_queued_job_whose_queue_entry_was_lost(ready, rq_connection):
    import django_rq

    from training.services import training_jobs_reconcile

    job_id = ready.client.post(ready.url("train/lora"), LORA_SMALL,
                               format="json").json()["job_id"]
    # The on-commit enqueue never ran (test transaction): as if Redis had lost the entry.
    assert django_rq.get_queue("training").count == 0
    summary = training_jobs_reconcile(queued_grace_seconds=0)
    assert summary["requeued"] == [job_id]
    assert django_rq.get_queue("training").count == 1
    assert TrainingJob.objects.get(pk=job_id).events.filter(type="requeued").exists()
    assert training_jobs_reconcile(queued_grace_seconds=0)["requeued"] == []


def _endpoints(job_id: str, webhook_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("post", "train/lora", {**LORA_SMALL, "dry_run": True}),
        ("post", "train/dpo", {"min_preference_pairs": 1, "dry_run": True}),
        ("get", "train", None),
        ("get", "train/usage", None),
        ("get", f"train/{job_id}", None),
        ("get", f"train/{job_id}/metrics", None),
        ("get", f"train/{job_id}/events", None),
        ("post", f"train/{job_id}/cancel", None),
        ("get", "webhooks", None),
        ("post", "webhooks", {"url": "https://example.invalid/hook"}),
        ("get", f"webhooks/{webhook_id}", None),
        ("delete", f"webhooks/{webhook_id}", None),
        ("post", "erasure", {"user_id": "nobody"}),
    ]


def test_every_endpoint_is_tenant_scoped(ready, outsider, anon, read_only):
    from training.models import Webhook

    job_id = ready.client.post(ready.url("train/lora"), LORA_SMALL,
                               format="json").json()["job_id"]
    hook = Webhook.objects.create(tenant=ready.tenant, url="https://example.invalid/h")
    for method, path, body in _endpoints(job_id, hook.id):
        url = ready.url(path)
        call = getattr(outsider.client, method)
        response = call(url, body, format="json") if body is not None else call(url)
        assert response.status_code == 404, (method, path, response.status_code)
        response = getattr(anon, method)(url, body, format="json")
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "not_authenticated"
        if method != "get":
            response = getattr(read_only.client, method)(url, body, format="json")
            assert response.status_code == 403, (method, path)
        else:
            assert read_only.client.get(url).status_code == 200, path
    # The owner reaches all of them (writes last: cancel and delete change state).
    for method, path, body in _endpoints(job_id, hook.id):
        call = getattr(ready.client, method)
        response = call(ready.url(path), body, format="json") if body is not None \
            else call(ready.url(path))
        assert response.status_code in (200, 201, 204), (method, path, response.content)
    # Another tenant's job id is as unknown to the owner's key under the owner's slug too.
    other_job = outsider.client.get(outsider.url(f"train/{job_id}"))
    assert other_job.status_code == 404


def test_the_admin_lists_jobs_and_cancels_and_retries_them(ready, admin_client):
    ids = [ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json").json()["job_id"]
           for _ in range(2)]
    listing = admin_client.get("/admin/training/trainingjob/")
    assert listing.status_code == 200 and ids[0].encode() in listing.content
    # The admin escapes primary keys in its URLs (quote): "train_40..." unquoted would read "@".
    detail = admin_client.get(f"/admin/training/trainingjob/{quote(ids[0])}/change/")
    assert detail.status_code == 200 and b"loss curve" in detail.content.lower()
    response = admin_client.post("/admin/training/trainingjob/",
                                 {"action": "cancel_jobs", "_selected_action": [ids[0]]})
    assert response.status_code == 302
    assert TrainingJob.objects.get(pk=ids[0]).status == "cancelled"
    admin_client.post("/admin/training/trainingjob/",
                      {"action": "retry_jobs", "_selected_action": [ids[0]]})
    retried = TrainingJob.objects.exclude(pk__in=ids).get()
    assert retried.triggered_by == "retry" and retried.status == "queued"
