"""Which base model serves what: the BASE_MODELS setting's parser and the resolution of what a
version records (a configured name, a folder, a hub id) into the base the runtime loads."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from adapters.runtime import BaseRef, base_ref_resolve
from synapsex_site.env import env_mapping


def test_base_models_parse_as_ordered_name_path_pairs(monkeypatch):
    monkeypatch.setenv("BASE_MODELS", " smollm2=/models/a ; qwen=/models/b;")
    assert list(env_mapping("BASE_MODELS", {}).items()) == [("smollm2", "/models/a"),
                                                            ("qwen", "/models/b")]
    monkeypatch.delenv("BASE_MODELS")
    assert env_mapping("BASE_MODELS", {"tiny": "/t"}) == {"tiny": "/t"}


@pytest.mark.parametrize("raw", ["smollm2", "=/models/a", "smollm2=", "a=/x;a=/y"])
def test_a_malformed_base_models_value_stops_the_start(monkeypatch, raw):
    monkeypatch.setenv("BASE_MODELS", raw)
    with pytest.raises(ImproperlyConfigured, match="BASE_MODELS"):
        env_mapping("BASE_MODELS", {})


def test_recorded_labels_resolve_to_the_configured_folders(settings, tmp_path):
    settings.BASE_MODELS = {"smollm2-135m-instruct": "/models/smollm2", "tiny-base": "/models/t"}
    settings.DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
    settings.BASE_MODEL_PATH = str(tmp_path / "override")  # replaces the default entry's folder
    settings.BASE_MODEL_HF_ID = ""

    assert base_ref_resolve("tiny-base") == BaseRef("/models/t")
    assert base_ref_resolve("smollm2-135m-instruct") == BaseRef(str(tmp_path / "override"))
    assert base_ref_resolve("") == base_ref_resolve("base") == BaseRef(str(tmp_path / "override"))
    assert base_ref_resolve("/elsewhere/model") == BaseRef("/elsewhere/model")
    assert base_ref_resolve("org/model", revision="abc123") == BaseRef("org/model", "abc123")


def test_the_default_hub_model_keeps_its_revision(settings):
    settings.BASE_MODEL_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
    settings.BASE_MODEL_REVISION = "12fd25f"

    assert base_ref_resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == BaseRef(
        "HuggingFaceTB/SmolLM2-135M-Instruct", "12fd25f")
    assert base_ref_resolve(None).key == "HuggingFaceTB/SmolLM2-135M-Instruct@12fd25f"
