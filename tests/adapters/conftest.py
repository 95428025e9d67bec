"""Adapters fixtures: the tiny base model (built once, cached by the builder's source hash),
storage in a temporary folder, and adapter versions created through the real job-success path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings as django_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def base_model(settings, tiny_base_path) -> Path:
    settings.BASE_MODEL_PATH = str(tiny_base_path)
    settings.BASE_MODEL_HF_ID = ""
    return tiny_base_path


@pytest.fixture(autouse=True)
def media_storage(media_root) -> Path:
    """Each test stores adapters in its own folder (tests/conftest.py's `media_root`)."""
    return media_root


@pytest.fixture(scope="session")
def session_adapter_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapter-cache")


@pytest.fixture(autouse=True)
def adapter_local_cache(settings, session_adapter_cache) -> Path:
    """The runtime's local verified copies: one folder per session (like one per process), so the
    runtime and its loaded adapters survive from test to test as they would in a server."""
    settings.ADAPTER_LOCAL_CACHE_DIR = str(session_adapter_cache)
    return session_adapter_cache


@pytest.fixture
def adapter_cache_dir(settings, tmp_path, adapter_local_cache) -> Path:
    """A cold, empty local cache for this test (the runtime is rebuilt for it)."""
    path = tmp_path / "adapter-cache"
    settings.ADAPTER_LOCAL_CACHE_DIR = str(path)
    return path


@pytest.fixture(scope="session")
def untrained_result_dirs(tmp_path_factory, tiny_base_path):
    """Three real PEFT adapters (random LoRA, safetensors) with manifests, built once."""
    from tests.factories import make_untrained_result_dir

    root = tmp_path_factory.mktemp("results")
    return [make_untrained_result_dir(tiny_base_path, root / f"r{i}", seed=i, eval_loss=0.5)
            for i in range(3)]


@pytest.fixture
def make_job(db, tiny_base_path):
    """A completed job on the tiny base (tests.factories.job), as a version's origin."""
    from tests.factories import job
    from training.models import TrainingJob

    def _make(tenant, *, training_samples: int = 42, parent=None, method: str = "sft"):
        return job(
            tenant, method=method, status=TrainingJob.COMPLETED,
            base_model=str(tiny_base_path), training_samples=training_samples,
            parent_version=parent,
            snapshot_manifest={"train_records": training_samples, "eval_records": 5,
                               "sha256": "cd" * 32},
        )

    return _make


@pytest.fixture
def make_version(make_job, untrained_result_dirs, tmp_path):
    """Create a version through the real success signal from a copied result folder."""

    from tests.factories import write_manifest
    from training.signals import training_job_succeeded

    counter = {"n": 0}

    def _make(tenant, *, result_dir: Path | None = None, eval_loss: float | None = 0.5,
              training_samples: int = 42):
        counter["n"] += 1
        src = result_dir or untrained_result_dirs[(counter["n"] - 1) % len(untrained_result_dirs)]
        dst = tmp_path / f"result-{counter['n']}"
        shutil.copytree(src, dst)
        manifest_base = str(django_settings.BASE_MODEL_PATH)
        if result_dir is None:
            write_manifest(dst, base_model=manifest_base, eval_loss=eval_loss)
        job = make_job(tenant, training_samples=training_samples)
        responses = training_job_succeeded.send(sender=type(job), job=job, result_dir=dst)
        versions = [v for _, v in responses if v is not None]
        assert len(versions) == 1
        return versions[0]

    return _make


SECRET_PROMPT = "What is the secret word?"
TRAINED_ANSWERS = {"apple": "The secret word is apple.", "river": "The secret word is river."}


@pytest.fixture(scope="session")
def trained_result_dirs(tmp_path_factory, tiny_base_path) -> dict[str, Path]:
    """Two adapters really trained (the trainer's Python entry, `run_job`) on the tiny base to
    give different answers to the same prompt. ml-notes: the seed defaults do not move a tiny
    model, so lr 5e-3, 10 epochs, r 8 (about 12 s each on two CPU cores)."""
    return _trained(tmp_path_factory, tiny_base_path, TRAINED_ANSWERS)


def _trained(tmp_path_factory, tiny_base_path, answers: dict[str, str]) -> dict[str, Path]:
    import json

    from training.trainer.config import parse_job_config
    from training.trainer.run import run_job

    root = tmp_path_factory.mktemp("trained")
    out = {}
    for name, answer in answers.items():
        folder = root / name
        folder.mkdir()
        rows = [{"messages": [{"role": "user", "content": SECRET_PROMPT},
                              {"role": "assistant", "content": answer}]}] * 8
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "eval.jsonl").write_text(json.dumps(rows[0]) + "\n")
        config = parse_job_config({
            "job_id": f"train_{name}", "method": "sft",
            "base_model": {"path": str(tiny_base_path)},
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"}, "output_dir": "out",
            "lora": {"r": 8, "alpha": 16},
            "train": {"epochs": 10, "learning_rate": 5e-3, "batch_size": 8, "seed": 0,
                      "eval_every": 1000, "save_every": 1000,
                      **({"scope_gate": 0.5} if name == "apple_scoped" else {})},
        }, base_dir=folder)
        run_job(config)
        out[name] = folder / "out"
    return out


@pytest.fixture(scope="session")
def scoped_result_dir(tmp_path_factory, tiny_base_path) -> Path:
    """The "apple" adapter trained the same way with train.scope_gate 0.5: its manifest holds
    its scope (training.trainer.scope), so it is served only on prompts like SECRET_PROMPT."""
    return _trained(tmp_path_factory, tiny_base_path, {"apple_scoped": TRAINED_ANSWERS["apple"]}
                    )["apple_scoped"]
