"""Defaults per base (issue 14 §5) and bases that cannot train on chats (issue 14 §2).

A base configured with a recipe fills what a request leaves out with the recipe's values and
says so; the request's own values win; a base without one keeps the seed's defaults. A base
whose tokenizer has no chat template is refused when the job is created, not in the worker."""

from __future__ import annotations

import json
import shutil

import pytest

from training.models import TrainingJob
from training.services.recipes import RECIPES

pytestmark = pytest.mark.django_db


@pytest.fixture
def recipe_bases(settings, tmp_path):
    settings.BASE_MODELS = {"seeded": str(tmp_path / "seeded"), "small": str(tmp_path / "small")}
    settings.DEFAULT_BASE_MODEL = "seeded"
    settings.BASE_MODEL_PATH = str(tmp_path / "seeded")
    settings.BASE_MODEL_HF_ID = ""
    settings.BASE_MODEL_RECIPES = {"small": "small_base"}


def _dry(ctx, **body):
    response = ctx.client.post(ctx.url("train/lora"), {"min_feedback_count": 10,
                                                       "dry_run": True, **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_small_base_gets_its_recipe_for_what_the_request_leaves_out(ready, recipe_bases):
    small = _dry(ready, base_model="small")
    expected = RECIPES["small_base"]["sft"]
    assert small["defaults"] == "small_base" and small["notes"]
    assert {k: small["params"][k] for k in expected} == expected

    stated = _dry(ready, base_model="small", learning_rate=2e-4, epochs=3)
    assert stated["params"]["learning_rate"] == 2e-4 and stated["params"]["epochs"] == 3
    assert stated["params"]["batch_size"] == expected["batch_size"]
    preset = _dry(ready, base_model="small", preset="small_corrections")
    assert preset["params"]["epochs"] == 2  # a preset's values win over the recipe's

    seeded = _dry(ready)
    assert seeded["defaults"] == "seed" and seeded["notes"] == []
    assert seeded["params"]["learning_rate"] == 2e-4 and seeded["params"]["epochs"] == 3


def test_a_small_base_gets_dpo_with_the_supervised_term_and_kto_the_seeds_defaults(
        ready, recipe_bases):
    """The small_base recipe sets only DPO's sft_weight beside the seed's DPO values; it sets
    nothing for KTO, so a KTO job says it got the seed's defaults and carries no note."""
    dpo = ready.client.post(ready.url("train/dpo"),
                            {"min_preference_pairs": 1, "base_model": "small", "dry_run": True},
                            format="json").json()
    assert dpo["defaults"] == "small_base" and "sft_weight" in dpo["notes"][0]
    assert dpo["params"]["sft_weight"] == RECIPES["small_base"]["dpo"]["sft_weight"] == 1.0
    assert dpo["params"]["learning_rate"] == 5e-5  # the seed's DPO rate stands
    stated = ready.client.post(ready.url("train/dpo"),
                               {"min_preference_pairs": 1, "base_model": "small",
                                "dry_run": True, "sft_weight": 0}, format="json").json()
    assert stated["params"]["sft_weight"] == 0
    kto = ready.client.post(ready.url("train/kto"),
                            {"min_feedback_count": 1, "base_model": "small", "dry_run": True},
                            format="json").json()
    assert kto["defaults"] == "seed" and kto["notes"] == [] and "sft_weight" not in kto["params"]


def test_the_job_says_which_defaults_it_got(ready, recipe_bases):
    response = ready.client.post(ready.url("train/lora"),
                                 {"min_feedback_count": 10, "base_model": "small"}, format="json")
    assert response.status_code == 201, response.content
    body = ready.client.get(ready.url(f"train/{response.json()['job_id']}")).json()
    assert body["defaults"] == "small_base"
    assert body["params"]["learning_rate"] == RECIPES["small_base"]["sft"]["learning_rate"]


def test_a_base_without_a_chat_template_is_refused_at_creation(ready, settings, tmp_path,
                                                               tiny_base_path):
    plain = tmp_path / "plain-base"
    shutil.copytree(tiny_base_path, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    settings.BASE_MODELS = {**settings.BASE_MODELS, "plain": str(plain)}

    response = ready.client.post(ready.url("train/lora"),
                                 {"min_feedback_count": 10, "base_model": "plain"}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "base_model_not_chat_trainable"
    assert "chat template" in error["message"]
    assert not TrainingJob.objects.exists()

    # The same tokenizer with its template back is accepted.
    response = ready.client.post(ready.url("train/lora"), {"min_feedback_count": 10,
                                 "base_model": "plain", "dry_run": True,
                                 "learning_rate": 1e-3}, format="json")
    assert response.status_code == 400  # still no template: nothing cached wrongly the other way
    shutil.copy(tiny_base_path / "tokenizer_config.json", plain / "tokenizer_config.json")
    if (tiny_base_path / "chat_template.jinja").exists():
        shutil.copy(tiny_base_path / "chat_template.jinja", plain / "chat_template.jinja")
    response = ready.client.post(ready.url("train/lora"), {"min_feedback_count": 10,
                                 "base_model": "plain", "dry_run": True}, format="json")
    assert response.status_code == 200, response.content
