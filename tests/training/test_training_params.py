"""Training parameters: out-of-range LoRA and DPO values, unknown base models and versions are
refused with the envelope and create no job."""

from __future__ import annotations

import pytest

from tests.training.conftest import (
    LORA_SMALL,
)
from training.models import TrainingJob
from training.parameters import training_params_errors


@pytest.mark.parametrize("field,value", [
    ("lora_r", 0), ("lora_r", 257), ("lora_alpha", 0), ("lora_alpha", 513), ("epochs", 0),
    ("epochs", 101), ("learning_rate", 0), ("learning_rate", -1e-4), ("learning_rate", 0.02),
    ("batch_size", 0), ("batch_size", 513), ("warmup_ratio", -0.1), ("warmup_ratio", 0.6),
    ("weight_decay", -0.01), ("weight_decay", 1.5), ("lora_r", "sixteen"), ("epochs", 2.5),
    ("preset", "turbo"), ("target_modules", "everything"), ("learning_rte", 1e-4),
    ("lora_dropout", 1.0), ("min_feedback_count", 0), ("replay_rows", -1),
    ("replay_rows", 1001), ("kl_to_base", -1), ("kl_to_base", 101), ("kl_to_base", "high"),
    ("replay_weight", 0), ("replay_weight", 1.5), ("replay_weight", -0.1), ("sft_weight", 1.0),
    ("scope_gate", -0.1), ("scope_gate", 1.5), ("scope_gate", "near"),
])
def test_it_refuses_bad_lora_parameters(ready, field, value):
    response = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, field: value},
                                 format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert not TrainingJob.objects.exists()


@pytest.mark.parametrize("field,value", [("beta", 0), ("beta", 10.5), ("beta", -1),
                                         ("min_preference_pairs", 0), ("epochs", 1000),
                                         ("replay_rows", -1), ("kl_to_base", 101),
                                         ("replay_weight", 0.5), ("sft_weight", -0.5),
                                         ("sft_weight", 11), ("sft_weight", "some")])
def test_it_refuses_bad_dpo_parameters(ready, field, value):
    response = ready.client.post(ready.url("train/dpo"),
                                 {"min_preference_pairs": 5, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert not TrainingJob.objects.exists()


def test_it_refuses_sft_weight_for_kto(ready):
    response = ready.client.post(ready.url("train/kto"),
                                 {"min_feedback_count": 5, "sft_weight": 1.0}, format="json")
    assert response.status_code == 400
    assert "sft_weight" in response.json()["error"]["details"]
    assert not TrainingJob.objects.exists()


def test_sft_weight_reaches_the_trainers_config_for_dpo(ready):
    """A DPO request's sft_weight is stored with the job and written to job.json (the trainer
    validates and applies it: tests/trainer/test_trainer_preference_style.py); 0 writes nothing,
    so the trainer's plain DPO applies."""
    from training.services.bundle import _job_config

    for weight, written in ((0.5, 0.5), (0, None)):
        response = ready.client.post(ready.url("train/dpo"),
                                     {"min_preference_pairs": 1, "sft_weight": weight},
                                     format="json")
        assert response.status_code == 201, response.content
        job = TrainingJob.objects.get(id=response.json()["job_id"])
        assert job.params["sft_weight"] == weight
        assert _job_config(job, None)["train"].get("sft_weight") == written
        TrainingJob.objects.all().delete()


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


def test_kl_to_base_reaches_the_trainers_config_for_sft_only(ready):
    """The request's kl_to_base is stored with the job and written to job.json's train section
    (the trainer validates and applies it: tests/trainer/test_trainer_replay.py)."""
    from training.services.bundle import _job_config

    response = ready.client.post(ready.url("train/lora"),
                                 {**LORA_SMALL, "replay_rows": 20, "kl_to_base": 2.5,
                                  "replay_weight": 0.25},
                                 format="json")
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(id=response.json()["job_id"])
    assert job.params["kl_to_base"] == 2.5 and job.params["replay_weight"] == 0.25
    train = _job_config(job, None)["train"]
    assert train["kl_to_base"] == 2.5 and train["replay_rows"] == 20
    assert train["replay_weight"] == 0.25


def test_a_dpo_jobs_anchors_reach_the_trainers_config_both_or_neither(ready):
    """A DPO request may state replay_rows and kl_to_base: the replay rows are then the KL term's
    anchors, not pairs (the trainer applies it: tests/trainer/test_trainer_replay.py). One
    without the other would do nothing, so it is refused on the missing one and no job is made;
    neither writes nothing to job.json."""
    from training.services.bundle import _job_config

    response = ready.client.post(ready.url("train/dpo"), {"min_preference_pairs": 1,
                                 "replay_rows": 20, "kl_to_base": 2.0}, format="json")
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(id=response.json()["job_id"])
    train = _job_config(job, None)["train"]
    assert (train["replay_rows"], train["kl_to_base"]) == (20, 2.0)
    TrainingJob.objects.all().delete()

    for stated, missing in (({"replay_rows": 20}, "kl_to_base"),
                            ({"replay_rows": 20, "kl_to_base": 0}, "kl_to_base"),
                            ({"kl_to_base": 2.0}, "replay_rows")):
        response = ready.client.post(ready.url("train/dpo"),
                                     {"min_preference_pairs": 1, **stated}, format="json")
        assert response.status_code == 400, response.content
        assert "go together" in str(response.json()["error"]["details"][missing])
    assert not TrainingJob.objects.exists()
    # The dashboard's check (training_params_errors) refuses it the same way.
    assert set(training_params_errors(method="dpo", params={"kl_to_base": 1.0})) == {"replay_rows"}
    assert training_params_errors(method="dpo", params={"kl_to_base": 1.0, "replay_rows": 5}) == {}

    response = ready.client.post(ready.url("train/dpo"), {"min_preference_pairs": 1},
                                 format="json")
    assert response.status_code == 201, response.content
    train = _job_config(TrainingJob.objects.get(), None)["train"]
    assert "replay_rows" not in train and "kl_to_base" not in train


def test_the_operators_precision_reaches_every_jobs_config(ready, settings):
    """settings.TRAINING_PRECISION (env TRAINING_PRECISION): "auto" leaves the choice to the
    trainer on the machine it runs on (job.json says nothing); "fp32" or "bf16" is written to
    every job's train section (the trainer applies it: tests/trainer/test_trainer_precision.py)."""
    from training.services.bundle import _job_config

    response = ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json")
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(id=response.json()["job_id"])
    assert "precision" not in _job_config(job, None)["train"]
    for precision in ("fp32", "bf16"):
        settings.TRAINING_PRECISION = precision
        assert _job_config(job, None)["train"]["precision"] == precision


def test_scope_gate_reaches_the_trainers_config(ready):
    """The request's scope_gate is stored with the job and written to job.json's train section
    (the trainer builds the scope: tests/trainer/test_trainer_scope.py); 0 writes nothing."""
    from training.services.bundle import _job_config

    for path, body in (("train/lora", LORA_SMALL), ("train/dpo", {"min_preference_pairs": 1})):
        for gate, written in ((0.6, 0.6), (0, None)):
            response = ready.client.post(ready.url(path), {**body, "scope_gate": gate},
                                         format="json")
            assert response.status_code == 201, response.content
            job = TrainingJob.objects.get(id=response.json()["job_id"])
            assert job.params["scope_gate"] == gate
            assert _job_config(job, None)["train"].get("scope_gate") == written
            TrainingJob.objects.all().delete()
