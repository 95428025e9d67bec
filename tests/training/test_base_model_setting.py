"""The tenant's `base_model` setting (issue 14 §4): a configured name or null, used by job
creation when a request names no base, served as the tenant's "base", and continuing a version
trained on another base is refused."""

from __future__ import annotations

import pytest

from tests import factories
from tests.training.conftest import LORA_SMALL
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_bases(settings, tmp_path):
    """Two configured bases; `main` is the default (its folder follows BASE_MODEL_PATH)."""
    main, other = tmp_path / "main-base", tmp_path / "other-base"
    settings.BASE_MODELS = {"main": str(main), "other": str(other)}
    settings.DEFAULT_BASE_MODEL = "main"
    settings.BASE_MODEL_PATH = str(main)
    settings.BASE_MODEL_HF_ID = ""
    return main, other


def test_it_picks_a_configured_base_and_refuses_others_naming_the_choices(owner, two_bases):
    assert owner.client.get(owner.url("settings")).json()["base_model"] is None

    response = owner.client.patch(owner.url("settings"), {"base_model": "other"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["base_model"] == "other"

    response = owner.client.patch(owner.url("settings"), {"base_model": "/etc/passwd"},
                                  format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "Choose one of: main, other." in error["details"]["base_model"][0]
    assert owner.client.get(owner.url("settings")).json()["base_model"] == "other"

    response = owner.client.patch(owner.url("settings"), {"base_model": None}, format="json")
    assert response.status_code == 200 and response.json()["base_model"] is None


def test_a_job_trains_on_the_tenants_base_unless_the_request_names_one(ready, two_bases):
    main, other = two_bases
    dry = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                            format="json")
    assert dry.status_code == 200, dry.content
    assert dry.json()["base_model"] == "main"

    assert ready.client.patch(ready.url("settings"), {"base_model": "other"},
                              format="json").status_code == 200
    dry = ready.client.post(ready.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                            format="json")
    assert dry.json()["base_model"] == "other"
    named = ready.client.post(ready.url("train/lora"),
                              {**LORA_SMALL, "dry_run": True, "base_model": "main"},
                              format="json")
    assert named.json()["base_model"] == "main"

    created = ready.client.post(ready.url("train/lora"), LORA_SMALL, format="json")
    assert created.status_code == 201, created.content
    job = TrainingJob.objects.get(pk=created.json()["job_id"])
    assert job.base_model == str(other)
    assert job.params["base_model_spec"] == {"name": "other", "path": str(other)}


def test_continuing_a_version_trained_on_another_base_is_refused(ready, two_bases):
    main, other = two_bases
    factories.adapter_version(ready.tenant, 1, base_model=str(main), storage_prefix="p")
    ok = ready.client.post(ready.url("train/lora"),
                           {**LORA_SMALL, "dry_run": True, "continue_from": "v1"},
                           format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["continue_from"] == "v1"

    response = ready.client.post(ready.url("train/lora"),
                                 {**LORA_SMALL, "continue_from": "v1", "base_model": "other"},
                                 format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "base_model_mismatch"
    assert error["details"]["continue_from"] == [f"v1 uses {main}."]
    assert not TrainingJob.objects.exists()


def test_serving_answers_base_with_the_tenants_base(owner, two_bases):
    from adapters.serving import serving_base_for_tenant

    main, other = two_bases
    assert serving_base_for_tenant(owner.tenant).source == str(main)
    owner.client.patch(owner.url("settings"), {"base_model": "other"}, format="json")
    assert serving_base_for_tenant(owner.tenant).source == str(other)
