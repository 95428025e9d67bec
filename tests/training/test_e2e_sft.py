"""End to end on a real RQ worker: 60 corrections through the API -> POST /train/lora -> the job
passes queued -> preparing -> running -> completed -> an adapter version exists -> generation
with it answers the corrected prompts with the corrections. Webhook receivers on loopback get
each transition once, signed; a failing receiver is retried and never affects the job. (Loopback
receivers are refused as SSRF unless allow-listed: the test sets WEBHOOK_ALLOWED_HOSTS to
127.0.0.1, as an operator would for an internal receiver.)

One trained job is reused for every assertion (training is the expensive part)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.conftest import add_corrections, run_worker_burst
from tests.webhook_receiver import WebhookReceiver, signature_valid

# Ten policies, six phrasings each: the corrections teach the tenant's answers, and held-out
# phrasings of a known policy are predictable (so eval loss falls with training, as it would for
# a real tenant's corrections).
TOPICS = [
    ("store hours", "We are open Monday to Friday 9am to 6pm."),
    ("return policy", "Returns are accepted within 30 days with a receipt."),
    ("shipping cost", "Shipping is free on orders over 50 euros."),
    ("gift cards", "Gift cards never expire and work in every store."),
    ("parking", "Customers park free in the garage under the store."),
    ("warranty", "Every product has a two year warranty."),
    ("payment", "We accept cards, cash and mobile payments."),
    ("loyalty points", "You earn one point for every euro you spend."),
    ("price match", "We match any local price within 14 days."),
    ("student discount", "Students get ten percent off with a valid card."),
]
PHRASINGS = [
    "What about {}?", "Tell me about {}.", "Can you explain {}?", "I have a question on {}.",
    "Info on {} please.", "How does {} work?",
]


def correction_set() -> list[tuple[str, str, str]]:
    return [(p.format(topic), "I am not sure about that.", answer)
            for topic, answer in TOPICS for p in PHRASINGS]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_trains_an_sft_adapter_from_corrections_end_to_end(make_tenant, rq_connection,
                                                             training_paths, base_model,
                                                             settings):
    from django.core.files.storage import default_storage

    from adapters.models import AdapterVersion
    from training.models import TrainingJob, WebhookDelivery
    from training.trainer.modeling import generate_reply, load_model_and_tokenizer

    ctx = make_tenant("shop", plan="pro")
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the loopback receivers below
    good, flaky = WebhookReceiver(), WebhookReceiver(fail_first=1)
    try:
        for receiver in (good, flaky):
            response = ctx.client.post(ctx.url("webhooks"), {"url": receiver.url}, format="json")
            assert response.status_code == 201, response.content
            secret = response.json()["signing_secret"]

        corrections = correction_set()
        assert len(corrections) == 60
        add_corrections(ctx, corrections)

        response = ctx.client.post(ctx.url("train/lora"), {
            "lora_r": 16, "lora_alpha": 32, "epochs": 12, "learning_rate": 3e-3,
            "batch_size": 8, "warmup_ratio": 0.0, "weight_decay": 0.0,
        }, format="json")
        assert response.status_code == 201, response.content
        created = response.json()
        job_id = created["job_id"]
        assert job_id.startswith("train_") and created["status"] == "queued"
        assert created["training_samples"] + created["eval_samples"] == 60
        assert created["eval_samples"] >= 1  # the golden set, chosen by id hash
        assert created["estimated_cost"] == pytest.approx(
            created["training_samples"] * 0.10 / 1000, abs=1e-4)
        assert created["estimated_duration_minutes"] > 0

        def deliveries_settled() -> bool:  # every delivery sent or given up (retries ran)
            return not WebhookDelivery.objects.filter(tenant=ctx.tenant,
                                                      status=WebhookDelivery.PENDING).exists()

        run_worker_burst(wait_scheduled=60, until=deliveries_settled)

        job = TrainingJob.objects.get(pk=job_id)
        assert job.status == "completed", (job.failure_reason, job.log_tail)
        body = ctx.client.get(ctx.url(f"train/{job_id}")).json()
        assert body["status"] == "completed" and body["progress"] == 1.0
        assert body["current_epoch"] == body["total_epochs"] == 12
        assert isinstance(body["metrics"]["loss"], float) and body["metrics"]["loss"] < 1.0
        assert body["adapter_version"] == "v1"
        assert body["usage"]["cost"] == pytest.approx(created["training_samples"] * 0.10 / 1000,
                                                      abs=1e-4)
        assert body["usage"]["tokens_processed"] > 0 and body["usage"]["compute_seconds"] > 0
        assert body["resources"]["training_speed"].endswith("tokens/sec")

        events = ctx.client.get(ctx.url(f"train/{job_id}/events")).json()["events"]
        path = [e["to_status"] for e in events if e["to_status"]]
        assert path == ["queued", "preparing", "running", "completed"]

        curves = ctx.client.get(ctx.url(f"train/{job_id}/metrics")).json()
        assert len(curves["train"]) >= 12 and len(curves["eval"]) >= 1
        assert curves["train"][-1]["loss"] < curves["train"][0]["loss"]

        # Later estimates use this backend's measured throughput, not the default constant.
        dry = ctx.client.post(ctx.url("train/lora"), {"min_feedback_count": 10, "dry_run": True},
                              format="json").json()
        assert dry["throughput_basis"] == "median of 1 completed job(s)"
        assert job.tokens_per_second and job.tokens_per_second > 0

        version = AdapterVersion.objects.get(tenant=ctx.tenant, job_id=job_id)
        assert version.version == "v1"
        assert version.training_samples == created["training_samples"]
        assert set(version.data_manifest["feedback_ids"])  # it can say what it learned from

        # Generation with the stored adapter answers the (trained) corrected prompts with the
        # corrections. The held-out (golden) prompts were never trained on and are reported apart.
        adapter_dir = training_paths["work"].parent / "v1"
        adapter_dir.mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            with default_storage.open(f"{version.storage_prefix}/{name}", "rb") as handle:
                (adapter_dir / name).write_bytes(handle.read())
        model, tokenizer = load_model_and_tokenizer(training_paths["base"], adapter_dir)
        snapshot = job.snapshot_manifest
        held_out = set(snapshot["eval_ids"])
        train_lines = default_storage.open(f"{job.snapshot_prefix}/train.jsonl").read()
        trained = [json.loads(line) for line in train_lines.decode().splitlines()]
        assert not held_out & {r["id"] for r in trained}
        right = sum(
            generate_reply(model, tokenizer, r["messages"][:-1], max_new_tokens=40)
            == r["messages"][-1]["content"] for r in trained)
        print(f"exact answers on trained prompts: {right}/{len(trained)}")
        assert right / len(trained) >= 0.9

        # Webhooks: each transition (queued, running, completed) once to the good receiver,
        # signed; the flaky receiver's first failure was retried; the job was not affected.
        received = [json.loads(c["body"])["event"] for c in good.calls]
        assert sorted(received) == sorted(["training.job.queued", "training.job.running",
                                           "training.job.completed"])
        assert all(signature_valid(secret, call) for call in good.calls)
        # The completed webhook waited for the new version's evaluation and carries it.
        completed = next(json.loads(c["body"]) for c in good.calls
                         if json.loads(c["body"])["event"] == "training.job.completed")
        evaluation = completed["data"]["evaluation"]
        print(f"evaluation in the webhook: {evaluation}")
        assert evaluation["status"] == "completed" and evaluation["version"] == "v1"
        assert evaluation["golden_items"] == created["eval_samples"]
        assert evaluation["trained_right_share"] >= 0.8
        document = ctx.client.get(ctx.url("lora/v1/evaluation")).json()
        assert document["status"] == "completed"
        assert document["scores"]["trained"]["new"]["share"] == evaluation["trained_right_share"]
        flaky_rows = WebhookDelivery.objects.filter(url=flaky.url)
        print("flaky receiver's deliveries:", [(d.event, d.status, d.attempts, d.last_error)
                                               for d in flaky_rows])
        assert len(flaky.calls) == 4  # 1 failed + 3 deliveries
        assert {d.status for d in flaky_rows} == {"delivered"}
        assert max(d.attempts for d in flaky_rows) == 2
    finally:
        good.close()
        flaky.close()
    assert Path(job.work_dir).is_dir()
