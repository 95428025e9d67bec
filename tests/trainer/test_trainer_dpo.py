"""DPO on 50 preference pairs: margins rise, pairs end up preferred, only `default` is exported."""

from __future__ import annotations

import pytest
from trainer_helpers import answer, events_of, job, question, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.manifest import verify_adapter_dir
from training.trainer.run import run_job

DPO_TRAIN = {
    "epochs": 8,
    "learning_rate": 1e-3,
    "batch_size": 8,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "beta": 0.1,
    "seed": 0,
    "eval_every": 14,
    "save_every": 28,
    "early_stopping_patience": None,
}


@pytest.fixture(scope="module")
def dpo_files(tmp_path_factory, corrections):
    """Chosen: the store's fact. Rejected: the brush-off a thumbs-down marks as unhelpful."""
    pairs = [
        {
            "id": f"pair-{i}",
            "prompt": question(r),
            "chosen": answer(r),
            "rejected": "Sorry, please check our website for that.",
        }
        for i, r in enumerate(corrections)
    ]
    folder = tmp_path_factory.mktemp("dpo-data")
    return write_jsonl(folder / "train.jsonl", pairs), write_jsonl(
        folder / "eval.jsonl", pairs[::5]
    )


def test_it_raises_reward_margins_until_the_pairs_are_preferred(tmp_path, tiny_base, dpo_files):
    train, eval_path = dpo_files
    config = job(tmp_path, tiny_base, train, eval_path, method="dpo", train_params=DPO_TRAIN)
    run_job(parse_job_config(config))
    out = tmp_path / "out"

    steps = events_of(out, "step")
    assert len(steps) == 56
    first = sum(s["rewards/margins"] for s in steps[:5]) / 5
    last = sum(s["rewards/margins"] for s in steps[-5:]) / 5
    assert last > first + 1.0, (first, last)

    evals = events_of(out, "eval")
    assert evals[-1]["rewards/margins"] > evals[0]["rewards/margins"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies"} <= set(evals[-1])

    (completed,) = events_of(out, "completed")
    print(
        f"margins {first:.2f} -> {last:.2f}; pair accuracy "
        f"{completed['metrics']['train_rewards/accuracies']:.2f}"
    )
    # Preference accuracy of the exported adapter over all 50 training pairs.
    assert completed["metrics"]["train_rewards/accuracies"] > 0.9
    assert completed["metrics"]["train_rewards/margins"] > 1.0
    verify_adapter_dir(out / "adapter", out / "manifest.json")


def test_continued_dpo_from_an_adapter_exports_only_the_default_adapter(
    tmp_path, tiny_base, dpo_files, sft_run
):
    train, _ = dpo_files
    params = {**DPO_TRAIN, "epochs": 1, "save_every": 100}
    config = job(tmp_path, tiny_base, train, None, method="dpo", train_params=params)
    config["init_adapter"] = str(sft_run.out / "adapter")
    run_job(parse_job_config(config))
    adapter = tmp_path / "out" / "adapter"
    # TRL trains against a frozen copy named "ref"; only "default" is the tenant's adapter.
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any(".ref." in key for key in keys)
    (completed,) = events_of(tmp_path / "out", "completed")
    assert completed["steps"] == 7
