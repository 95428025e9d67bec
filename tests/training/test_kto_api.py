"""POST /train/kto: bad parameters get the one error envelope and create no job; readiness is
what the compiler really makes (per method in feedback/stats, and the same numbers in the 409);
a dry run prices a KTO job; the stats of one tenant never count another's feedback."""

from __future__ import annotations

import pytest

from tests.training.conftest import add_corrections, corrections, give_feedback, log_conversation
from training.models import TrainingJob


def _lone_thumbs(ctx, n: int, *, up: bool, prefix: str) -> None:
    for i in range(n):
        ids = log_conversation(ctx, f"{prefix}{i}", [("user", f"{prefix} question {i}?"),
                                                     ("assistant", f"{prefix} answer {i}.")])
        give_feedback(ctx, f"{prefix}{i}", ids[1], "thumbs_up" if up else "thumbs_down")


@pytest.mark.parametrize("field,value", [
    ("beta", 0), ("beta", 10.5), ("batch_size", 1), ("epochs", 0), ("learning_rate", 0),
    ("min_feedback_count", 0), ("min_preference_pairs", 5), ("lora_r", "sixteen"),
    ("preset", "turbo"),
])
def test_it_refuses_bad_kto_parameters_with_the_envelope(ready, field, value):
    response = ready.client.post(ready.url("train/kto"),
                                 {"min_feedback_count": 5, field: value}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert not TrainingJob.objects.exists()


def test_readiness_per_method_is_what_a_job_would_get(owner, outsider):
    """12 corrections and 20 lone thumbs: SFT 12 examples, DPO 12 pairs (the thumbs make none),
    KTO 44 rows (2 per correction, 1 per thumb). The legacy keys stay as they were."""
    add_corrections(owner, corrections(12))
    _lone_thumbs(owner, 14, up=True, prefix="up")
    _lone_thumbs(owner, 6, up=False, prefix="down")

    stats = owner.client.get(owner.url("feedback/stats")).json()
    methods = stats["readiness"]["methods"]
    print("readiness per method:", {m: (v["usable"], v["required"], v["ready"])
                                    for m, v in methods.items()})
    assert {m: methods[m]["usable"] for m in ("sft", "dpo", "kto")} == {
        "sft": 12, "dpo": 12, "kto": 44}
    assert (methods["kto"]["desirable"], methods["kto"]["undesirable"]) == (26, 18)
    assert methods["kto"]["required"] == 50 and methods["kto"]["missing"] == 6
    assert not any(v["ready"] for v in methods.values())
    # The seed's keys are still there, with the seed's rule.
    assert stats["ready_for_training"] is False and stats["corrections"] == 12
    assert stats["readiness"]["sft"]["corrections_needed"] == 38
    assert stats["readiness"]["dpo"]["thumbs_needed"] == 80

    # A job asks the same question with the same numbers.
    refused = owner.client.post(owner.url("train/kto"), {}, format="json")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "not_ready"
    assert (error["details"]["available"], error["details"]["min_feedback_count"]) == (44, 50)

    # 6 more thumbs: KTO is ready (and only KTO).
    _lone_thumbs(owner, 6, up=False, prefix="more")
    methods = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert methods["kto"]["ready"] is True and methods["kto"]["usable"] == 50
    assert methods["sft"]["ready"] is False and methods["dpo"]["ready"] is False
    dry = owner.client.post(owner.url("train/kto"), {"dry_run": True}, format="json")
    assert dry.status_code == 200, dry.content
    body = dry.json()
    assert body["dry_run"] is True and body["training_samples"] + body["eval_samples"] == 50
    assert not TrainingJob.objects.exists()

    # Another tenant sees none of it.
    other = outsider.client.get(outsider.url("feedback/stats")).json()["readiness"]["methods"]
    assert {m: v["usable"] for m, v in other.items()} == {"sft": 0, "dpo": 0, "kto": 0}


def test_a_large_tenants_readiness_comes_from_a_queued_compile_not_the_request(
        owner, settings, rq_connection):
    """Above READINESS_SYNC_MAX_ROWS feedback rows a stats read does not compile (minutes at a
    million rows): it answers from the last compile, marked `current: false` with its `as_of`
    (or `computing` before the first), and one RQ job compiles again. The threshold is lowered
    here so that a few rows are "large"; the compile is the same code either way."""
    from tests.training.conftest import run_worker_burst

    settings.READINESS_SYNC_MAX_ROWS = 5
    add_corrections(owner, corrections(12))

    first = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert first == {m: {"status": "computing", "current": False} for m in ("sft", "dpo", "kto")}
    again = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert again == first
    import django_rq

    assert django_rq.get_queue("default").count == 1  # one compile queued for both reads
    run_worker_burst(("default",))
    fresh = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert {m: fresh[m]["usable"] for m in ("sft", "dpo", "kto")} == {
        "sft": 12, "dpo": 12, "kto": 24}
    assert "current" not in fresh["sft"]

    # New feedback: the last answer, marked stale, until the queued compile has run.
    _lone_thumbs(owner, 3, up=True, prefix="late")
    stale = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert stale["kto"]["usable"] == 24 and stale["kto"]["current"] is False
    assert stale["kto"]["as_of"]
    run_worker_burst(("default",))
    fresh = owner.client.get(owner.url("feedback/stats")).json()["readiness"]["methods"]
    assert fresh["kto"]["usable"] == 27 and "current" not in fresh["kto"]
