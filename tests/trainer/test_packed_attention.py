"""packed_sdpa: attention over a padding-free row, one causal triangle per example, gives what
each example gives alone (on the tiny Llama and on SmolLM2's grouped-query attention), and the
trainer uses it for padding-free SFT only."""

from __future__ import annotations

import pytest
import torch

from training.trainer.attention import NAME, segment_lengths, use_packed_attention

LENGTHS = [7, 1, 23, 12, 40]


def test_segment_lengths_read_where_positions_restart():
    row = torch.tensor([[0, 1, 2, 0, 0, 1, 2, 3]])
    assert segment_lengths(row, 8) == [3, 1, 4]
    assert segment_lengths(torch.arange(8)[None], 8) is None  # one example: nothing to split
    assert segment_lengths(row.expand(2, -1), 8) is None  # padded batches are not one row
    assert segment_lengths(row, 9) is None  # positions that do not describe this row
    assert segment_lengths(None, 8) is None


def _packed_row(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (1, sum(LENGTHS)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    return ids, positions


def _alone(model, ids: torch.Tensor) -> torch.Tensor:
    """Each example's logits from a forward of that example alone, laid end to end."""
    out, start = [], 0
    for length in LENGTHS:
        out.append(model(input_ids=ids[:, start:start + length], use_cache=False).logits)
        start += length
    return torch.cat(out, dim=1)


def _check_equivalence(model) -> None:
    ids, positions = _packed_row(min(model.config.vocab_size, 1000))
    with torch.no_grad():
        alone = _alone(model, ids)
        dense = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"
    assert use_packed_attention(model)
    assert model.config._attn_implementation == NAME
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        # With a cache transformers' SDPA does not read packing from position_ids at all;
        # packed_sdpa still keeps the examples apart.
        packed_cached = model(input_ids=ids, position_ids=positions).logits
        # The same tokens read as one long example: what leaking across examples looks like.
        leaked = model(input_ids=ids, use_cache=False).logits
    # fp32 rounding over SmolLM2's 30 layers reaches ~1e-4 on logits of ~15; leaking moves them
    # by whole units.
    assert (leaked - alone).abs().max() > 1.0
    assert (packed - alone).abs().max() < 1e-3
    assert (packed - dense).abs().max() < 1e-3
    assert (packed_cached - alone).abs().max() < 1e-3


def test_packed_rows_match_each_example_alone_on_the_tiny_llama(tiny_base):
    from training.trainer.modeling import load_base_model

    _check_equivalence(load_base_model(tiny_base).eval())


def test_packed_rows_match_each_example_alone_on_smollm2(real_base_path):
    """SmolLM2-135M: 9 query heads over 3 key/value heads (grouped-query attention)."""
    from training.trainer.modeling import load_base_model

    model = load_base_model(real_base_path).eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    _check_equivalence(model)


def test_gradients_match_the_dense_mask(tiny_base):
    """Training takes the same step: the LoRA-free model's weight gradients under packed_sdpa equal
    those under SDPA's dense block-diagonal mask."""
    from training.trainer.modeling import load_base_model

    grads = {}
    for packed in (False, True):
        model = load_base_model(tiny_base).train()
        model.config.attention_dropout = 0.0
        if packed:
            assert use_packed_attention(model)
        ids, positions = _packed_row(model.config.vocab_size)
        model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss.backward()
        grads[packed] = {n: p.grad.clone() for n, p in model.named_parameters()
                         if "self_attn" in n}
    for name, grad in grads[False].items():
        assert torch.allclose(grads[True][name], grad, atol=1e-5, rtol=1e-4), name


def test_padded_batches_and_generation_are_plain_sdpa(tiny_base):
    """Where there is no packed row (left-padded prompts, generation), packed_sdpa is SDPA with
    the mask transformers built: same greedy replies as before the switch."""
    from training.trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(tiny_base)
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
               for text in ("What is the capital of France?", "Hi")]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def replies():
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=12, do_sample=False)
        return out[:, batch["input_ids"].shape[1]:].tolist()

    before = replies()
    assert use_packed_attention(model)
    assert replies() == before


@pytest.mark.parametrize("padding_free, expected", [(True, NAME), (False, "sdpa")])
def test_the_trainer_uses_it_for_padding_free_sft(tmp_path, tiny_base, monkeypatch,
                                                  padding_free, expected):
    from trainer_helpers import BOX_CODES, events_of, job, write_jsonl

    from training.trainer import attention
    from training.trainer.config import parse_job_config
    from training.trainer.run import run_job

    split = []  # the example lengths of every packed row the attention split
    read = attention._lengths_from_cumulative

    def spy(*args):
        lengths = read(*args)
        split.extend([lengths] if lengths else [])
        return lengths

    monkeypatch.setattr(attention, "_lengths_from_cumulative", spy)

    train = write_jsonl(tmp_path / "train.jsonl", BOX_CODES)
    params = {"epochs": 1, "learning_rate": 2e-3, "batch_size": 4,
              "early_stopping_patience": None}
    run_job(parse_job_config(job(tmp_path, tiny_base, train, train_params=params,
                                 padding_free=padding_free)))
    started = events_of(tmp_path / "out", "started")[0]
    assert started["parameters"]["padding_free"] is padding_free
    assert started["parameters"]["attention"] == expected
    if padding_free:  # 8 rows, batch 4: two steps of 4 examples each, 4 layers
        assert len(split) >= 2 * 4 and all(len(lengths) == 4 for lengths in split)
    else:
        assert split == []
