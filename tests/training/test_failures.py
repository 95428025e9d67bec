"""A job whose trainer fails says why in one line, keeps the log tail, ends `failed` (never
stuck), and the webhook receivers hear about it. (The unreachable receiver is on loopback, which
webhooks refuse unless allow-listed: the test sets WEBHOOK_ALLOWED_HOSTS so that the delivery is
really attempted.)"""

from __future__ import annotations

import pytest

from tests.training.conftest import add_corrections, run_worker_burst


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_trainer_failure_fails_the_job_with_a_one_line_reason(make_tenant, rq_connection,
                                                                 settings, training_paths):
    from training.models import TrainingJob, Webhook, WebhookDelivery

    ctx = make_tenant("broken")
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    Webhook.objects.create(tenant=ctx.tenant, url="http://127.0.0.1:9/unreachable")
    add_corrections(ctx, [(f"Q{i}?", "No.", f"A{i}.") for i in range(12)])
    # The operator's base model folder is missing: the trainer refuses its job.json at once.
    settings.BASE_MODEL_PATH = str(training_paths["media"] / "missing-model")
    response = ctx.client.post(ctx.url("train/lora"), {"min_feedback_count": 5, "epochs": 1},
                               format="json")
    assert response.status_code == 201
    job_id = response.json()["job_id"]
    settings.WEBHOOK_RETRY_INTERVALS = []
    run_worker_burst()

    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "failed"
    body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
    assert body["failure_category"] == "bad_config"
    assert body["failure_reason"].startswith("bad configuration: base_model.path")
    assert "\n" not in body["failure_reason"]
    assert body["log_tail"] and "failed (bad_config)" in body["log_tail"]
    statuses = [e["to_status"] for e in ctx.client.get(ctx.url(f"train/{job_id}/events"))
                .json()["events"] if e["to_status"]]
    assert statuses == ["queued", "preparing", "failed"]
    # The unreachable receiver was tried and logged; the job did not care.
    failed = WebhookDelivery.objects.get(job_id=job_id, event="training.job.failed")
    assert failed.status == "failed" and failed.attempts == 1 and failed.last_error
    assert not failed.last_error.startswith("refused")  # a connection was really attempted
