"""DeepSpeed ZeRO-3 in one CPU process (gloo): the same CLI trains and exports a plain adapter."""

from __future__ import annotations

import pytest
from trainer_helpers import (
    REPO,
    events_of,
    greedy_answers,
    job,
    question,
    run_cli,
    trainer_env,
    write_job,
    write_jsonl,
)

from training.trainer.deepspeed_config import deepspeed_config
from training.trainer.manifest import verify_adapter_dir

# lumi.md's ZeRO-3 config for LoRA; the Trainer fills the "auto" values.
ZERO3 = deepspeed_config(stage=3)  # the config the platform generates for LUMI


@pytest.mark.slow
def test_zero3_single_process_trains_an_adapter_that_answers_like_the_plain_run(
    tmp_path, tiny_base, corrections, corrections_files, sft_run
):
    train, eval_path = corrections_files
    config = write_job(tmp_path, job(tmp_path, tiny_base, train, eval_path, deepspeed=ZERO3))
    extensions = REPO / "var" / "torch_extensions"
    extensions.mkdir(parents=True, exist_ok=True)
    env = trainer_env(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29561",
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        TORCH_EXTENSIONS_DIR=str(extensions),  # DeepSpeed's JIT-built ops, reused across runs
        ACCELERATE_USE_DEEPSPEED="true",
    )
    result = run_cli(["--config", str(config)], env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    out = tmp_path / "out"
    (completed,) = events_of(out, "completed")
    assert completed["steps"] == sft_run.completed["steps"]
    assert events_of(out, "started")[0]["parameters"]["deepspeed"] is True
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    verify_adapter_dir(out / "adapter", out / "manifest.json")

    questions = [question(r) for r in corrections]
    with_zero3 = greedy_answers(tiny_base, out / "adapter", questions)
    plain = greedy_answers(tiny_base, sft_run.out / "adapter", questions)
    same = sum(a == b for a, b in zip(with_zero3, plain, strict=True))
    assert same / len(questions) >= 0.9, list(zip(with_zero3, plain, strict=True))[:5]


@pytest.mark.slow
def test_zero3_takes_the_kl_term_with_the_lora_layers_switched_off(tmp_path, tiny_base,
                                                                  corrections):
    """The KL-to-base term (train.kl_to_base) under ZeRO-3, as LUMI runs it: the reference
    forward switches the partitioned model's LoRA layers off and back on. At the first step the
    LoRA layers are zero, so the term is 0; later it is not, and the job completes."""
    rows = [dict(r, anchor=index % 2 == 0) for index, r in enumerate(corrections[:24])]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    params = {"epochs": 2, "learning_rate": 5e-3, "batch_size": 8, "warmup_ratio": 0.0,
              "early_stopping_patience": None, "kl_to_base": 1.0}
    config = write_job(tmp_path, job(tmp_path, tiny_base, train, deepspeed=ZERO3,
                                     train_params=params))
    env = trainer_env(MASTER_ADDR="127.0.0.1", MASTER_PORT="29563", RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1", ACCELERATE_USE_DEEPSPEED="true",
                      TORCH_EXTENSIONS_DIR=str(REPO / "var" / "torch_extensions"))
    result = run_cli(["--config", str(config)], env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    (started,) = events_of(out, "started")
    assert "12 anchor row(s) kept close" in " ".join(started["notes"])
    kl = [s.get("kl_to_base") for s in events_of(out, "step")]  # absent: a batch without anchors
    assert kl[0] == pytest.approx(0.0, abs=1e-6)
    assert kl[-1] is not None and kl[-1] > 0
    verify_adapter_dir(out / "adapter", out / "manifest.json")
