"""End to end KTO on a real RQ worker: lone thumbs (no two on the same prompt, so DPO has no
pair to train on) through the API -> POST /train/kto -> completed -> a KTO adapter version, with
the desirable / undesirable weights set from the data and the held-out (golden) rows scored."""

from __future__ import annotations

import pytest

from tests.training.conftest import give_feedback, log_conversation, run_worker_burst
from training.trainer.config import KTO_WEIGHT_RATIO_RANGE

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


# reset_sequences: the golden set is chosen by a hash of the feedback ids, so ids that start at 1
# make it the same rows in every run (2 of these 40; before, it held whatever the ids of an earlier
# test left, once a single row, whose KTO eval loss is a constant: stop 26's CI failure).
@pytest.mark.django_db(transaction=True, serialized_rollback=True, reset_sequences=True)
def test_it_trains_a_kto_adapter_from_lone_thumbs_end_to_end(make_tenant, rq_connection,
                                                            training_paths, base_model):
    from adapters.models import AdapterVersion
    from feedback.models import Feedback
    from training.compiler import GOLDEN_FRACTION, golden_rank
    from training.models import TrainingJob

    ctx = make_tenant("thumbs", plan="hybrid")
    # 30 thumbs up and 10 thumbs down, each on its own prompt: unbalanced on purpose.
    for i in range(40):
        good = i < 30
        conv = f"k{i}"
        ids = log_conversation(ctx, conv, [
            ("user", f"Customer question number {i}: tell me about topic {i % 4}?"),
            ("assistant", GOOD[i % 4] if good else BAD[i % 4])])
        give_feedback(ctx, conv, ids[1], "thumbs_up" if good else "thumbs_down")

    stats = ctx.client.get(ctx.url("feedback/stats")).json()
    methods = stats["readiness"]["methods"]
    print("readiness per method:", methods)
    assert methods["dpo"]["usable"] == 0 and methods["dpo"]["ready"] is False
    assert methods["kto"]["usable"] == 40

    refused = ctx.client.post(ctx.url("train/dpo"), {"min_preference_pairs": 1}, format="json")
    assert refused.status_code == 409  # what the readiness said: no pairs

    response = ctx.client.post(ctx.url("train/kto"), {
        "min_feedback_count": 40, "beta": 0.1, "epochs": 6, "learning_rate": 2e-3,
        "batch_size": 8, "warmup_ratio": 0.0,
    }, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["training_samples"] + created["eval_samples"] == 40
    golden = [f for f in Feedback.objects.filter(tenant=ctx.tenant)
              if golden_rank(f"fb_{f.pk}") < GOLDEN_FRACTION]
    assert created["eval_samples"] == len(golden) >= 2  # the golden set, chosen by id hash

    run_worker_burst(queues=("training",))

    job = TrainingJob.objects.get(pk=created["job_id"])
    assert job.status == "completed", (job.failure_reason, job.log_tail)
    assert job.method == "kto"
    status = ctx.client.get(ctx.url(f"train/{job.id}")).json()
    assert status["adapter_version"] == "v1" and isinstance(status["metrics"]["loss"], float)
    assert AdapterVersion.objects.filter(tenant=ctx.tenant, job=job, method="kto").exists()

    metrics = status["metrics"]
    balance = metrics["kto_balance"]
    ratio = (balance["desirable_weight"] * balance["desirable"]) / (
        balance["undesirable_weight"] * balance["undesirable"])
    print("KTO balance:", balance, "weighted ratio", round(ratio, 3))
    print("KTO metrics:", {k: v for k, v in metrics.items() if "reward" in k or "loss" in k})
    assert balance["desirable"] + balance["undesirable"] == created["training_samples"]
    assert KTO_WEIGHT_RATIO_RANGE[0] <= ratio <= KTO_WEIGHT_RATIO_RANGE[1]
    # The exported adapter on the training rows: desirable answers rewarded over undesirable.
    assert metrics["train_rewards/chosen"] > metrics["train_rewards/rejected"]

    # Held out: the golden rows (never trained). Before training the adapter is the reference
    # (LoRA starts at zero), so every row's KTO loss is its weight * (1 - sigmoid(0)) = weight / 2;
    # below their mean the held-out rows are better separated than by the base.
    weight = {"thumbs_up": balance["desirable_weight"],
              "thumbs_down": balance["undesirable_weight"]}
    base_loss = sum(weight[f.type] / 2 for f in golden) / len(golden)
    curves = ctx.client.get(ctx.url(f"train/{job.id}/metrics")).json()
    eval_losses = [p["eval_loss"] for p in curves["eval"]]
    print(f"held-out (golden: {[f.type for f in golden]}) KTO eval loss by epoch "
          f"(base: {base_loss:.3f}):", [round(v, 4) for v in eval_losses])
    assert eval_losses and min(eval_losses) < base_loss
