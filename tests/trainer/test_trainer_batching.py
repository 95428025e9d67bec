"""Batching: padding-free batches give the padded batches' loss; weights and anchor marks follow
their examples."""

from __future__ import annotations

import json

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from training.trainer.data import read_jsonl
from training.trainer.errors import DataError
from training.trainer.trainers import META_PREFIX, MeteredCollator

EXAMPLES = [
    {"input_ids": [5, 6, 7, 8], "labels": [-100, -100, 7, 8], "weight": 2.0},
    {"input_ids": [9, 10], "labels": [-100, 10], "weight": 0.5},
]


def _collate(padding_free: bool) -> dict:
    inner = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
    return MeteredCollator(inner, weights=True)([dict(e) for e in EXAMPLES])


def test_padding_free_batches_are_all_real_tokens_with_per_example_weights():
    batch = _collate(padding_free=True)
    assert batch["input_ids"].shape == (1, 6)
    assert batch[META_PREFIX + "counts"].tolist() == [2, 6, 6]  # samples, real, computed
    assert batch[META_PREFIX + "token_weights"].tolist() == [[2.0] * 4 + [0.5] * 2]


def test_padded_batches_count_padding_as_computed_not_real():
    batch = _collate(padding_free=False)
    assert batch["input_ids"].shape == (2, 4)
    assert batch[META_PREFIX + "counts"].tolist() == [2, 6, 8]
    assert batch[META_PREFIX + "token_weights"].tolist() == [[2.0] * 4, [0.5, 0.5, 0.0, 0.0]]


def test_anchor_marks_cover_every_token_of_their_examples_only():
    """The KL-to-base term's mask (train.kl_to_base): prompt and answer tokens of anchor rows."""
    examples = [{**EXAMPLES[0], "anchor": True}, {**EXAMPLES[1], "anchor": False}]
    for padding_free, expected in ((True, [[1.0] * 4 + [0.0] * 2]),
                                   (False, [[1.0] * 4, [0.0] * 4])):
        inner = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
        batch = MeteredCollator(inner, weights=False, anchors=True)([dict(e) for e in examples])
        assert batch[META_PREFIX + "anchor_mask"].tolist() == expected
        assert META_PREFIX + "token_weights" not in batch


def test_an_anchor_mark_must_be_a_boolean(tmp_path):
    line = {"messages": [{"role": "user", "content": "Hi?"},
                         {"role": "assistant", "content": "Hello."}], "anchor": "yes"}
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(DataError, match='line 1: "anchor" must be true or false'):
        read_jsonl(path, "sft")


def test_padding_free_loss_equals_padded_loss_on_the_tiny_llama(tiny_base):
    from training.trainer.modeling import load_base_model

    model = load_base_model(tiny_base).eval()
    losses = {}
    for padding_free in (True, False):
        batch = _collate(padding_free)
        inputs = {k: v for k, v in batch.items() if not k.startswith(META_PREFIX)}
        inputs = {
            k: v
            for k, v in inputs.items()
            if k in ("input_ids", "labels", "attention_mask", "position_ids")
        }
        with torch.no_grad():
            # use_cache=False as in training (TRL sets it): with a cache, transformers does not
            # derive the packed-sequence mask from position_ids.
            losses[padding_free] = model(**inputs, use_cache=False).loss.item()
    # Equal only if the packed sequences cannot attend to each other (block-diagonal mask from
    # position_ids, which transformers builds for sdpa/eager too, not only FlashAttention).
    assert abs(losses[True] - losses[False]) < 1e-5, losses
