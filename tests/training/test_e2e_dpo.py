"""End to end DPO on a real RQ worker: thumbs up / thumbs down answers to the same prompts
through the API -> POST /train/dpo -> completed -> an adapter version exists, and the job's
metrics show the preference learned (reward accuracy and margins on the tenant's pairs)."""

from __future__ import annotations

import pytest

from tests.training.conftest import add_thumb_pairs, run_worker_burst

GOOD = [
    "Items can be returned within 30 days with a receipt.",
    "We ship in 3 to 5 business days, free over 50 euros.",
    "Our store is open Monday to Friday 9am to 6pm.",
    "Gift cards never expire.",
]
BAD = [
    "Returns are complicated and need a manager.",
    "Check the website for shipping info.",
    "Hours vary, call us.",
    "Ask someone else.",
]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_trains_a_dpo_adapter_from_thumbs_pairs_end_to_end(make_tenant, rq_connection,
                                                             training_paths, base_model):
    from adapters.models import AdapterVersion
    from training.models import TrainingJob

    ctx = make_tenant("prefs", plan="hybrid")
    triples = [(f"Customer question number {i}: tell me about topic {i % 4}?",
                GOOD[i % 4], BAD[i % 4]) for i in range(30)]
    add_thumb_pairs(ctx, triples)

    response = ctx.client.post(ctx.url("train/dpo"), {
        "min_preference_pairs": 30, "beta": 0.1, "epochs": 6, "learning_rate": 2e-3,
        "batch_size": 8, "warmup_ratio": 0.0,
    }, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["training_samples"] + created["eval_samples"] == 30
    assert created["eval_samples"] >= 1  # the golden set, chosen by id hash
    assert created["estimated_cost"] == pytest.approx(created["training_samples"] * 0.15 / 1000,
                                                      abs=1e-4)

    run_worker_burst(queues=("training",))

    job = TrainingJob.objects.get(pk=created["job_id"])
    assert job.status == "completed", (job.failure_reason, job.log_tail)
    status = ctx.client.get(ctx.url(f"train/{job.id}")).json()
    assert status["adapter_version"] == "v1" and isinstance(status["metrics"]["loss"], float)
    assert AdapterVersion.objects.filter(tenant=ctx.tenant, job=job, method="dpo").exists()

    metrics = status["metrics"]
    print("DPO final metrics:", {k: v for k, v in metrics.items() if "reward" in k})
    # The last logged training batch and the held-out pairs of the exported (best) adapter.
    assert metrics["rewards/accuracies"] >= 0.9 and metrics["rewards/margins"] > 0.5
    assert metrics["eval_rewards/accuracies"] >= 0.9
    assert metrics["eval_rewards/margins"] > 0.5

    curves = ctx.client.get(ctx.url(f"train/{job.id}/metrics")).json()
    margins = [p["rewards/margins"] for p in curves["train"] if "rewards/margins" in p]
    assert margins and margins[-1] > margins[0]
    assert curves["eval"] and "rewards/accuracies" in curves["eval"][-1]
