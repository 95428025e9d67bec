"""The training API without a worker: refusals (plan, readiness, parameters, quota) that create
no job, dry runs, the job document, cancel while queued, tenant isolation of every endpoint,
webhooks registration, erasure."""

from __future__ import annotations

import pytest

from tests.training.conftest import (
    add_corrections,
    add_thumb_pairs,
    give_feedback,
    log_conversation,
)
from training.models import TrainingJob

LORA_SMALL = {"min_feedback_count": 5, "epochs": 1}


def corrections(n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    return [(f"What is the code of box {i}?", "No idea.", f"Box {i} has code K{i}.")
            for i in range(offset, offset + n)]


@pytest.fixture
def ready(owner):
    add_corrections(owner, corrections(12))
    return owner


def test_it_refuses_training_on_the_free_plan(make_tenant):
    ctx = make_tenant("freebie", plan="free")
    add_corrections(ctx, corrections(3))
    response = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "plan_does_not_allow_training"
    assert not TrainingJob.objects.exists()


def test_it_refuses_when_not_ready_and_says_what_is_missing(owner):
    add_corrections(owner, corrections(3))
    response = owner.client.post(owner.url("train/lora"), {}, format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["details"]["min_feedback_count"] == 50
    assert error["details"]["available"] == 3 and error["details"]["missing"] == 47
    response = owner.client.post(owner.url("train/dpo"), {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["missing"] == 100 - 3  # a correction is a pair
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize("field,value", [
    ("lora_r", 0), ("lora_r", 257), ("lora_alpha", 0), ("lora_alpha", 513), ("epochs", 0),
    ("epochs", 101), ("learning_rate", 0), ("learning_rate", -1e-4), ("learning_rate", 0.02),
    ("batch_size", 0), ("batch_size", 513), ("warmup_ratio", -0.1), ("warmup_ratio", 0.6),
    ("weight_decay", -0.01), ("weight_decay", 1.5), ("lora_r", "sixteen"), ("epochs", 2.5),
    ("preset", "turbo"), ("target_modules", "everything"), ("learning_rte", 1e-4),
    ("lora_dropout", 1.0), ("min_feedback_count", 0),
])
def test_it_refuses_bad_lora_parameters(ready, field, value):
    response = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, field: value},
                                 format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize("field,value", [("beta", 0), ("beta", 10.5), ("beta", -1),
                                         ("min_preference_pairs", 0), ("epochs", 1000)])
def test_it_refuses_bad_dpo_parameters(ready, field, value):
    response = ready.client.post(ready.url("train/dpo"),
                                 {"min_preference_pairs": 5, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not TrainingJob.objects.exists()


def test_it_refuses_unknown_base_models_and_versions(ready):
    response = ready.client.post(ready.url("train/lora"),
                                 {**LORA_SMALL, "base_model": "/etc/passwd"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_base_model"
    response = ready.client.post(ready.url("train/lora"),
                                 {**LORA_SMALL, "continue_from": "v7"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_version"
    assert not TrainingJob.objects.exists()


def test_a_dry_run_estimates_without_queueing_or_using_quota(make_tenant):
    ctx = make_tenant("pro-shop", plan="pro")
    add_corrections(ctx, corrections(20))
    response = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                               format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True and body["job_id"] is None
    assert body["training_samples"] == 18 and body["eval_samples"] == 2
    assert body["estimated_cost"] == pytest.approx(18 * 0.10 / 1000, abs=1e-4)
    assert body["estimated_duration_minutes"] > 0
    assert body["throughput_basis"] == "default"
    assert body["quota_remaining"] == 2
    assert not TrainingJob.objects.exists()


def test_it_creates_a_job_with_a_snapshot_and_counts_the_quota(make_tenant, settings,
                                                               django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    ctx = make_tenant("pro-shop", plan="pro")
    add_corrections(ctx, corrections(20))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = ctx.client.post(ctx.url("train/lora"),
                                   {**LORA_SMALL, "preset": "small_corrections"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["job_id"].startswith("train_")
    assert body["params"]["lora_r"] == 8 and body["params"]["epochs"] == 1  # explicit wins
    assert body["params"]["learning_rate"] == 3e-4  # from the preset
    assert callbacks, "the enqueue waits for the commit"
    job = TrainingJob.objects.get(pk=body["job_id"])
    prefix = f"tenants/pro-shop/snapshots/{job.id}"
    assert job.snapshot_prefix == prefix
    for name in ("train.jsonl", "eval.jsonl", "manifest.json"):
        assert default_storage.exists(f"{prefix}/{name}")
    manifest = job.snapshot_manifest
    assert manifest["counts"]["train"] == 18 and manifest["counts"]["eval"] == 2
    assert len(manifest["feedback_ids"]) == 20
    assert job.events.get().to_status == "queued"

    second = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert second.status_code == 201
    third = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert third.status_code == 429
    error = third.json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"]["monthly_job_quota"] == 2
    assert TrainingJob.objects.count() == 2
    dry = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, "dry_run": True}, format="json")
    assert dry.status_code == 429

    usage = ctx.client.get(ctx.url("train/usage")).json()
    assert usage["jobs_counted"] == 2 and usage["quota_remaining"] == 0


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


# --- isolation ----------------------------------------------------------------------------

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


# --- webhooks and erasure -------------------------------------------------------------------

def test_webhooks_refuse_non_http_urls_and_can_be_removed(owner):
    for url in ("ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "example"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        assert response.status_code == 400, url
        assert "url" in response.json()["error"]["details"]
    response = owner.client.post(owner.url("webhooks"),
                                 {"url": "https://hooks.example.com/x", "events": ["completed"]},
                                 format="json")
    assert response.status_code == 201
    hook = response.json()
    assert hook["signing_secret"] == owner.tenant.webhook_secret
    listed = owner.client.get(owner.url("webhooks")).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "signing_secret" not in listed[0]
    assert owner.client.delete(owner.url(f"webhooks/{hook['id']}")).status_code == 204
    assert owner.client.get(owner.url("webhooks")).json()["webhooks"] == []


def test_erasure_removes_a_users_data_from_future_training_and_flags_versions(owner):
    from adapters.models import AdapterVersion
    from tenants.models import AuditLogEntry

    add_corrections(owner, corrections(12), prefix="a", user_id="user_789")
    add_corrections(owner, corrections(12, offset=100), prefix="b", user_id="user_111")
    job_id = owner.client.post(owner.url("train/lora"), LORA_SMALL,
                               format="json").json()["job_id"]
    job = TrainingJob.objects.get(pk=job_id)
    used = job.snapshot_manifest
    v1 = AdapterVersion.objects.create(tenant=owner.tenant, number=1, method="sft",
                                       base_model="x", data_manifest=used, storage_prefix="p")
    v2 = AdapterVersion.objects.create(tenant=owner.tenant, number=2, method="sft",
                                       base_model="x", data_manifest={"feedback_ids": [],
                                                                      "message_ids": []},
                                       storage_prefix="q")
    response = owner.client.post(owner.url("erasure"), {"user_id": "user_789"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["feedback_deleted"] == 12 and body["messages_deleted"] == 24  # user + reply
    assert body["adapter_versions_needing_retraining"] == ["v1"]
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.needs_retraining and not v2.needs_retraining
    assert AuditLogEntry.objects.filter(action="training.user_data_erased").exists()
    # The next compile no longer sees that user's data.
    dry = owner.client.post(owner.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                            format="json").json()
    assert dry["training_samples"] + dry["eval_samples"] == 12


# --- the compiler ---------------------------------------------------------------------------

def test_the_compiler_turns_feedback_into_sft_and_dpo_data(owner):
    from training.compiler import training_data_compile

    add_corrections(owner, [("Dose of drug A?", "250mg", "The correct answer is 500mg.")])
    add_thumb_pairs(owner, [("Explain returns", "Within 30 days with receipt.",
                             "Returns are complicated.")])
    # Ratings: a 5 makes an example of weight 1.0, a 4 of 0.8, a 2 none.
    for i, rating in enumerate((5, 4, 2)):
        ids = log_conversation(owner, f"r{i}", [("user", f"Rated q{i}"),
                                                ("assistant", f"Rated a{i}")])
        give_feedback(owner, f"r{i}", ids[1], "rating", rating=rating)
    # A report excludes the message and what it would have fed.
    ids = log_conversation(owner, "bad", [("user", "Q?"), ("assistant", "Offensive")])
    give_feedback(owner, "bad", ids[1], "correction", correction="Better")
    give_feedback(owner, "bad", ids[1], "report", metadata={"user_id": "u2"})
    # A duplicate of the first correction merges.
    add_corrections(owner, [("Dose of drug A?", "250mg", "The correct answer is 500mg.")],
                    prefix="dup")

    sft = training_data_compile(tenant=owner.tenant, method="sft")
    records = sft.train + sft.eval
    by_prompt = {r["messages"][0]["content"]: r for r in records}
    assert set(by_prompt) == {"Dose of drug A?", "Rated q0", "Rated q1"}
    assert by_prompt["Dose of drug A?"]["messages"][-1] == {
        "role": "assistant", "content": "The correct answer is 500mg."}
    assert by_prompt["Rated q0"]["weight"] == 1.0 and by_prompt["Rated q1"]["weight"] == 0.8
    assert sft.excluded.get("low_rating") == 1
    assert len(sft.eval) == 0  # fewer than 10 examples: no held-out split

    dpo = training_data_compile(tenant=owner.tenant, method="dpo")
    pairs = {(p["prompt"], p["chosen"], p["rejected"]) for p in dpo.train}
    assert pairs == {("Dose of drug A?", "The correct answer is 500mg.", "250mg"),
                     ("Explain returns", "Within 30 days with receipt.",
                      "Returns are complicated.")}


def test_the_held_out_split_is_deterministic_by_hash(owner):
    from training.compiler import training_data_compile

    add_corrections(owner, corrections(25))
    first = training_data_compile(tenant=owner.tenant, method="sft")
    second = training_data_compile(tenant=owner.tenant, method="sft")
    assert len(first.eval) == 2 and len(first.train) == 23  # round(25 * 10%) = 2
    assert [r["id"] for r in first.eval] == [r["id"] for r in second.eval]


def test_automatic_training_queues_a_job_once_enough_new_feedback_arrived(
        owner, django_capture_on_commit_callbacks, rq_connection):
    from tenants.services import tenant_settings_update

    tenant_settings_update(tenant=owner.tenant, changes={
        "auto_training": {"enabled": True, "method": "sft", "min_new_feedback": 50}})
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(49))
    assert not TrainingJob.objects.exists()  # not ready (49 corrections < 50)
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(1, offset=49), prefix="late")
    job = TrainingJob.objects.get()
    assert job.triggered_by == "auto" and job.status == "queued"
    created = job.events.get(type="created")
    assert created.data["triggered_by"] == "auto"
    body = owner.client.get(owner.url(f"train/{job.id}")).json()
    assert body["triggered_by"] == "auto" and body["training_samples"] == 45
    # One at a time, and only with enough *new* feedback since the last job.
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(3, offset=200), prefix="more")
    assert TrainingJob.objects.count() == 1


def test_automatic_training_respects_the_quota_and_the_switch(
        make_tenant, django_capture_on_commit_callbacks):
    from tenants.services import tenant_settings_update

    off = make_tenant("off")
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(off, corrections(50))
    free = make_tenant("free-auto", plan="free")
    tenant_settings_update(tenant=free.tenant, changes={
        "auto_training": {"enabled": True, "min_new_feedback": 1}})
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(free, corrections(50))
    assert not TrainingJob.objects.exists()


def test_the_reconcile_command_reports_and_starts_due_automatic_jobs(owner, rq_connection):
    from io import StringIO

    from django.core.management import call_command

    from feedback.models import Feedback
    from tenants.services import tenant_settings_update

    add_corrections(owner, corrections(50))
    assert not TrainingJob.objects.exists()  # the switch was off while the feedback arrived
    tenant_settings_update(tenant=owner.tenant, changes={
        "auto_training": {"enabled": True, "min_new_feedback": 10}})
    assert Feedback.objects.filter(tenant=owner.tenant).count() == 50
    out = StringIO()
    call_command("reconcile_training_jobs", stdout=out)
    job = TrainingJob.objects.get()
    assert job.triggered_by == "auto"
    assert "auto_started=1" in out.getvalue() and job.id in out.getvalue()


def test_the_admin_lists_jobs_and_cancels_and_retries_them(ready, admin_client):
    ids = [ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json").json()["job_id"]
           for _ in range(2)]
    listing = admin_client.get("/admin/training/trainingjob/")
    assert listing.status_code == 200 and ids[0].encode() in listing.content
    detail = admin_client.get(f"/admin/training/trainingjob/{ids[0]}/change/")
    assert detail.status_code == 200 and b"loss curve" in detail.content.lower()
    response = admin_client.post("/admin/training/trainingjob/",
                                 {"action": "cancel_jobs", "_selected_action": [ids[0]]})
    assert response.status_code == 302
    assert TrainingJob.objects.get(pk=ids[0]).status == "cancelled"
    admin_client.post("/admin/training/trainingjob/",
                      {"action": "retry_jobs", "_selected_action": [ids[0]]})
    retried = TrainingJob.objects.exclude(pk__in=ids).get()
    assert retried.triggered_by == "retry" and retried.status == "queued"


def test_a_spent_cluster_allocation_refuses_new_cluster_jobs_only(ready, settings):
    """A tenant on the slurm backend is refused once the project's GPU-hours are spent; the
    local backend is not limited by the cluster's allocation."""
    settings.SLURM_ALLOCATION_GPU_HOURS = 2.0
    TrainingJob.objects.create(tenant=ready.tenant, method="sft", backend="slurm",
                               status=TrainingJob.COMPLETED, base_model="tiny", gpu_hours=2.5)
    ready.client.patch(ready.url("settings"), {"compute_backend": "slurm"}, format="json")
    response = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                                 format="json")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "cluster_allocation_exhausted"
    assert error["details"]["used_gpu_hours"] == 2.5
    response = ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json")
    assert response.status_code == 409
    assert TrainingJob.objects.count() == 1

    ready.client.patch(ready.url("settings"), {"compute_backend": "local"}, format="json")
    response = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                                 format="json")
    assert response.status_code == 200, response.json()
