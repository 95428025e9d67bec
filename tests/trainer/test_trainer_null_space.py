"""train.anchor_null_space: a new adapter's update kept out of the input directions the anchor
(replay) rows use, at every LoRA layer (training.trainer.trainers.AnchorNullSpace).

These tests pin the mechanics: the projectors remove all but the unprotected share of the anchors'
inputs, a job projects before training and after every step, says so, and on the real base leaves
the anchor rows where they were while its corrections still train. What it does to learning and
forgetting on questions never trained is measured by bench/learning.py (README, "Defaults on a
real base").
"""

from __future__ import annotations

import json

import pytest
from test_trainer_replay import _replay_kls
from trainer_helpers import BOX_CODES, events_of, job, new_then_continued, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.errors import JobConfigError


@pytest.mark.parametrize("method,value,message", [
    ("dpo", 0.99, "applies to sft only"),
    ("kto", 0.99, "applies to sft only"),
    ("sft", 1.0, "below 1"),
    ("sft", -0.1, "at least 0"),
    ("sft", "most", "must be a number"),
])
def test_anchor_null_space_is_validated(tmp_path, tiny_base_path, method, value, message):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl", method=method,
                 train_params={"anchor_null_space": value, "batch_size": 4})
    with pytest.raises(JobConfigError, match=message):
        parse_job_config(config)


def test_anchor_null_space_is_refused_under_deepspeed(tmp_path, tiny_base_path):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl",
                 train_params={"anchor_null_space": 0.99})
    config["deepspeed"] = {"zero_optimization": {"stage": 3}}
    with pytest.raises(JobConfigError, match="does not run under deepspeed"):
        parse_job_config(config)


def test_the_projectors_remove_the_protected_share_of_the_anchors_inputs(tiny_base_path):
    """On every LoRA layer: P is a symmetric idempotent projector, and what it leaves of the
    anchor rows' own inputs is at most the unprotected share of their energy (1 - keep)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.trainer.modeling import load_base_model, load_tokenizer
    from training.trainer.trainers import _lora_layers, anchor_projectors

    tokenizer = load_tokenizer(str(tiny_base_path))
    model = get_peft_model(load_base_model(str(tiny_base_path)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    rows = [tokenizer(f"The parcel for shelf {i} goes to room {i * 3}.")["input_ids"]
            for i in range(12)]
    keep = 0.99
    projectors, summary = anchor_projectors(model, rows, keep=keep,
                                            pad_id=tokenizer.pad_token_id, batch_size=5)
    layers = dict(_lora_layers(model))
    assert set(projectors) == set(layers) and summary["layers"] == len(layers)
    assert 0 < summary["protected_dims_mean"] < 1

    inputs: dict[str, list] = {}
    handles = [m.register_forward_hook(lambda m, i, o, n=n: inputs.setdefault(n, []).append(
        i[0][0].detach())) for n, m in layers.items()]
    with torch.no_grad(), model.disable_adapter():
        for row in rows:
            model(input_ids=torch.tensor([row]))
    for handle in handles:
        handle.remove()
    for name, projector in projectors.items():
        assert torch.allclose(projector, projector.T, atol=1e-5)
        assert torch.allclose(projector @ projector, projector, atol=1e-4)
        x = torch.cat(inputs[name])
        left = float((x @ projector).norm() ** 2 / x.norm() ** 2)
        assert left <= (1 - keep) + 1e-3, (name, left)


def test_a_job_leaves_its_anchor_rows_as_they_were_and_still_trains(tmp_path, real_base_path):
    """Two jobs on the real base, the same corrections, replay rows (anchors only: replay_weight
    1e-6, no KL term) and seed, the second with anchor_null_space 0.999. The second's adapter
    changes the model's next-token distributions on the replay rows far less, and its
    corrections still train (their loss falls as in the first)."""
    from training.trainer.run import run_job

    train = write_jsonl(tmp_path / "train.jsonl", BOX_CODES)
    params = {"epochs": 3, "learning_rate": 2e-3, "batch_size": 8, "replay_rows": 8,
              "replay_weight": 1e-6, "early_stopping_patience": None, "warmup_ratio": 0.0,
              "weight_decay": 0.0}
    runs = []
    for extra in ({}, {"anchor_null_space": 0.999}):
        folder = tmp_path / ("projected" if extra else "plain")
        run_job(parse_job_config(job(folder, real_base_path, train,
                                     train_params={**params, **extra})))
        (started,) = events_of(folder / "out", "started")
        steps = events_of(folder / "out", "step")
        manifest = json.loads((folder / "out" / "manifest.json").read_text())
        runs.append({"notes": started["notes"], "losses": [s["loss"] for s in steps],
                     "metrics": manifest["metrics"], "adapter": folder / "out" / "adapter"})
    plain, projected = runs
    assert any("kept out of the input directions that carry 0.999 of the 8 anchor" in n
               for n in projected["notes"])
    assert not any("input directions" in n for n in plain["notes"])
    assert projected["metrics"]["anchor_null_space"]["layers"] == 30 * 7
    assert "anchor_null_space" not in plain["metrics"]

    kl_plain, kl_projected = _replay_kls(real_base_path, plain["adapter"], projected["adapter"])
    print(f"KL(before || adapter) per replay token: {kl_plain:.4f} plain, {kl_projected:.4f} "
          f"projected; losses plain {plain['losses'][0]:.3f} -> {plain['losses'][-1]:.3f}, "
          f"projected {projected['losses'][0]:.3f} -> {projected['losses'][-1]:.3f}; "
          f"{projected['metrics']['anchor_null_space']}")
    assert kl_projected < 0.25 * kl_plain
    assert projected["losses"][-1] < 0.5 * projected["losses"][0]


def test_a_job_that_continues_an_adapter_is_not_projected_and_says_so(tmp_path, tiny_base_path):
    """The projection assumes the adapter starts at zero (B = 0): an init_adapter's own update
    is not in that subspace, so a job that continues one skips it, with a note, and trains."""
    first, second = new_then_continued(tmp_path, tiny_base_path, {"anchor_null_space": 0.99})
    (started,) = events_of(first, "started")
    assert any("kept out of the input directions that carry 0.99 of the 4 anchor" in n
               for n in started["notes"])

    (started,) = events_of(second, "started")
    assert any("applies to a new adapter" in n for n in started["notes"])
    manifest = json.loads((second / "manifest.json").read_text())
    assert "anchor_null_space" not in manifest["metrics"]
    assert manifest["metrics"]["global_step"] > 0
