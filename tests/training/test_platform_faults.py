"""No dead ends and no charge for the platform's faults.

- A cluster job whose state cannot be learned stays `running` only until its state has been
  unknown for CLUSTER_UNKNOWN_GIVE_UP_SECONDS; then it fails with category `cluster_fault` and a
  reason that says so. The poll is the real Slurm backend's: with no SSH user configured it
  cannot ask the cluster and reports `unknown`, the state a forgotten job also yields (no Slurm
  is needed: the decision lives in the services). The streak's start is moved back in the
  database instead of waiting.
- Jobs failed by the platform (lost worker, runner error, cluster fault) do not use the
  tenant's monthly quota; jobs failed by their data or settings do.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tests.training.conftest import LORA_SMALL, add_corrections, corrections
from training.models import TrainingJob


def _cluster_settings(settings) -> None:
    """A valid cluster configuration whose SSH user is missing: every poll is `unknown`."""
    settings.SLURM_LAUNCHER = "plain"
    settings.SLURM_ACCOUNT = "project_0"
    settings.SLURM_REMOTE_WORK_DIR = "/scratch/project_0/synapsex"
    settings.SLURM_SSH_USER = ""


def _cluster_job(tenant, tmp_path) -> TrainingJob:
    work = tmp_path / "bundle"
    work.mkdir()
    return TrainingJob.objects.create(
        tenant=tenant, method="sft", backend="slurm", status=TrainingJob.RUNNING,
        base_model="tiny-base", params={}, total_epochs=1, external_id="4242",
        started_at=timezone.now(), work_dir=str(work))


def test_a_job_in_an_unknown_state_is_given_up_after_the_configured_time(owner, settings,
                                                                        tmp_path):
    from training.services.runner import training_job_advance
    from training.services.unknown import UNKNOWN_SINCE

    _cluster_settings(settings)
    settings.CLUSTER_UNKNOWN_GIVE_UP_SECONDS = 900
    job = _cluster_job(owner.tenant, tmp_path)

    job = training_job_advance(job_id=job.id)
    assert job.status == "running"
    since = job.resources[UNKNOWN_SINCE]
    first = job.events.get(type="state_unknown")
    assert "SLURM_SSH_USER is not set" in first.message and "900 s" in first.message
    # Young: polled again, nothing changes, the streak keeps its start.
    job = training_job_advance(job_id=job.id)
    assert job.status == "running" and job.resources[UNKNOWN_SINCE] == since
    assert job.events.filter(type="state_unknown").count() == 1

    # Just under the limit: still polled.
    resources = {**job.resources,
                 UNKNOWN_SINCE: (timezone.now() - timedelta(seconds=880)).isoformat()}
    TrainingJob.objects.filter(pk=job.pk).update(resources=resources)
    assert training_job_advance(job_id=job.id).status == "running"

    resources[UNKNOWN_SINCE] = (timezone.now() - timedelta(seconds=901)).isoformat()
    TrainingJob.objects.filter(pk=job.pk).update(resources=resources)
    job = training_job_advance(job_id=job.id)
    assert job.status == "failed"
    assert job.failure_category == "cluster_fault"
    assert job.failure_reason.startswith("cluster fault: the job's state has been unknown for ")
    assert "limit 900 s" in job.failure_reason and "SLURM_SSH_USER" in job.failure_reason
    body = owner.client.get(owner.url(f"train/{job.id}")).json()
    assert body["status"] == "failed" and body["failure_category"] == "cluster_fault"
    # Ended: later polls do nothing.
    assert training_job_advance(job_id=job.id).status == "failed"


def test_a_known_state_ends_the_unknown_streak(owner, settings, tmp_path):
    from training.services.runner import training_job_advance
    from training.services.unknown import UNKNOWN_SINCE, training_job_state_known

    _cluster_settings(settings)
    job = training_job_advance(job_id=_cluster_job(owner.tenant, tmp_path).id)
    assert UNKNOWN_SINCE in job.resources
    job = training_job_state_known(job)
    job.refresh_from_db()
    assert UNKNOWN_SINCE not in job.resources and job.status == "running"
    assert job.events.filter(type="state_known").count() == 1
    # The next unknown poll starts a new streak (a new start, a new event).
    job = training_job_advance(job_id=job.id)
    assert UNKNOWN_SINCE in job.resources
    assert job.events.filter(type="state_unknown").count() == 2


def test_jobs_failed_by_the_platform_do_not_use_the_monthly_quota(make_tenant):
    from training import pricing

    ctx = make_tenant("pro-shop", plan="pro")  # 2 jobs a month
    add_corrections(ctx, corrections(20))

    def failed(category: str) -> TrainingJob:
        return TrainingJob.objects.create(
            tenant=ctx.tenant, method="sft", status=TrainingJob.FAILED, base_model="tiny-base",
            params={}, failure_category=category, failure_reason=f"{category}: x",
            started_at=timezone.now(), finished_at=timezone.now())

    for category in ("lost_worker", "runner_error", "cluster_fault"):
        failed(category)
    assert pricing.jobs_counted_this_month(tenant=ctx.tenant) == 0
    usage = ctx.client.get(ctx.url("train/usage")).json()
    assert usage["jobs_counted"] == 0 and usage["quota_remaining"] == 2

    failed("bad_data")  # the tenant's data: counts
    first = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert first.status_code == 201, first.content
    second = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "quota_exceeded"
    usage = ctx.client.get(ctx.url("train/usage")).json()
    assert usage["jobs_counted"] == 2 and usage["quota_remaining"] == 0

    # The platform loses the queued job: its slot comes back.
    job = TrainingJob.objects.get(pk=first.json()["job_id"])
    from training.services.transitions import training_job_fail

    training_job_fail(job=job, reason="lost worker: no heartbeat for 120 s",
                      category="lost_worker")
    third = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert third.status_code == 201, third.content
