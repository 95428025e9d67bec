"""Replay from the tenant's own traffic (training.replay_traffic): which served prompts a job
anchors the model on, that they travel in the job's snapshot and bundle, that another tenant's
never do, and that erasure takes them out again.

What replay does to learning is the trainer's (tests/trainer/test_trainer_replay.py runs a job
with these prompts on the real base); here the selection and its plumbing, through the API."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from tests.training.conftest import (
    LORA_SMALL,
    add_corrections,
    corrections,
    give_feedback,
    log_conversation,
)
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def _served(ctx, conversation_id: str, prompt: str, user_id: str = "",
            answer: str = "Here is an answer.") -> list[str]:
    return log_conversation(ctx, conversation_id, [("user", prompt), ("assistant", answer)],
                            user_id=user_id)


def _replayed(job: TrainingJob) -> list[str]:
    path = f"{job.snapshot_prefix}/replay.jsonl"
    if not default_storage.exists(path):
        return []
    with default_storage.open(path, "rb") as handle:
        return [json.loads(line)["prompt"] for line in handle.read().decode().splitlines()]


def _train(ctx, **params) -> TrainingJob:
    response = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, **params}, format="json")
    assert response.status_code == 201, response.content
    return TrainingJob.objects.get(pk=response.json()["job_id"])


def test_a_job_replays_its_tenants_uncomplained_openings_and_nothing_else(owner, outsider):
    from training.services.bundle import training_job_bundle_write

    add_corrections(owner, corrections(12))
    kept = ["How do I reset my router?", "What are your opening hours?"]
    _served(owner, "ok-router", kept[0])
    up = _served(owner, "up-hours", kept[1])
    give_feedback(owner, "up-hours", up[1], "thumbs_up")
    # A 5-rated answer trains as an SFT example itself: its prompt is the job's, not replay's.
    rated = _served(owner, "good-rating", "Can I pay by invoice?")
    give_feedback(owner, "good-rating", rated[1], "rating", rating=5)
    # A later turn of a served conversation is not an opening: only its first prompt counts.
    log_conversation(owner, "multi", [("user", "Do you ship abroad?"), ("assistant", "Yes."),
                                      ("user", "And to Norway?"), ("assistant", "Yes.")])
    kept.append("Do you ship abroad?")
    for name, kind, extra in [("down", "thumbs_down", {}), ("low", "rating", {"rating": 2}),
                              ("fixed", "correction", {"correction": "Better answer."}),
                              ("rep", "report", {})]:
        ids = _served(owner, name, f"Complained about ({name})?")
        give_feedback(owner, name, ids[1], kind, **extra)
    _served(owner, "again", "How do I reset my router?")  # a duplicate of a kept prompt
    _served(owner, "taught", "What is the code of box 3?")  # a prompt the job trains
    # The same question in other words: replaying its old answer would pull against the fix.
    _served(owner, "taught-again", "Tell me box 3's code, please.")
    # A sibling of a trained prompt is another question, and stays.
    _served(owner, "sibling", "What is the code of box 30?")
    kept.append("What is the code of box 30?")
    _served(owner, "platform-eval", "What is the capital of France?")  # scored on every version
    log_conversation(owner, "unanswered", [("user", "Anyone there?")])
    _served(outsider, "theirs", "What is the outsider's secret plan?")

    job = _train(owner, replay_traffic_rows=20)

    assert sorted(_replayed(job)) == sorted(kept)
    manifest = job.snapshot_manifest
    assert manifest["counts"]["replay"] == len(kept)
    assert manifest["counts"]["replay_skipped"] == {
        # the 12 corrected exchanges are complaints too
        "complaint": 4 + 12, "duplicate": 1, "trained_or_evaluated": 3, "no_served_opening": 1,
        "near_trained_or_evaluated": 1}
    assert "replay.jsonl" in manifest["files"]
    from feedback.models import Message

    with default_storage.open(f"{job.snapshot_prefix}/replay.jsonl", "rb") as handle:
        ids = [int(json.loads(line)["id"].removeprefix("msg_")) for line in handle]
    assert set(ids) <= set(manifest["message_ids"])  # erasure finds the snapshot by them
    assert sorted(Message.objects.filter(id__in=ids, tenant=owner.tenant, role="user")
                  .values_list("content", flat=True)) == sorted(kept)
    bundle = training_job_bundle_write(job=job)
    config = json.loads((bundle / "job.json").read_text())
    assert config["data"]["replay_prompts"] == "replay.jsonl"
    assert sorted(json.loads(line)["prompt"]
                  for line in (bundle / "replay.jsonl").read_text().splitlines()) == sorted(kept)
    assert "outsider" not in (bundle / "replay.jsonl").read_text()
    # The other tenant's job sees its own traffic only.
    add_corrections(outsider, corrections(12))
    assert _replayed(_train(outsider, replay_traffic_rows=20)) == [
        "What is the outsider's secret plan?"]


def test_the_newest_openings_are_taken_up_to_the_limit_and_zero_takes_none(owner):
    from training.services.bundle import training_job_bundle_write

    add_corrections(owner, corrections(12))
    for i in range(5):
        _served(owner, f"s{i}", f"Question number {i} about our service?")
    assert _replayed(_train(owner, replay_traffic_rows=2)) == [
        "Question number 4 about our service?", "Question number 3 about our service?"]
    job = _train(owner, replay_traffic_rows=0)
    assert _replayed(job) == [] and "replay" not in job.snapshot_manifest["counts"]
    config = json.loads((training_job_bundle_write(job=job) / "job.json").read_text())
    assert "replay_prompts" not in config["data"]


def test_the_small_base_recipe_replays_traffic_and_the_parameter_is_bounded(owner):
    from training.services.recipes import RECIPES

    assert RECIPES["small_base"]["sft"]["replay_traffic_rows"] == 32
    add_corrections(owner, corrections(12))
    for value in (-1, 1001):
        response = owner.client.post(owner.url("train/lora"),
                                     {**LORA_SMALL, "replay_traffic_rows": value}, format="json")
        assert response.status_code == 400
        assert "replay_traffic_rows" in response.json()["error"]["details"]
    response = owner.client.post(owner.url("train/dpo"), {"replay_traffic_rows": 4},
                                 format="json")
    assert response.status_code == 400


def test_erasure_takes_a_users_prompts_out_of_replay(owner, tmp_path):
    from training.services.bundle import training_job_bundle_write
    from training.snapshots import snapshot_download

    add_corrections(owner, corrections(12))
    _served(owner, "mine", "Where is my parcel 4711?", user_id="user_789")
    _served(owner, "yours", "Where is the nearest shop?", user_id="user_111")
    job = _train(owner, replay_traffic_rows=20)
    bundle = training_job_bundle_write(job=job)
    assert sorted(_replayed(job)) == ["Where is my parcel 4711?", "Where is the nearest shop?"]

    response = owner.client.post(owner.url("erasure"), {"user_id": "user_789"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 1}]
    assert _replayed(job) == ["Where is the nearest shop?"]
    assert "4711" not in (bundle / "replay.jsonl").read_text()
    job.refresh_from_db()
    assert job.snapshot_manifest["counts"]["replay"] == 1
    snapshot_download(prefix=job.snapshot_prefix, manifest=job.snapshot_manifest,
                      dest=tmp_path / "check")  # the rewritten file verifies against the row


def test_the_estimate_counts_the_replay_rows(owner):
    """A dry run says how many replay rows the job adds and counts them in its duration (each
    answer at the longest the trainer generates); the price counts the tenant's examples only.
    20 epochs, so that ten rows move an estimate given in tenths of a minute."""
    add_corrections(owner, corrections(12))
    _served(owner, "a", "How do I reset my router?")
    _served(owner, "b", "What are your opening hours?")

    def dry(**params) -> dict:
        response = owner.client.post(owner.url("train/lora"),
                                     {**LORA_SMALL, "dry_run": True, "replay_rows": 0,
                                      "replay_traffic_rows": 0, "epochs": 20, **params},
                                     format="json")
        assert response.status_code == 200, response.content
        return response.json()

    plain = dry()
    replayed = dry(replay_rows=113, replay_traffic_rows=20)
    fewer = dry(replay_rows=10)
    print(f"\nestimated minutes: no replay {plain['estimated_duration_minutes']}, 10 general "
          f"{fewer['estimated_duration_minutes']}, 113 general + 2 traffic "
          f"{replayed['estimated_duration_minutes']}")
    assert plain["replay_samples"] == {"general": 0, "traffic": 0}
    assert fewer["replay_samples"] == {"general": 10, "traffic": 0}
    assert replayed["replay_samples"] == {"general": 113, "traffic": 2}
    assert (plain["estimated_duration_minutes"] < fewer["estimated_duration_minutes"]
            < replayed["estimated_duration_minutes"])
    assert plain["estimated_cost"] == replayed["estimated_cost"]
    assert plain["token_count"] == replayed["token_count"]  # the tenant's data, as before

    def dry_dpo(**params) -> dict:
        response = owner.client.post(owner.url("train/dpo"),
                                     {"dry_run": True, "min_preference_pairs": 1, "epochs": 20,
                                      **params}, format="json")
        assert response.status_code == 200, response.content
        return response.json()

    # A DPO job's replay rows are KL anchors run beside its pairs, one batch per batch: counted
    # for as many rows an epoch as it has pairs (12 here), not for all 113.
    pairs_only, anchored = dry_dpo(), dry_dpo(replay_rows=113, kl_to_base=1.0)
    assert "replay_samples" not in pairs_only
    assert anchored["replay_samples"] == {"general": 113, "traffic": 0}
    assert (pairs_only["estimated_duration_minutes"] < anchored["estimated_duration_minutes"]
            < replayed["estimated_duration_minutes"])
