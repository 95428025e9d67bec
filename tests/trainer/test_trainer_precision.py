"""train.precision: the arithmetic of the forward and backward passes.

"auto" is bf16 autocast on a GPU with bf16 and fp32 elsewhere; "bf16" also asks for it on a CPU
(a CPU with AMX runs bf16 matrix products about 2.5 times as fast as fp32 ones; the weights stay
fp32); "fp32" turns it off. On the tiny base here; what bf16 does to learning and forgetting on
the real base is measured by bench/learning.py (variant replay_kl1_anchor_bf16; README,
"Precision on a CPU": it kept less and was not faster on the recipe, so CPUs stay fp32).
"""

from __future__ import annotations

import json

import pytest
from trainer_helpers import SFT_TRAIN, job, write_jsonl

from training.trainer.config import JobConfigError, parse_job_config
from training.trainer.run import run_job

ROWS = [{"messages": [{"role": "user", "content": f"What is the code of box {i}?"},
                      {"role": "assistant", "content": f"The code of box {i} is K{i}7."}]}
        for i in range(8)]


@pytest.mark.parametrize("value", ["fp16", "BF16", 16, None])
def test_precision_is_validated(tmp_path, tiny_base_path, value):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl",
                 train_params={**SFT_TRAIN, "precision": value})
    with pytest.raises(JobConfigError, match="train.precision must be one of auto, bf16, fp32"):
        parse_job_config(config)


def _train(tmp_path, base, precision: str) -> dict:
    folder = tmp_path / precision
    config = job(folder, base, write_jsonl(folder / "train.jsonl", ROWS),
                 train_params={**SFT_TRAIN, "precision": precision})
    run_job(parse_job_config(config))
    return json.loads((folder / "out" / "manifest.json").read_text())


@pytest.mark.skipif("__import__('torch').cuda.is_available()",
                    reason="the CPU's side of auto and bf16 (a GPU run resolves auto to bf16)")
def test_on_a_cpu_auto_is_fp32_and_bf16_trains_under_autocast(tmp_path, tiny_base_path):
    """The same job three ways: "auto" and "fp32" run the same arithmetic on a CPU (identical
    losses, same seed); "bf16" really changes it (its losses differ, a little), still learns
    (its loss falls as far), and the manifest says what each ran in."""
    runs = {p: _train(tmp_path, tiny_base_path, p) for p in ("auto", "fp32", "bf16")}
    precision = {p: m["metrics"]["precision"] for p, m in runs.items()}
    assert precision == {"auto": "fp32", "fp32": "fp32", "bf16": "bf16"}
    assert {p: m["hyperparameters"]["train"]["precision"] for p, m in runs.items()} == \
        {p: p for p in runs}
    loss = {p: (m["metrics"]["train_loss"], m["metrics"]["last_train_loss"])
            for p, m in runs.items()}
    print(loss)
    assert loss["auto"] == loss["fp32"]
    assert loss["bf16"] != loss["fp32"]
    assert loss["bf16"][1] < 0.5 * loss["bf16"][0]
    assert loss["bf16"][1] == pytest.approx(loss["fp32"][1], rel=0.25)
