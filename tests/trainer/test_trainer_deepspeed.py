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
