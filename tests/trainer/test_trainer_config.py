"""job.json validation: the defaults and presets of the seed, and errors that name the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from trainer_helpers import REPO

from training.trainer.config import PRESETS, load_job_config, parse_job_config
from training.trainer.errors import JobConfigError


def _minimal(tmp_path, **extra):
    (tmp_path / "train.jsonl").write_text("{}\n")
    (tmp_path / "base").mkdir(exist_ok=True)
    return {
        "job_id": "j-1",
        "method": "sft",
        "base_model": {"path": "base"},
        "data": {"train": "train.jsonl"},
        **extra,
    }


def test_it_applies_the_seed_defaults_for_sft_and_dpo(tmp_path):
    sft = parse_job_config(_minimal(tmp_path), base_dir=tmp_path)
    assert (sft.lora.r, sft.lora.alpha) == (16, 32)
    assert (sft.train.epochs, sft.train.learning_rate, sft.train.batch_size) == (3, 2e-4, 4)
    assert (sft.train.warmup_ratio, sft.train.weight_decay) == (0.1, 0.01)
    dpo = parse_job_config(_minimal(tmp_path, method="dpo"), base_dir=tmp_path)
    assert (dpo.train.beta, dpo.train.epochs, dpo.train.learning_rate) == (0.1, 2, 5e-5)
    assert sft.output_dir == str(tmp_path)  # relative paths and defaults resolve against job.json


def test_it_exposes_the_four_presets_of_the_seed():
    assert PRESETS == {
        "small_corrections": {"lora_r": 8, "epochs": 2, "learning_rate": 3e-4},
        "domain_adaptation": {"lora_r": 16, "epochs": 3, "learning_rate": 2e-4},
        "major_behavior_change": {"lora_r": 32, "epochs": 5, "learning_rate": 1e-4},
        "continuous_learning": {"lora_r": 16, "epochs": 1, "learning_rate": 5e-5},
    }


def test_it_lets_explicit_values_override_the_preset(tmp_path):
    raw = _minimal(tmp_path, preset="major_behavior_change", train={"epochs": 7})
    config = parse_job_config(raw, base_dir=tmp_path)
    assert (config.lora.r, config.train.epochs, config.train.learning_rate) == (32, 7, 1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "ppo"}, "method must be one of"),
        ({"train": {"learning_rte": 1e-3}}, "train.learning_rte"),
        ({"train": {"batch_size": 0}}, "train.batch_size must be at least 1"),
        ({"train": {"warmup_ratio": 1.5}}, "train.warmup_ratio must be below 1"),
        ({"train": {"epochs": True}}, "train.epochs must be a number"),
        ({"lora": {"target_modules": []}}, "lora.target_modules"),
        ({"base_model": {"path": "base", "hf_id": "x/y"}}, "exactly one of"),
        ({"preset": "huge"}, "preset must be one of"),
        ({"deepspeed": "zero3"}, "deepspeed must be a JSON object"),
    ],
)
def test_it_rejects_bad_values_naming_the_field(tmp_path, change, message):
    with pytest.raises(JobConfigError) as error:
        parse_job_config(_minimal(tmp_path, **change), base_dir=tmp_path)
    assert message in error.value.reason
    assert error.value.category == "bad_config"


def test_it_reports_broken_json_with_its_position(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"job_id": "x",\n "method": }')
    with pytest.raises(JobConfigError, match="line 2"):
        load_job_config(path)


def test_config_module_stays_import_light():
    # The Django side imports PRESETS from it in every web process: no torch there.
    code = (
        "import sys, training.trainer.config as c; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "print(len(c.PRESETS))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4"


def test_cli_bad_config_exits_nonzero_with_a_failed_event(tmp_path):
    from trainer_helpers import run_cli

    config = _minimal(tmp_path, train={"learning_rte": 0.1}, output_dir="out")
    (tmp_path / "job.json").write_text(json.dumps(config))
    result = run_cli(["--config", str(tmp_path / "job.json")], timeout=120)
    assert result.returncode == 2
    events = [
        json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    ]
    assert [e["type"] for e in events] == ["failed"]
    assert events[0]["category"] == "bad_config"
    assert "train.learning_rte" in events[0]["reason"]
    assert "\n" not in events[0]["reason"]
