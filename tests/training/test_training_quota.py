"""Refusals that create no job (plan, readiness), dry runs, the monthly quota and the cluster's
GPU-hour allocation: the checks of starting a job, without a worker."""

from __future__ import annotations

import pytest

from tests import factories
from tests.training.conftest import (
    LORA_SMALL,
    add_corrections,
    corrections,
)
from training.models import TrainingJob


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


def test_a_dry_run_estimates_without_queueing_or_using_quota(make_tenant):
    ctx = make_tenant("pro-shop", plan="pro")
    add_corrections(ctx, corrections(20))
    response = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                               format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True and body["job_id"] is None
    # 20 corrections: the golden set (chosen by id hash, at least one item) is held out.
    assert body["training_samples"] + body["eval_samples"] == 20 and body["eval_samples"] >= 1
    assert body["estimated_cost"] == pytest.approx(body["training_samples"] * 0.10 / 1000,
                                                   abs=1e-4)
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
    assert manifest["counts"]["train"] + manifest["counts"]["eval"] == 20
    assert manifest["counts"]["eval"] >= 1
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


def test_a_spent_cluster_allocation_refuses_new_cluster_jobs_only(ready, settings):
    """A tenant on the slurm backend is refused once the project's GPU-hours are spent; the
    local backend is not limited by the cluster's allocation."""
    settings.SLURM_ALLOCATION_GPU_HOURS = 2.0
    factories.job(ready.tenant, backend="slurm", status=TrainingJob.COMPLETED, gpu_hours=2.5)
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
